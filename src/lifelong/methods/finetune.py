"""Fine-tuning: train on each new task with nothing to protect the old ones (the lower bound).

FACIL `src/approach/finetuning.py`. The objective is the base class's cross-entropy; with the
default `ce_scope="current"` only the current head is in the softmax (FACIL `all_outputs=False`).
"""
from lifelong.methods.base import ContinualMethod


class Finetune(ContinualMethod):
    """L = CE(h_t(f(x)), y) on the current task's data."""
