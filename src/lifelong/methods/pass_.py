"""PASS: Prototype Augmentation and Self-Supervision (Zhu, Zhang, Wang, Yin, Liu, CVPR 2021).
Official code: Impression2805/CVPR21_PASS (`PASS.py`, `main.py`); PyCIL (G-U-N/PyCIL `exps/pass.json`).

Every image is seen in its four rotations k = 0..3 with the label 4y + k, so during training the head
covers 4 x the classes (self-supervised label augmentation); prediction reads the k = 0 outputs only.
For task t > 0, with f the feature extractor, f* the frozen previous one, g the (4x) classifier, mu_c
the stored prototype (feature mean) of old class c, r the radius and tau the temperature:

    L = CE(g(f(rot_k x)) / tau, 4y + k)                                       (rotation-augmented CE)
      + lambda_proto CE(g(mu_c + r e) / tau, 4c),  c ~ U(old classes), e ~ N(0, I)   (prototype augmentation)
      + lambda_kd || f(rot_k x) - f*(rot_k x) ||_2                              (feature distillation)

where the distillation is the L2 norm of the whole batch's feature difference (`torch.dist`), and
r = sqrt(mean_c tr(Sigma_c) / d) over the classes of the first task (`PASS.py` `protoSave`). After each
task the prototypes of its classes are the means of its (un-rotated) training features, computed with
the just-trained model in eval mode. The first task is the rotation-augmented CE alone.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from lifelong.data.scenario import Task
from lifelong.errors import ConfigError
from lifelong.methods.base import ContinualMethod
from lifelong.prototypes import class_statistics

ROTATIONS = 4
RADIUS_FROM = ("first", "all")


def rotate_batch(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The four rotations of every image, interleaved (image i at rows 4i..4i+3), labelled 4y + k."""
    x4 = torch.stack([torch.rot90(x, k, (2, 3)) for k in range(ROTATIONS)], 1).flatten(0, 1)
    y4 = (y[:, None] * ROTATIONS + torch.arange(ROTATIONS, device=y.device)).flatten()
    return x4, y4


def pass_radius(trace_per_dim: torch.Tensor) -> torch.Tensor:
    """sqrt(mean over classes of tr(Sigma_c) / d) (`PASS.py` protoSave; PyCIL `_build_protos`)."""
    return trace_per_dim.mean().sqrt()


class PASS(ContinualMethod):
    keeps_old_model = True

    def __init__(self, backbone: nn.Module, optimizer, scheduler=None, epochs: int = 1, *,
                 proto_weight: float = 10.0, kd_weight: float = 10.0, temperature: float = 0.1,
                 proto_batch_size: int | None = None, radius_from: str = "first",
                 prototype_batches: int | None = None, progress_bar: bool = True):
        super().__init__(backbone, optimizer, scheduler, epochs, ce_scope="seen")
        if radius_from not in RADIUS_FROM:
            raise ConfigError(f"method.radius_from={radius_from!r} is unknown; valid choices: {list(RADIUS_FROM)}")
        if temperature <= 0:
            raise ConfigError(f"method.temperature={temperature} must be > 0")
        self.proto_weight = proto_weight  # `--protoAug_weight 10.0` (main.py); PyCIL lambda_proto 10
        self.kd_weight = kd_weight  # `--kd_weight 10.0` (main.py); PyCIL lambda_fkd 10
        self.temperature = temperature  # `--temp 0.1` (main.py): CE on logits / 0.1
        # Official: `args.batch_size` (64) augmented prototypes per step; None = the real batch size.
        self.proto_batch_size = proto_batch_size
        # Official: the radius from the first task's classes only; PyCIL: recomputed over every class so far.
        self.radius_from = radius_from
        self.prototype_batches, self.progress_bar = prototype_batches, progress_bar
        d = backbone.out_dim
        self.register_buffer("prototypes", torch.zeros(0, d))  # one row per seen class, global class order
        self.register_buffer("class_spread", torch.zeros(0))  # tr(Sigma_c) / d per class
        self.register_buffer("radius", torch.zeros(()))

    # ----------------------------------------------------------------------------- task hooks
    def begin_task(self, task: Task) -> None:
        """The task's head has 4 outputs per class: class j, rotation k at output 4j + k."""
        self.task = task
        self.net.add_head(ROTATIONS * task.n_classes)

    @torch.no_grad()
    def end_task(self, task: Task, data) -> None:
        super().end_task(task, data)  # old_net: the model that has just learnt `task`, in eval mode
        device = next(self.old_net.parameters()).device
        _, means, spread = class_statistics(
            self.old_net.features, data.batches("train", device), task.n_classes, task.offset, self.net.out_dim,
            self.prototype_batches, self.progress_bar, desc=f"PASS prototypes task {task.id}")
        self.prototypes = torch.cat([self.prototypes.to(device), means.to(device)])
        self.class_spread = torch.cat([self.class_spread.to(device), spread.to(device)])
        if task.id == 0 or self.radius_from == "all":
            first = self.class_spread if self.radius_from == "all" else spread.to(device)
            self.radius = pass_radius(first)

    def on_load_state_dict_structure(self, state_dict: dict[str, torch.Tensor]) -> None:
        super().on_load_state_dict_structure(state_dict)
        self.prototypes = torch.zeros_like(state_dict["prototypes"])
        self.class_spread = torch.zeros_like(state_dict["class_spread"])

    # ----------------------------------------------------------------------------- training
    def loss_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        x4, y4 = rotate_batch(x, y)
        features = self.net.features(x4)
        terms = {"ce": F.cross_entropy(self.net.head_logits(features) / self.temperature, y4)}
        if self.old_net is None:
            return terms
        with torch.no_grad():
            old_features = self.old_net.features(x4)
        terms["feat_kd"] = self.kd_weight * torch.dist(features, old_features, 2)
        n_old = self.task.offset
        index = torch.randint(n_old, (self.proto_batch_size or len(x),), device=x.device)
        augmented = self.prototypes[index] + torch.randn_like(self.prototypes[index]) * self.radius
        proto_logits = self.net.head_logits(augmented) / self.temperature
        terms["proto_aug"] = self.proto_weight * F.cross_entropy(proto_logits, ROTATIONS * index)
        return terms

    # ----------------------------------------------------------------------------- prediction
    def class_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The un-rotated outputs (k = 0) of every seen class: `outputs[:, ::4]` (`PASS.py` `_test`)."""
        return self.net(x)[:, ::ROTATIONS]

    def task_aware_logits(self, x: torch.Tensor, task_id: int) -> torch.Tensor:
        start, size = self.net.offsets[task_id] // ROTATIONS, self.net.task_sizes[task_id] // ROTATIONS
        return self.class_logits(x)[:, start : start + size]

    def task_agnostic_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.class_logits(x)

    def extra_results(self) -> dict:
        return {"pass_radius": float(self.radius), "stored_prototypes": int(self.prototypes.shape[0])}
