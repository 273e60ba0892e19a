"""Supermasks in Superposition (Wortsman et al., NeurIPS 2020), the GN-free setting with task ids
at training time ("GG"): one fixed random network (`lifelong.models.supermask`), and per task t a
supermask M_t (edge-popup scores) over every layer, its output layer included. Training task t
minimises, over task t's scores only,

    L = CE(h_t(f(x; W * M_t)), y).

W never changes and no task touches another's scores, so task-aware forgetting is exactly 0.
Prediction with a task id uses that task's mask. Without one, the paper's one-shot inference
(Sec. 3.3, Eq. 4): superpose the masks, f(x; W * sum_i alpha_i M_i) with alpha_i = 1/k over the k
seen tasks, and pick the task whose coefficient lowers the entropy H of the output fastest,
argmax_i -dH/d alpha_i. The paper infers one task per batch; we keep one alpha vector per
sample, so each test image gets its own task (exact, because every layer is linear in its weight:
W * sum_i alpha_i M_i applied to h is sum_i alpha_i (W * M_i) h). The output is every seen task's
head on the superposed features. `inference=most_confident` uses the shared selector instead.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from lifelong.data.scenario import Task
from lifelong.errors import ConfigError
from lifelong.methods.base import ContinualMethod
from lifelong.methods.hat import no_weight_decay
from lifelong.models.supermask import SupermaskHead, supermask_backbone
from lifelong.selection import most_confident

INFERENCE = ("one_shot", "most_confident")


class SupSup(ContinualMethod):
    validate_task_aware = True

    def __init__(self, backbone: nn.Module, optimizer: Callable, scheduler: Callable | None = None,
                 epochs: int = 1, *, density: float = 0.5, inference: str = "one_shot",
                 temperature: float = 1.0, ce_scope: str = "current"):
        if inference not in INFERENCE:
            raise ConfigError(f"method.inference={inference!r} is unknown; valid choices: {list(INFERENCE)}")
        if not 0 < density <= 1:
            raise ConfigError(f"method.density={density} must lie in (0, 1]: the fraction of weights a mask keeps")
        no_weight_decay(optimizer, "supsup")
        super().__init__(supermask_backbone(backbone, density), optimizer, scheduler, epochs, ce_scope)
        self.density = density  # edge-popup's k: half the weights (Ramanujan et al. find k ~ 50% best)
        self.inference = inference  # one_shot: the paper's Sec. 3.3 entropy inference
        self.temperature = temperature  # for inference=most_confident

    def begin_task(self, task: Task) -> None:
        self.task = task
        self.net.backbone.add_task()
        head = SupermaskHead(self.net.out_dim, task.n_classes, self.density)
        self.net.heads.append(head.to(self.net.backbone.layers[0].weight.device))

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        t = self.task.id
        return {"ce": F.cross_entropy(self.net.heads[t](self.net.backbone(x, t)), y - self.task.offset)}

    def task_aware_logits(self, x: torch.Tensor, task_id: int) -> torch.Tensor:
        return self.net.heads[task_id](self.net.backbone(x, task_id))

    def infer_task(self, x: torch.Tensor) -> torch.Tensor:
        """One-shot task inference, per sample: argmax_i of -dH/d alpha_i at alpha = 1/k."""
        k = len(self.net.heads)
        with torch.enable_grad():
            alphas = torch.full((len(x), k), 1.0 / k, device=x.device, requires_grad=True)
            features = self.net.backbone(x, alphas=alphas)
            logits = torch.cat([head(features) for head in self.net.heads], dim=1)
            entropy = -(F.softmax(logits, 1) * F.log_softmax(logits, 1)).sum(1)
            grad, = torch.autograd.grad(entropy.sum(), alphas)
        return (-grad).argmax(1)

    def task_agnostic_logits(self, x: torch.Tensor) -> torch.Tensor:
        paths = [self.task_aware_logits(x, u) for u in range(len(self.net.heads))]
        if self.inference == "most_confident":
            return most_confident(paths, self.temperature)[0]
        chosen = self.infer_task(x)
        scores = torch.cat([F.softmax(z, 1) for z in paths], dim=1)
        owner = torch.repeat_interleave(torch.arange(len(paths), device=x.device),
                                        torch.tensor([z.shape[1] for z in paths], device=x.device))
        return scores.masked_fill(owner.unsqueeze(0) != chosen.unsqueeze(1), float("-inf"))
