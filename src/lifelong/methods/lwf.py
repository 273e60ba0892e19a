"""Learning without Forgetting (Li & Hoiem, ECCV 2016 / TPAMI 2017).

    L = CE(h_t(f(x)), y) + lamb * KD_T(concat_{k<t} h_k(f(x)), concat_{k<t} h*_k(f*(x)))

KD is the temperature-scaled cross-entropy of `lifelong.losses.distillation`, on the concatenated
logits of all old heads, against the frozen model from the end of the previous task (FACIL
`src/approach/lwf.py`).
"""
from __future__ import annotations

import torch

from lifelong.losses import distillation
from lifelong.methods.base import ContinualMethod


class LwF(ContinualMethod):
    keeps_old_model = True

    def __init__(self, *args, lamb: float = 1.0, T: float = 2.0, **kwargs):
        super().__init__(*args, **kwargs)
        # FACIL lwf.py: "lamb: forgetting-intransigence trade-off", default 1; Li & Hoiem Sec. 3:
        # "lambda_o is a loss balance weight, set to 1 for most our experiments".
        self.lamb = lamb
        # Li & Hoiem Sec. 3: "we use T = 2"; FACIL default T=2.
        self.T = T

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.net(x)
        terms = {"ce": self.cross_entropy(logits, y)}
        if self.old_net is not None:
            n_old = self.task.offset
            terms["kd"] = self.lamb * distillation(logits[:, :n_old], self.old_logits(x), self.T)
        return terms
