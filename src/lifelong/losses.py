"""Loss terms shared by several methods, written once."""
from __future__ import annotations

import torch
from torch.nn import functional as F


def distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float = 2.0) -> torch.Tensor:
    """Hinton et al.'s knowledge distillation as LwF uses it: cross-entropy between the teacher's and
    the student's temperature-softened distributions, averaged over the batch.

    `-(softmax(z_t / T) * log_softmax(z_s / T)).sum(1).mean()`, with no T^2 factor: FACIL's
    `cross_entropy(..., exp=1/T)` (raising softmax outputs to 1/T and renormalising is the same
    distribution) and ABD's `loss_fn_kd` both omit it.
    """
    return -(F.softmax(teacher_logits / T, dim=1) * F.log_softmax(student_logits / T, dim=1)).sum(1).mean()


def kl_gaussians(mu_p: torch.Tensor, var_p: torch.Tensor, mu_q: torch.Tensor, var_q: torch.Tensor) -> torch.Tensor:
    """KL(N(mu_p, var_p) || N(mu_q, var_q)) per dimension, for diagonal Gaussians."""
    return 0.5 * (torch.log(var_q / var_p) + (var_p + (mu_p - mu_q) ** 2) / var_q - 1.0)
