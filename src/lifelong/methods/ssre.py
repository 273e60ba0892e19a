"""SSRE: Self-Sustaining Representation Expansion (Zhu, Cai, Wen, Ji, Huang, CVPR 2022).
Reference: PyCIL (G-U-N/PyCIL `models/ssre.py`, `exps/ssre.json`, `convs/modified_represnet.py`).

Dynamic structure reorganisation: every block convolution has a parallel 1x1 branch
(`lifelong.models.ssre`). In the first task everything trains. In task t > 0 the main branch, the
stem, the shortcuts and every BatchNorm are frozen (BatchNorm in eval mode: PyCIL's `train()` puts
the network in eval mode after the first task); only the branches and the heads learn. After every
task the branches are merged into the main convolutions (re-parameterisation), so the network
keeps its size, and the branches restart from zero in the next task.

Prototype selection: for a new-class sample with feature f, s = max_c cos(f, mu_c) over the stored
prototypes mu_c of the old classes (detached). Samples close to old classes are distilled, the
others learnt by CE. For task t > 0, with f* the frozen previous model and tau the temperature:

    L = mean_i (1 - s_i) CE(g(f(x_i)) / tau, y_i)                         (selected CE)
      + lambda_kd sum_i s_i || f(x_i) - f*(x_i) ||_2                         (selected feature KD)
      + lambda_proto CE(g(mu_c) / tau, c),  c ~ U(old classes)               (prototype CE)

(PyCIL `_compute_ssre_loss`: soft selection s; `selection=hard` uses the commented-out threshold
rule s > threshold instead). The first task is CE(g(f(x)) / tau, y). After each task the prototypes
of its classes are the means of its training features under the model in eval mode.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from lifelong.data.scenario import Task
from lifelong.errors import ConfigError
from lifelong.methods.base import ContinualMethod
from lifelong.models.ssre import RepResNet
from lifelong.prototypes import class_statistics

SELECTIONS = ("soft", "hard")
BACKBONES = ("resnet18_rep", "resnet32_rep")


def prototype_similarity(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """max over prototypes of the cosine similarity of each feature: `[B]` (PyCIL eps 1e-12)."""
    return (F.normalize(features, dim=1, eps=1e-12) @ F.normalize(prototypes, dim=1, eps=1e-12).T).max(1).values


class SSRE(ContinualMethod):
    keeps_old_model = True

    def __init__(self, backbone: nn.Module, optimizer, scheduler=None, epochs: int = 1, *,
                 kd_weight: float = 1.0, proto_weight: float = 10.0, temperature: float = 0.1,
                 selection: str = "soft", threshold: float = 0.8, proto_batch_size: int | None = None,
                 prototype_batches: int | None = None, progress_bar: bool = True):
        if not isinstance(backbone, RepResNet):
            raise ConfigError(f"method=ssre needs a backbone with parallel branches, got backbone "
                              f"{type(backbone).__name__}; valid choices: backbone={' | '.join(BACKBONES)}")
        if selection not in SELECTIONS:
            raise ConfigError(f"method.selection={selection!r} is unknown; valid choices: {list(SELECTIONS)}")
        super().__init__(backbone, optimizer, scheduler, epochs, ce_scope="seen")
        self.kd_weight = kd_weight  # PyCIL exps/ssre.json lambda_fkd 1
        self.proto_weight = proto_weight  # PyCIL exps/ssre.json lambda_proto 10
        self.temperature = temperature  # PyCIL exps/ssre.json temp 0.1
        self.selection = selection  # PyCIL: soft weights s (mask = weights); hard: s > threshold (commented out)
        self.threshold = threshold  # PyCIL exps/ssre.json threshold 0.8 (used by selection=hard only)
        self.proto_batch_size = proto_batch_size  # PyCIL: batch_size prototypes per step; None = the real batch size
        self.prototype_batches, self.progress_bar = prototype_batches, progress_bar
        self.register_buffer("prototypes", torch.zeros(0, backbone.out_dim))

    @property
    def backbone(self) -> RepResNet:
        return self.net.backbone

    # ----------------------------------------------------------------------------- task hooks
    def begin_task(self, task: Task) -> None:
        """Open the parallel branches; after the first task only they (and the heads) train."""
        super().begin_task(task)
        self.backbone.set_parallel(True)
        if task.id > 0:
            branches = {id(p) for p in self.backbone.branch_parameters()}
            for p in self.backbone.parameters():
                p.requires_grad_(id(p) in branches)

    def frozen_modules(self) -> Iterator[nn.Module]:
        yield from super().frozen_modules()
        if self.task is not None and self.task.id > 0:  # PyCIL `train()`: eval mode after the first task
            yield from (m for m in self.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))

    @torch.no_grad()
    def end_task(self, task: Task, data) -> None:
        self.backbone.merge()  # the same function, one branch: re-parameterised into the 3x3 kernels
        super().end_task(task, data)  # old_net: the merged model, frozen
        device = next(self.old_net.parameters()).device
        _, means, _ = class_statistics(
            self.old_net.features, data.batches("train", device), task.n_classes, task.offset, self.net.out_dim,
            self.prototype_batches, self.progress_bar, desc=f"SSRE prototypes task {task.id}")
        self.prototypes = torch.cat([self.prototypes.to(device), means.to(device)])

    def on_load_state_dict_structure(self, state_dict: dict[str, torch.Tensor]) -> None:
        if any(k.startswith("old_net.") for k in state_dict):
            self.backbone.set_parallel(False)  # the old model is the merged one
        super().on_load_state_dict_structure(state_dict)
        self.prototypes = torch.zeros_like(state_dict["prototypes"])

    # ----------------------------------------------------------------------------- training
    def loss_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.net.features(x)
        logits = self.net.head_logits(features) / self.temperature
        if self.old_net is None:
            return {"ce": F.cross_entropy(logits, y)}
        with torch.no_grad():
            old_features = self.old_net.features(x)
            s = prototype_similarity(features, self.prototypes[: self.task.offset])
            if self.selection == "hard":
                s = (s > self.threshold).float()
        ce = (F.cross_entropy(logits, y, reduction="none") * (1 - s)).mean()
        kd = (torch.norm(features - old_features, p=2, dim=1) * s).sum()
        index = torch.randint(self.task.offset, (self.proto_batch_size or len(x),), device=x.device)
        proto_logits = self.net.head_logits(self.prototypes[index]) / self.temperature
        return {"ce": ce, "feat_kd": self.kd_weight * kd,
                "proto_ce": self.proto_weight * F.cross_entropy(proto_logits, index)}

    def extra_results(self) -> dict:
        return {"stored_prototypes": int(self.prototypes.shape[0])}
