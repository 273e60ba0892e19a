"""DeepInversion as the synthetic-replay baseline of ABD (Smith et al., ICCV 2021, Table 1): the
official code's `DeepInversionGenBN` (`learners/datafree.py` L165-199), a generator trained by
model inversion (Yin et al., CVPR 2020) replayed with logit distillation.

For task t > 0, with a real batch (x, y), a synthetic batch x' = G(z) and the frozen previous model
f* over its n_old classes:

    L = CE(f(x), y) + mu KD_T(f(x)[:n_old], f*(x)) + mu KD_T(f(x'), [softmax(f*(x') / T), 0])

CE over every seen class on the real half only; KD_T is the soft cross-entropy at temperature T
without the T^2 factor (`loss_fn_kd`, `learners/default.py` L401-421), on real images over the
old classes and on synthetic images over every seen class against the old model's softened
prediction padded with zeros for the new classes. The generator is trained exactly as ABD's
(`lifelong.inversion`), in a "synthesis" phase at the beginning of each task after the first.

Deviation, as for ABD: per-task heads, so logits exist only for seen classes (the official
100-way head is sliced to the seen classes here too, so this changes nothing for this method).
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from lifelong.data.scenario import Task
from lifelong.inversion import build_synthesizer
from lifelong.losses import distillation
from lifelong.methods.base import ContinualMethod, Phase


class DeepInversion(ContinualMethod):
    keeps_old_model = True
    class_incremental_only = True  # old-vs-new class balancing and synthetic images of old classes

    def __init__(self, backbone: nn.Module, optimizer, scheduler=None, epochs: int = 1, ce_scope: str = "seen", *,
                 mu: float = 1.0, T: float = 2.0, synthetic_batch_size: int | None = None, **synthesis):
        # ce_scope "seen": the official CE is over the seen-class slice of the head (`forward`, default.py L353).
        super().__init__(backbone, optimizer, scheduler, epochs, ce_scope)
        self.mu = mu  # `--mu 1` for DeepInv in experiments/cifar100-*.sh
        self.T = T  # `--temp` default 2.0 (run_dfcil.py L65), `self.DTemp`
        # Official: as many synthetic images as real ones (datafree.py L90); None = that.
        self.synthetic_batch_size = synthetic_batch_size
        self.synthesizer = build_synthesizer(**synthesis)

    @property
    def synthesizing(self) -> bool:
        return self.phase is not None and self.phase.name == "synthesis"

    def phases(self, task: Task) -> list[Phase]:
        """Before training on task t > 0: invert the frozen model of task t - 1."""
        phases = super().phases(task)
        if self.old_net is not None and self.synthesizer.iters > 0:
            phases.insert(0, self.synthesizer.phase())
        return phases

    def frozen_modules(self) -> Iterator[nn.Module]:
        yield from super().frozen_modules()
        if self.synthesizing:
            yield self.net
        else:
            yield self.synthesizer

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.synthesizing:
            return self.synthesizer.loss_terms(self.old_net)
        if self.old_net is None:
            return {"ce": self.cross_entropy(self.net(x), y)}
        n_real, n_old = len(x), self.task.offset
        x_syn = self.synthesizer.sample(self.synthetic_batch_size or n_real)
        with torch.no_grad():
            old_real, old_syn = self.old_net(x), self.old_net(x_syn)
        logits = self.net(torch.cat([x, x_syn]))  # one forward: BatchNorm statistics mix real and synthetic
        # Zero-padded soft targets: only the old classes' columns of the student's log-softmax count.
        soft_targets = F.softmax(old_syn / self.T, dim=1)
        student = F.log_softmax(logits[n_real:] / self.T, dim=1)[:, :n_old]
        return {
            "ce": self.cross_entropy(logits[:n_real], y),
            "kd_real": self.mu * distillation(logits[:n_real, :n_old], old_real, self.T),
            "kd_synthetic": self.mu * -(soft_targets * student).sum(1).mean(),
        }

    def extra_results(self) -> dict:
        return {"generator_parameters": sum(p.numel() for p in self.synthesizer.generator.parameters())}
