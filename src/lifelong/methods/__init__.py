"""Continual-learning methods: one LightningModule subclass per file, each readable next to its paper."""

from lifelong.methods.base import ContinualMethod, Phase

__all__ = ["ContinualMethod", "Phase"]
