"""Memory Aware Synapses (Aljundi et al., ECCV 2018), global MAS as FACIL's `mas.py` runs it.

    L = CE(h_t(f(x)), y) + lamb / 2 * sum_i Omega_i (theta_i - theta*_i)^2,
    Omega_new_i = 1/N sum_x | d ||F(x)||_2 / d theta_i |   (Eq. 2, on the task's training data)

over the backbone's parameters, with F(x) the logits of every head so far (no labels needed) and
theta* the parameters at the end of the previous task. Importances merge across tasks as
Omega <- alpha * Omega_old + (1 - alpha) * Omega_new (FACIL's merge rule; -1 weighs by classes).
As in FACIL, each batch contributes |gradient of the batch-mean norm| x batch size, and the norm
is not squared. Deviation (as our EWC): the pass runs in eval mode on un-augmented images, so it
leaves BatchNorm statistics alone; FACIL runs it in train mode.
"""
from __future__ import annotations

import torch

from lifelong.data.scenario import Task
from lifelong.importance import ParameterBuffers, gradient_statistic, quadratic_penalty
from lifelong.methods.base import ContinualMethod


class MAS(ContinualMethod):
    # search=continual decays lamb from its strongest setting (FACIL gridsearch_config.py 'mas': lamb [400])
    stability_key, stability_start = "lamb", 400.0

    def __init__(self, *args, lamb: float = 1.0, alpha: float = 0.5, num_samples: int = -1, **kwargs):
        super().__init__(*args, **kwargs)
        self.lamb = lamb  # FACIL mas.py default 1 ("MAS.ipynb block [4]: lambda set to 1", Eq. 3)
        self.alpha = alpha  # FACIL default 0.5: "by default it is a 50-50 fusion" of old and new Omega
        self.num_samples = num_samples  # FACIL fi_num_samples default -1: every training sample
        self.importance = ParameterBuffers(self.net.backbone)
        self.anchor = ParameterBuffers(self.net.backbone, copy=True)

    def penalty(self) -> torch.Tensor:
        return quadratic_penalty(self.net.backbone, self.importance, self.anchor)

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = super().loss_terms(x, y)
        if self.task.id > 0:
            terms["mas"] = self.lamb / 2 * self.penalty()
        return terms

    def output_norm(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Page 6: "the gradients of the squared L2-norm of the learned function output" (FACIL: the norm)."""
        return torch.linalg.vector_norm(self.net(x), dim=1).mean()

    @torch.no_grad()
    def end_task(self, task: Task, data) -> None:
        super().end_task(task, data)
        self.anchor.copy_from(self.net.backbone)
        new = gradient_statistic(self, self.net.backbone, data, self.output_norm, torch.abs, self.num_samples)
        alpha = task.offset / (task.offset + task.n_classes) if self.alpha == -1 else self.alpha
        for name in self.importance.names:
            self.importance[name].copy_(alpha * self.importance[name] + (1 - alpha) * new[name])
