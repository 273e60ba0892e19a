"""Elastic Weight Consolidation (Kirkpatrick et al., PNAS 2017), as FACIL implements it, and its
online variant (Schwarz et al., ICML 2018, "Progress & Compress", Sec. 2.4, Eq. 8).

    L = CE(h_t(f(x)), y) + lamb / 2 * sum_i F_i (theta_i - theta*_i)^2

over the backbone's parameters, with F the diagonal empirical Fisher and theta* the parameters at
the end of the previous task. EWC merges the Fisher across tasks as
F <- alpha * F_old + (1 - alpha) * F_new (FACIL `src/approach/ewc.py`); online EWC keeps one running
Fisher F <- gamma * F_old + F_new (Schwarz et al. Eq. 8).

Deviation: FACIL computes the Fisher with the model in train mode on augmented batches, which also
updates BatchNorm running statistics as a side effect; we use eval mode and un-augmented images
so that computing the Fisher changes nothing.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from lifelong.data.scenario import Task
from lifelong.errors import ConfigError
from lifelong.importance import ParameterBuffers, gradient_statistic, quadratic_penalty
from lifelong.methods.base import ContinualMethod

SAMPLING = ("true", "max_pred", "multinomial")


class EWC(ContinualMethod):
    # search=continual decays lamb from its strongest setting (FACIL gridsearch_config.py 'ewc': lamb [10000])
    stability_key, stability_start = "lamb", 10000.0

    def __init__(self, *args, lamb: float = 5000.0, alpha: float = 0.5, sampling: str = "max_pred",
                 num_samples: int = -1, **kwargs):
        super().__init__(*args, **kwargs)
        if sampling not in SAMPLING:
            raise ConfigError(f"method.sampling={sampling!r} is unknown; valid choices: {list(SAMPLING)}")
        self.lamb = lamb  # FACIL ewc.py default 5000 ("forgetting-intransigence trade-off")
        self.alpha = alpha  # FACIL default 0.5: weight of the old Fisher when merging (-1: by classes)
        self.sampling = sampling  # FACIL default "max_pred": labels from the model's own argmax
        self.num_samples = num_samples  # FACIL default -1: every training sample
        # Buffers so that checkpoints carry them; shaped like the backbone's parameters.
        self.fisher = ParameterBuffers(self.net.backbone)
        self.anchor = ParameterBuffers(self.net.backbone, copy=True)
        self.register_buffer("has_fisher", torch.tensor(False))

    def penalty(self) -> torch.Tensor:
        return quadratic_penalty(self.net.backbone, self.fisher, self.anchor)

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = super().loss_terms(x, y)
        if bool(self.has_fisher):
            terms["ewc"] = self.lamb / 2 * self.penalty()
        return terms

    def fisher_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over every head against the `sampling` labels (FACIL `compute_fisher_matrix_diag`)."""
        logits = self.net(x)
        if self.sampling == "true":
            target = y
        elif self.sampling == "max_pred":
            target = logits.argmax(1)
        else:
            target = torch.multinomial(F.softmax(logits, 1), 1).flatten()
        return F.cross_entropy(logits, target)

    def fisher_diagonal(self, data) -> dict[str, torch.Tensor]:
        # FACIL squares the gradient of each training-size batch's mean loss, times the batch size.
        return gradient_statistic(self, self.net.backbone, data, self.fisher_loss, lambda g: g ** 2, self.num_samples)

    def merge_alpha(self, task: Task) -> float:
        if self.alpha == -1:  # FACIL: weight old and new Fisher by their share of the classes
            return task.offset / (task.offset + task.n_classes)
        return self.alpha

    @torch.no_grad()
    def merge_fisher(self, task: Task, new: dict[str, torch.Tensor]) -> None:
        alpha = self.merge_alpha(task)
        for name in self.fisher.names:  # the old Fisher is zero before the first task, as in FACIL
            self.fisher[name].copy_(alpha * self.fisher[name] + (1 - alpha) * new[name])

    def end_task(self, task: Task, data) -> None:
        super().end_task(task, data)
        self.merge_fisher(task, self.fisher_diagonal(data))
        self.anchor.copy_from(self.net.backbone)
        self.has_fisher.fill_(True)


class OnlineEWC(EWC):
    """Online EWC: F <- gamma * F + F_new, theta* <- the parameters after the latest task."""

    def __init__(self, *args, gamma: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        if not 0 <= gamma <= 1:
            raise ConfigError(f"method.gamma={gamma} must lie in [0, 1] (1: no decay of the old Fisher)")
        # Schwarz et al. Eq. 8 leave gamma < 1 as a hyperparameter; 1 (no decay) is what Mammoth's
        # ewc_on runs are usually configured with, and it makes F the sum of the task Fishers.
        self.gamma = gamma

    @torch.no_grad()
    def merge_fisher(self, task: Task, new: dict[str, torch.Tensor]) -> None:
        for name in self.fisher.names:
            self.fisher[name].mul_(self.gamma).add_(new[name])
