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


def angle_relations(embeddings: torch.Tensor) -> torch.Tensor:
    """cos of the angle at e_i between e_j and e_k, for every triplet: `[B * B * B]` (Park et al., CVPR 2019)."""
    directions = F.normalize(embeddings.unsqueeze(0) - embeddings.unsqueeze(1), p=2, dim=2)  # [i, j] = e_j - e_i
    return torch.bmm(directions, directions.transpose(1, 2)).flatten()


def rkd_angle(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Angle-wise relational distillation: mean |cos angle_student - cos angle_teacher| over all triplets
    (the L1 of cl-lite's `RKDAngleLoss`, which R-DFCIL uses; the teacher side is not detached)."""
    return F.l1_loss(angle_relations(student), angle_relations(teacher))
