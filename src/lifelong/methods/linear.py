"""Linear probing: a frozen pretrained backbone and a new linear head per task.

The reference CLR (Ge et al., ICCV 2023) is measured against: official `--method Linear`
(`network/model.py`, a frozen ResNet in eval mode plus `Linear(d, C_task)`; `main.py:81-84`),
trained by the same loop as CLR (the norm regulariser, best-epoch selection, early stopping).

    L_t = CE(h_t(f(x)), y) + lambda * sum_{W in h_t} ||W||_2,   f frozen (eval mode), h_t trained alone

Old heads are frozen once their task ends, so forgetting is exactly zero; without a task id the
prediction is the argmax over every head's logits.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from lifelong.data.scenario import Task
from lifelong.errors import ConfigError
from lifelong.methods.base import ContinualMethod, Phase, freeze, require_pretrained
from lifelong.methods.clr import epoch_selection


class Linear(ContinualMethod):
    """Args:
        norm_weight: lambda of the per-tensor norm regulariser on the head.
        patience: stop after this many validation epochs without a new best task-aware accuracy
            (0: never); needs a validation split.
        keep_best: at the end of a task, restore its head from its best validation epoch.
        random_backbone: allow a backbone without pretrained weights (otherwise a ConfigError).
    """

    validate_task_aware = True  # epochs are selected by task-aware validation accuracy (CLR main.py:80-98)

    def __init__(self, backbone: nn.Module, *args, norm_weight: float = 1e-5, patience: int = 22,
                 keep_best: bool = True, random_backbone: bool = False, **kwargs):
        require_pretrained(backbone, "linear", random_backbone)
        if patience < 0:
            raise ConfigError(f"method.patience={patience} must be >= 0 (0: no early stopping)")
        super().__init__(backbone, *args, **kwargs)
        freeze(self.net.backbone)
        self.norm_weight = norm_weight  # official main.py:12 and utils.py:40-54, the same loop as CLR
        self.patience = patience  # official main.py:80-98: more than 21 epochs without a new best -> 22
        self.keep_best = keep_best  # official main.py:88-95

    def begin_task(self, task: Task) -> None:
        for head in self.net.heads:
            freeze(head)
        super().begin_task(task)

    def phases(self, task: Task) -> list[Phase]:
        callbacks = epoch_selection(task, lambda: self.net.heads[task.id], self.patience, self.keep_best)
        return [Phase("train", self.epochs, self.optimizer_factory, self.scheduler_factory, callbacks=callbacks)]

    def frozen_modules(self) -> Iterator[nn.Module]:
        yield from super().frozen_modules()
        yield self.net.backbone

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():  # nothing below the head learns: no graph through the backbone
            features = self.net.features(x)
        head = self.net.heads[self.task.id]
        terms = {"ce": F.cross_entropy(head(features), y - self.task.offset)}
        if self.norm_weight:
            terms["norm"] = self.norm_weight * (head.weight.norm() + head.bias.norm())
        return terms

        self.log("val/acc_taw", (logits.argmax(1) == target).float().mean(), prog_bar=True, batch_size=len(y),
                 sync_dist=True)

    def extra_results(self) -> dict:
        backbone = sum(p.numel() for p in self.net.backbone.parameters())
        rows = []
        for head in self.net.heads:
            n = sum(p.numel() for p in head.parameters())
            rows.append({"head": n, "total": n, "percent_of_backbone": 100.0 * n / backbone})
        return {"added_parameters": {"backbone": backbone, "per_task": rows}}
