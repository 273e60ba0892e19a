"""Elastic Weight Consolidation (Kirkpatrick et al., PNAS 2017), as FACIL implements it.

    L = CE(h_t(f(x)), y) + lamb / 2 * sum_i F_i (theta_i - theta*_i)^2

over the backbone's parameters, with F the diagonal empirical Fisher, merged across tasks as
F <- alpha * F_old + (1 - alpha) * F_new (FACIL `src/approach/ewc.py`).

Deviation: FACIL computes the Fisher with the model in train mode on augmented batches, which also
updates BatchNorm running statistics as a side effect; we use eval mode and un-augmented images
so that computing the Fisher changes nothing.
"""
from __future__ import annotations

import itertools

import torch
from torch import nn
from torch.nn import functional as F

from lifelong.data.scenario import Task
from lifelong.methods.base import ContinualMethod

SAMPLING = ("true", "max_pred", "multinomial")


def _key(name: str) -> str:
    return name.replace(".", "__")


class EWC(ContinualMethod):
    def __init__(self, *args, lamb: float = 5000.0, alpha: float = 0.5, sampling: str = "max_pred",
                 num_samples: int = -1, **kwargs):
        super().__init__(*args, **kwargs)
        if sampling not in SAMPLING:
            raise ValueError(f"method.sampling={sampling!r} is unknown; valid choices: {list(SAMPLING)}")
        self.lamb = lamb  # FACIL ewc.py default 5000 ("forgetting-intransigence trade-off")
        self.alpha = alpha  # FACIL default 0.5: weight of the old Fisher when merging (-1: by classes)
        self.sampling = sampling  # FACIL default "max_pred": labels from the model's own argmax
        self.num_samples = num_samples  # FACIL default -1: every training sample
        # Buffers so that checkpoints carry them; shaped like the backbone's parameters.
        self.fisher, self.anchor = nn.Module(), nn.Module()
        for name, p in self.net.backbone.named_parameters():
            self.fisher.register_buffer(_key(name), torch.zeros_like(p))
            self.anchor.register_buffer(_key(name), p.detach().clone())
        self.register_buffer("has_fisher", torch.tensor(False))

    def penalty(self) -> torch.Tensor:
        terms = [
            (getattr(self.fisher, _key(n)) * (p - getattr(self.anchor, _key(n))) ** 2).sum()
            for n, p in self.net.backbone.named_parameters()
            if p.requires_grad
        ]
        return torch.stack(terms).sum()

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = super().loss_terms(x, y)
        if bool(self.has_fisher):
            terms["ewc"] = self.lamb / 2 * self.penalty()
        return terms

    def fisher_diagonal(self, data) -> dict[str, torch.Tensor]:
        params = dict(self.net.backbone.named_parameters())
        fisher = {n: torch.zeros_like(p) for n, p in params.items()}
        # FACIL squares the gradient of each training-size batch's mean loss, times the batch size.
        batches = data.batches("train", device=self.device, batch_size=data.batch_size)
        if self.num_samples > 0:
            batches = itertools.islice(batches, self.num_samples // data.batch_size + 1)
        batches = self.shard(batches)  # under DDP each rank takes every world_size-th batch; summed below
        was_training, n_seen = self.net.training, 0
        self.net.eval()
        for x, y in batches:
            with torch.enable_grad():
                logits = self.net(x)
                if self.sampling == "true":
                    target = y
                elif self.sampling == "max_pred":
                    target = logits.argmax(1)
                else:
                    target = torch.multinomial(F.softmax(logits, 1), 1).flatten()
                self.net.zero_grad(set_to_none=True)
                F.cross_entropy(logits, target).backward()
            for n, p in params.items():
                if p.grad is not None:
                    fisher[n] += p.grad.detach() ** 2 * len(y)  # FACIL: squared mean gradient x batch size
            n_seen += len(y)
        self.net.zero_grad(set_to_none=True)
        self.net.train(was_training)
        n_seen = int(self.all_reduce_sum(torch.tensor(float(n_seen), device=self.device)).item())
        return {n: self.all_reduce_sum(f) / max(n_seen, 1) for n, f in fisher.items()}

    def end_task(self, task: Task, data) -> None:
        super().end_task(task, data)
        new = self.fisher_diagonal(data)
        alpha = self.alpha
        if alpha == -1:  # FACIL: weight old and new Fisher by their share of the classes
            alpha = task.offset / (task.offset + task.n_classes)
        for name, p in self.net.backbone.named_parameters():
            old = getattr(self.fisher, _key(name))  # zeros before the first task, as in FACIL
            old.copy_(alpha * old + (1 - alpha) * new[name])
            getattr(self.anchor, _key(name)).copy_(p.detach())
        self.has_fisher.fill_(True)
