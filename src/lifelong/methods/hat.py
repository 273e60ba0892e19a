"""Hard Attention to the Task (Serra, Suris, Miron & Karatzoglou, ICML 2018).

Every hidden unit of layer l is gated per task by a_l^t = sigmoid(s * e_l^t) (`lifelong.models.hat`: an
MLP or convnet, or a ResNet with gates on its convolutions' channels and per-task BatchNorm).
Training task t minimises

    L = CE(h_t(f(x; a^t)), y) + c * sum_l sum_i a_{l,i}^t (1 - a_{l,i}^{<t}) / sum_l sum_i (1 - a_{l,i}^{<t})   (Eq. 5)

with a^{<t} = max over earlier tasks of their (binary) gates. Three mechanisms of Sec. 2:
- the slope is annealed over each epoch's batches b = 0..B-1: s = 1/s_max + (s_max - 1/s_max) b / (B - 1) (Eq. 3);
- gradients of the shared weights are multiplied by 1 - min(a_l^{<t}[i], a_{l-1}^{<t}[j]) (Eq. 2), so
  nothing an old task uses changes;
- the embedding gradients are compensated for the annealing: times s_max (cosh(s e) + 1) / (s (cosh(e) + 1))
  (Eq. 4; the official code clamps s e to +-50 first), and embeddings are clamped to +-6 after each step.

Prediction with a task id uses that task's gates at s -> infinity, i.e. binarised at e > 0 (the
official code uses s = s_max, which is the same gate except for |e| < 17 / s_max); since the gradient
masks and old heads keep everything those binary gates select, task-aware forgetting is exactly 0.
Without a task id every task's gated network is run and the most confident is kept
(`lifelong.selection.most_confident`, as for MIND and CLR). Old heads are frozen.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from lifelong.data.scenario import Task
from lifelong.errors import ConfigError
from lifelong.methods.base import ContinualMethod
from lifelong.models.hat import hat_backbone
from lifelong.selection import most_confident


def no_weight_decay(optimizer: Callable, method: str) -> None:
    """Weight decay moves weights whose gradient is masked to zero: parameter isolation forbids it."""
    decay = getattr(optimizer, "keywords", {}).get("weight_decay", 0.0)
    if decay:
        raise ConfigError(f"optimizer.weight_decay={decay} would change the weights old tasks keep under "
                          f"method={method}; set optimizer.weight_decay=0")


class HAT(ContinualMethod):
    validate_task_aware = True

    def __init__(self, backbone: nn.Module, optimizer: Callable, scheduler: Callable | None = None,
                 epochs: int = 1, *, smax: float = 400.0, lamb: float = 0.75, thres_cosh: float = 50.0,
                 thres_emb: float = 6.0, temperature: float = 1.0, ce_scope: str = "current"):
        no_weight_decay(optimizer, "hat")
        super().__init__(hat_backbone(backbone), optimizer, scheduler, epochs, ce_scope)
        self.smax = smax  # official hat.py default 400 (paper Sec. 4: s_max = 400)
        self.lamb = lamb  # c of Eq. 5: official default 0.75 (paper Sec. 4)
        self.thres_cosh = thres_cosh  # official hat.py: clamp s * e to +-50 inside cosh
        self.thres_emb = thres_emb  # official hat.py: embeddings clamped to +-6 after each step
        self.temperature = temperature  # task-agnostic selection: plain max probability
        self.used = nn.Module()  # a^{<t}: the union of the old tasks' binary gates, one buffer per layer
        for i, units in enumerate(self.net.backbone.units):
            self.used.register_buffer(f"layer{i}", torch.zeros(units))
        self.s = smax

    def used_units(self) -> list[torch.Tensor]:
        return [getattr(self.used, f"layer{i}") for i in range(len(self.net.backbone.units))]

    def begin_task(self, task: Task) -> None:
        super().begin_task(task)
        self.net.backbone.add_task()
        for head in self.net.heads[:-1]:  # an old head answers only for its task: it stays as it was
            head.requires_grad_(False)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        n_batches = max(int(self.trainer.num_training_batches), 2)
        self.s = 1 / self.smax + (self.smax - 1 / self.smax) * batch_idx / (n_batches - 1)  # Eq. 3
        return super().training_step(batch, batch_idx)

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        t = self.task.id
        gates = self.net.backbone.gates(t, self.s)
        logits = self.net.heads[t](self.net.backbone(x, gates, t))
        kept = [1 - u for u in self.used_units()]
        attention = sum((g * k).sum() for g, k in zip(gates, kept)) / sum(k.sum() for k in kept).clamp(min=1)
        return {"ce": F.cross_entropy(logits, y - self.task.offset), "attention": self.lamb * attention}

    @torch.no_grad()
    def on_before_optimizer_step(self, optimizer) -> None:
        backbone = self.net.backbone
        if self.task.id > 0:  # Eq. 2: what old tasks use does not move
            for layer, (weight, bias) in zip(backbone.layers, backbone.weight_masks(self.used_units())):
                if layer.weight.grad is not None:
                    layer.weight.grad.mul_(weight)
                if layer.bias is not None and layer.bias.grad is not None:
                    layer.bias.grad.mul_(bias)
        for e in backbone.task_embeddings(self.task.id):  # Eq. 4: compensate the annealed slope
            if e.grad is not None:
                num = torch.cosh(torch.clamp(self.s * e, -self.thres_cosh, self.thres_cosh)) + 1
                e.grad.mul_(self.smax / self.s * num / (torch.cosh(e) + 1))

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        with torch.no_grad():
            for e in self.net.backbone.task_embeddings(self.task.id):
                e.clamp_(-self.thres_emb, self.thres_emb)

    @torch.no_grad()
    def end_task(self, task: Task, data) -> None:
        super().end_task(task, data)
        for used, gate in zip(self.used_units(), self.net.backbone.gates(task.id, None)):
            used.copy_(torch.maximum(used, gate))

    def task_aware_logits(self, x: torch.Tensor, task_id: int) -> torch.Tensor:
        return self.net.heads[task_id](self.net.backbone(x, self.net.backbone.gates(task_id, None), task_id))

    def task_agnostic_logits(self, x: torch.Tensor) -> torch.Tensor:
        paths = [self.task_aware_logits(x, u) for u in range(len(self.net.heads))]
        return most_confident(paths, self.temperature)[0]

    def extra_results(self) -> dict:
        used = self.used_units()
        return {"hat_units_used": [int(u.sum()) for u in used], "hat_units": [u.numel() for u in used]}
