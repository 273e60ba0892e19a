"""Synaptic Intelligence (Zenke, Poole & Ganguli, ICML 2017), as FACIL's `path_integral.py` runs it.

    L = CE(h_t(f(x)), y) + lamb * sum_i Omega_i (theta_i - theta*_i)^2,
    Omega_i <- Omega_i + w_i / ((theta_i - theta*_i)^2 + xi)    after each task (Eq. 5),

over the backbone's parameters, with w the path integral of the unregularised loss along the
task's training trajectory (Eq. 3, `lifelong.importance.PathIntegral`) and theta* the parameters at
the end of the previous task. Omega, w and theta* are buffers; under DDP every rank sees the same
(all-reduced) gradients and parameters, so all three are identical on every rank.
"""
from __future__ import annotations

import torch

from lifelong.data.scenario import Task
from lifelong.importance import ParameterBuffers, PathIntegral, quadratic_penalty
from lifelong.methods.base import ContinualMethod


class SI(ContinualMethod):
    # search=continual decays lamb from its strongest setting (FACIL gridsearch_config.py 'path_integral': lamb [10])
    stability_key, stability_start = "lamb", 10.0

    def __init__(self, *args, lamb: float = 0.1, damping: float = 0.1, **kwargs):
        super().__init__(*args, **kwargs)
        self.lamb = lamb  # FACIL path_integral.py default 0.1: the trade-off c of Eq. 4 ("1e-3 < c < 0.1")
        self.damping = damping  # FACIL default 0.1: xi of Eq. 5, "set to 0.1 in the MNIST case"
        backbone = self.net.backbone
        self.importance = ParameterBuffers(backbone)  # Omega
        self.anchor = ParameterBuffers(backbone, copy=True)  # theta*: the initial parameters before task 0
        self.path = PathIntegral(backbone)  # w of the current task

    def penalty(self) -> torch.Tensor:
        return quadratic_penalty(self.net.backbone, self.importance, self.anchor)

    def penalty_grad(self, name: str, p: torch.Tensor) -> torch.Tensor:
        return 2 * self.lamb * self.importance[name] * (p.detach() - self.anchor[name])

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = super().loss_terms(x, y)
        if self.task.id > 0:  # FACIL: the surrogate loss from the second task on (Omega is zero before)
            terms["si"] = self.lamb * self.penalty()
        return terms

    def on_before_optimizer_step(self, optimizer) -> None:
        self.path.record(self.net.backbone, self.penalty_grad if self.task.id > 0 else None)

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        self.path.accumulate(self.net.backbone)

    @torch.no_grad()
    def end_task(self, task: Task, data) -> None:
        super().end_task(task, data)
        for name, p in self.net.backbone.named_parameters():
            delta = p.detach() - self.anchor[name]
            self.importance[name].add_(self.path.w[name] / (delta ** 2 + self.damping))
        self.path.w.zero_()
        self.anchor.copy_from(self.net.backbone)
