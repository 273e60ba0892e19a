"""LwF.MC, the multi-class LwF of iCaRL (Rebuffi et al., CVPR 2017, Sec. 4), as the ABD paper runs it
(Smith et al., ICCV 2021, Table 1; official `learners/kd.py` `LWF_MC`, L205-229):

    L = sum_{k in new} BCE(sigmoid(f_k(x)), 1[y = k]) + sum_{k < n_old} BCE(sigmoid(f_k(x)), sigmoid(f*_k(x)))

summed over the seen classes' sigmoid outputs and averaged over the batch (`BCELoss(reduction="sum")
/ len(logits)`): one-hot targets for the current task's classes, the frozen previous model's
sigmoid outputs as targets for the old classes. The first task has the one-hot term only.

Logged as two terms, `bce` (new-class outputs) and `kd` (old-class outputs), whose sum is the
official loss. We use `binary_cross_entropy_with_logits`, the stable form of BCE on sigmoids; it
differs from `BCELoss` only where PyTorch clamps log(0) to -100, i.e. for |logit| > 100.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from lifelong.methods.base import ContinualMethod


class LwFMC(ContinualMethod):
    keeps_old_model = True
    class_incremental_only = True  # sigmoid targets: old classes from the frozen model, new ones one-hot

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.net(x)  # every seen class, as the official `forward` slices to valid_out_dim
        n_old = self.task.offset
        targets = F.one_hot(y, logits.shape[1]).to(logits.dtype)
        if self.old_net is not None:
            targets[:, :n_old] = torch.sigmoid(self.old_logits(x))
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        terms = {"bce": bce[:, n_old:].sum(1).mean()}
        if self.old_net is not None:
            terms["kd"] = bce[:, :n_old].sum(1).mean()
        return terms
