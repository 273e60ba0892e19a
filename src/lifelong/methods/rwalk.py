"""Riemannian Walk (Chaudhry et al., ECCV 2018), as FACIL's `r_walk.py` runs it.

    L = CE(h_t(f(x)), y) + lamb * sum_i (F_i + S_i) (theta_i - theta*_i)^2        (Eq. 9)

over the backbone's parameters. F is the empirical Fisher merged across tasks as in EWC,
F <- alpha * F_old + (1 - alpha) * F_new (the "online Fisher", Eq. 10). S are path-integral
scores: during the task w accumulates -g * delta theta (as SI), and after it

    s = relu(w / (F * (theta - theta*)^2 + xi)),    S <- (S_old + s) / 2,

"negative scores are set to zero" and averaging keeps the regulariser from getting rigid (p. 7-8).
FACIL runs RWalk without exemplars by default, as here. Deviations: the Fisher pass runs in eval
mode (as our EWC), and w uses the gradient of the training cross-entropy (`ce_scope`), where FACIL's
separate backward uses the CE over every head.
"""
from __future__ import annotations

import torch

from lifelong.data.scenario import Task
from lifelong.importance import ParameterBuffers, PathIntegral
from lifelong.methods.base import ContinualMethod
from lifelong.methods.ewc import EWC


class RWalk(EWC):
    # search=continual decays lamb from its strongest setting (FACIL gridsearch_config.py 'r_walk': lamb [20])
    stability_key, stability_start = "lamb", 20.0

    def __init__(self, *args, lamb: float = 1.0, alpha: float = 0.5, damping: float = 0.1,
                 sampling: str = "max_pred", num_samples: int = -1, **kwargs):
        # FACIL r_walk.py defaults: lamb 1 (Eq. 5 and 8: "lambda being less sensitive to the number
        # of tasks"), alpha 0.5 (50-50 Fisher fusion), damping 0.1 ("as in Path Integral"),
        # fim_sampling_type max_pred, fim_num_samples -1 (every sample).
        super().__init__(*args, lamb=lamb, alpha=alpha, sampling=sampling, num_samples=num_samples, **kwargs)
        self.damping = damping
        self.scores = ParameterBuffers(self.net.backbone)  # S
        self.path = PathIntegral(self.net.backbone)  # w of the current task

    def penalty(self) -> torch.Tensor:
        total = [((self.fisher[n] + self.scores[n]) * (p - self.anchor[n]) ** 2).sum()
                 for n, p in self.net.backbone.named_parameters() if p.requires_grad]
        return torch.stack(total).sum()

    def penalty_grad(self, name: str, p: torch.Tensor) -> torch.Tensor:
        return 2 * self.lamb * (self.fisher[name] + self.scores[name]) * (p.detach() - self.anchor[name])

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = ContinualMethod.loss_terms(self, x, y)  # CE; the penalty below replaces EWC's
        if self.task.id > 0:
            terms["rwalk"] = self.lamb * self.penalty()
        return terms

    def on_before_optimizer_step(self, optimizer) -> None:
        self.path.record(self.net.backbone, self.penalty_grad if self.task.id > 0 else None)

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        self.path.accumulate(self.net.backbone)

    @torch.no_grad()
    def end_task(self, task: Task, data) -> None:
        ContinualMethod.end_task(self, task, data)
        self.merge_fisher(task, self.fisher_diagonal(data))  # Eq. 10 first: the scores use the new F
        for name, p in self.net.backbone.named_parameters():
            delta = p.detach() - self.anchor[name]
            score = torch.relu(self.path.w[name] / (self.fisher[name] * delta ** 2 + self.damping))
            self.scores[name].copy_((self.scores[name] + score) / 2)
        self.path.w.zero_()
        self.anchor.copy_from(self.net.backbone)
        self.has_fisher.fill_(True)

