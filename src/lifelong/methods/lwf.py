"""Learning without Forgetting (Li & Hoiem, ECCV 2016 / TPAMI 2017).

    L = CE(h_t(f(x)), y) + lamb * KD_T(concat_{k<t} h_k(f(x)), concat_{k<t} h*_k(f*(x)))

KD is the temperature-scaled cross-entropy of `lifelong.losses.distillation` against the frozen
model from the end of the previous task. `kd_scope="concat"` (default) distils the concatenated
logits of all old heads, one softmax over every old class (FACIL `src/approach/lwf.py`, for
class-incremental runs); `kd_scope="per_head"` sums one distillation per old head, each with its own
softmax, as Li & Hoiem's multi-head setting (Sec. 3, one loss per old task) and the EBLL paper do.
"""
from __future__ import annotations

import torch

from lifelong.errors import ConfigError
from lifelong.losses import distillation
from lifelong.methods.base import ContinualMethod

KD_SCOPES = ("concat", "per_head")


class LwF(ContinualMethod):
    keeps_old_model = True

    # search=continual decays lamb from its strongest setting (FACIL gridsearch_config.py 'lwf': lamb [10])
    stability_key, stability_start = "lamb", 10.0

    def __init__(self, *args, lamb: float = 1.0, T: float = 2.0, kd_scope: str = "concat", **kwargs):
        super().__init__(*args, **kwargs)
        if kd_scope not in KD_SCOPES:
            raise ConfigError(f"method.kd_scope={kd_scope!r} is unknown; valid choices: {list(KD_SCOPES)}")
        # concat: FACIL lwf.py (one softmax over the old classes); per_head: Li & Hoiem Sec. 3 (one per old task)
        self.kd_scope = kd_scope
        # FACIL lwf.py: "lamb: forgetting-intransigence trade-off", default 1; Li & Hoiem Sec. 3:
        # "lambda_o is a loss balance weight, set to 1 for most our experiments".
        self.lamb = lamb
        # Li & Hoiem Sec. 3: "we use T = 2"; FACIL default T=2.
        self.T = T

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.net(x)
        terms = {"ce": self.cross_entropy(logits, y)}
        if self.old_net is not None:
            terms["kd"] = self.lamb * self.old_heads_kd(logits, self.old_logits(x))
        return terms

    def old_heads_kd(self, logits: torch.Tensor, old_logits: torch.Tensor) -> torch.Tensor:
        """KD_T between the student's and the frozen model's logits of the old heads (see `kd_scope`)."""
        if self.kd_scope == "concat":
            return distillation(logits[:, : old_logits.shape[1]], old_logits, self.T)
        bounds = zip(self.old_net.offsets, self.old_net.task_sizes)
        return sum(distillation(logits[:, s : s + n], old_logits[:, s : s + n], self.T) for s, n in bounds)
