"""CLR: Channel-wise Lightweight Reprogramming (Ge, Li, Ni, Zhao, Yang, Itti; ICCV 2023).

A frozen pretrained backbone f is reprogrammed for each task t by depthwise k x k kernels K_t after
its convolutions (identity at initialisation), its own BatchNorm copies B_t and a linear head h_t
(`lifelong.models.clr`). Only task t's tensors theta_t = (K_t, B_t, h_t) are trained on task t:

    L_t = CE(h_t(f_{K_t, B_t}(x)), y) + lambda * sum_{W in theta_t} ||W||_2

(the norm of each tensor, not squared: official `utils.py:40-54`). Nothing any earlier task owns
changes, so forgetting is exactly zero. Prediction with a task id (CLR's protocol, a task oracle)
routes through that task's reprogramming; without one, every task's reprogrammed model is run and
the most confident is kept (`lifelong.selection.most_confident`, shared with MIND).

The official code trains each task from a fresh copy of the pretrained model and keeps the epoch
with the best accuracy on the split it reports. We keep the epoch with the best task-aware
accuracy on a held-out validation split, and stop early as it does.
"""
from __future__ import annotations

import re
from typing import Iterator

import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping
from torch import nn
from torch.nn import functional as F

from lifelong.data.scenario import Task
from lifelong.errors import ConfigError
from lifelong.methods.base import ContinualMethod, Phase, require_pretrained
from lifelong.models.clr import INSERT_RULES, ReprogrammedBackbone
from lifelong.selection import choose_most_confident, most_confident


class KeepBest(Callback):
    """Keeps the state of `modules()` from the validation epoch with the best `monitor`, and puts it
    back when the fit ends (official `main.py:88-95` keeps the best epoch's `state_dict`)."""

    def __init__(self, modules, monitor: str = "val/acc_taw"):
        self.modules, self.monitor = modules, monitor
        self.best: float | None = None
        self.state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        if self.best is None or value > self.best:
            self.best = value
            self.state = {k: v.detach().clone() for k, v in self.modules().state_dict().items()}

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.state is not None:
            self.modules().load_state_dict(self.state)

    # Saved in Lightning's epoch checkpoints, so a resumed task still restores its best epoch.
    def state_dict(self) -> dict:
        return {"best": self.best, "state": self.state}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best, self.state = state_dict["best"], state_dict["state"]


def epoch_selection(task: Task, modules, patience: int, keep_best: bool) -> list:
    """CLR's epoch selection on task-aware validation accuracy (official `main.py:80-98`): stop after
    `patience` epochs without a new best, and restore `modules()` from the best epoch. Needs a
    validation split; without one, training runs its full epochs."""
    callbacks: list = []
    if len(task.val) > 0:
        if patience:
            callbacks.append(EarlyStopping(monitor="val/acc_taw", mode="max", patience=patience))
        if keep_best:
            callbacks.append(KeepBest(modules, "val/acc_taw"))
    return callbacks


class CLR(ContinualMethod):
    """Per-task CLR kernels, BatchNorm copies and heads on one frozen backbone.

    Args:
        insert: which convolutions get a CLR layer: "k_gt_1" (the paper's CLR), "all" (CLR-Full),
            "v2" (1x1 depthwise after 1x1 convs); see `lifelong.models.clr`.
        kernel_size: size of the depthwise CLR kernels.
        task_bn: a trainable BatchNorm copy per task (official `train_BN`).
        norm_weight: lambda of the per-tensor norm regulariser.
        temperature: softmax temperature of the task-agnostic selector.
        patience: stop a task's training after this many validation epochs without a new best
            task-aware accuracy (0: never stop early); needs a validation split.
        keep_best: at the end of a task, restore its tensors from its best validation epoch.
        random_backbone: allow a backbone without pretrained weights (otherwise a ConfigError).
    """

    validate_task_aware = True  # epochs are selected by task-aware validation accuracy (CLR main.py:80-98)

    def __init__(self, backbone: nn.Module, *args, insert: str = "k_gt_1", kernel_size: int = 3,
                 task_bn: bool = True, norm_weight: float = 1e-5, temperature: float = 1.0, patience: int = 22,
                 keep_best: bool = True, random_backbone: bool = False, **kwargs):
        require_pretrained(backbone, "clr", random_backbone)
        if insert not in INSERT_RULES:
            raise ConfigError(f"method.insert={insert!r} is unknown; valid choices: {list(INSERT_RULES)} "
                              f"(k_gt_1: the paper's CLR, all: CLR-Full)")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"method.kernel_size={kernel_size} must be an odd positive integer (official: 3)")
        if patience < 0:
            raise ConfigError(f"method.patience={patience} must be >= 0 (0: no early stopping)")
        # Official network/utils.py:31-48: Ghost_reduced_v1 (the paper's CLR) wraps every conv whose
        # kernel is not 1x1; ReGhos_Block.py:5-20: a 3x3 depthwise conv, dirac_ (identity) init.
        super().__init__(ReprogrammedBackbone(backbone, insert, kernel_size, task_bn), *args, **kwargs)
        self.insert, self.kernel_size, self.task_bn = insert, kernel_size, task_bn
        # Official main.py:12,86 and utils.py:40-54: loss + 1e-5 * sum of the (unsquared) norms of the tensors.
        self.norm_weight = norm_weight
        # Official CLR has no task-agnostic path (task oracle); 1 = plain max softmax probability.
        self.temperature = temperature
        # Official main.py:80-98: stop once more than 21 epochs pass without a new best accuracy;
        # Lightning stops when `patience` checks in a row bring none, so 22.
        self.patience = patience
        self.keep_best = keep_best  # official main.py:88-95 keeps the best epoch's state_dict

    @property
    def reprogrammed(self) -> ReprogrammedBackbone:
        return self.net.backbone

    # ----------------------------------------------------------------------------- task hooks
    def begin_task(self, task: Task) -> None:
        self.task = task
        for t in range(self.reprogrammed.n_tasks):  # earlier tasks' tensors are final
            for p in self.task_parameters(t):
                p.requires_grad_(False)
        self.reprogrammed.add_task()
        self.net.add_head(task.n_classes)
        if self.reprogrammed.n_tasks != task.id + 1:
            raise RuntimeError(f"CLR got task {task.id} after {self.reprogrammed.n_tasks - 1} tasks")

    def task_modules(self, task_id: int) -> nn.ModuleList:
        """Everything task `task_id` owns: its CLR layers, BatchNorm copies and head."""
        return nn.ModuleList(self.reprogrammed.task_modules(task_id) + [self.net.heads[task_id]])

    def task_parameters(self, task_id: int) -> list[nn.Parameter]:
        return list(self.task_modules(task_id).parameters())

    def phases(self, task: Task) -> list[Phase]:
        callbacks = epoch_selection(task, lambda: self.task_modules(task.id), self.patience, self.keep_best)
        return [Phase("train", self.epochs, self.optimizer_factory, self.scheduler_factory,
                      parameters=lambda: self.task_parameters(task.id), callbacks=callbacks)]

    def frozen_modules(self) -> Iterator[nn.Module]:
        """The pretrained BatchNorms and every earlier task's modules stay in eval mode."""
        yield from super().frozen_modules()
        yield from self.reprogrammed.frozen_parts()
        current = self.task.id if self.task is not None else self.reprogrammed.n_tasks
        for t in range(min(current, self.reprogrammed.n_tasks)):
            yield self.task_modules(t)

    # ----------------------------------------------------------------------------- training
    def loss_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.task_aware_logits(x, self.task.id)
        terms = {"ce": F.cross_entropy(logits, y - self.task.offset)}
        if self.norm_weight:
            terms["norm"] = self.norm_weight * torch.stack([p.norm() for p in self.task_parameters(self.task.id)]).sum()
        return terms

        self.log("val/acc_taw", (logits.argmax(1) == target).float().mean(), prog_bar=True, batch_size=len(y),
                 sync_dist=True)

    # ----------------------------------------------------------------------------- prediction
    def task_aware_logits(self, x: torch.Tensor, task_id: int) -> torch.Tensor:
        self.reprogrammed.set_task(task_id)
        return self.net.heads[task_id](self.net.features(x))

    def task_agnostic_logits(self, x: torch.Tensor) -> torch.Tensor:
        logits = [self.task_aware_logits(x, t) for t in range(len(self.net.heads))]
        return most_confident(logits, self.temperature)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.task_agnostic_logits(x)

    # Evaluation through `lifelong.paths` (eval.cache=true): task j's tensors are final once task j
    # ended, so what its reprogrammed network says about a test set is cached.
    def path_logits(self, x: torch.Tensor, task_ids: list[int]) -> list[torch.Tensor]:
        return [self.task_aware_logits(x, t) for t in task_ids]

    def path_selection(self):
        return choose_most_confident, {}, self.temperature

    # ----------------------------------------------------------------------------- accounting
    def extra_results(self) -> dict:
        """Parameters each task adds, split as CLR kernels | BatchNorm | head (spec A.4)."""
        backbone = self.reprogrammed.pretrained_parameter_count()
        rows = []
        for t in range(self.reprogrammed.n_tasks):
            bns = self.reprogrammed.bn_layers(t)
            row = {
                "clr_kernels": sum(p.numel() for m in self.reprogrammed.clr_layers(t) for p in m.parameters()),
                "batchnorm": sum(p.numel() for m in bns for p in m.parameters()),
                "head": sum(p.numel() for p in self.net.heads[t].parameters()),
            }
            row["total"] = sum(row.values())
            # Running means and variances are stored per task too, but are not trained parameters.
            row["batchnorm_statistics"] = sum(m.running_mean.numel() + m.running_var.numel() for m in bns)
            row["percent_of_backbone"] = 100.0 * row["total"] / backbone
            row["percent_of_backbone_without_head"] = 100.0 * (row["total"] - row["head"]) / backbone
            rows.append(row)
        return {"added_parameters": {"backbone": backbone, "insert": self.insert, "per_task": rows}}

    # ----------------------------------------------------------------------------- checkpoints
    def on_load_state_dict_structure(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Recreate the tasks a checkpoint holds: their reprogramming and heads."""
        super().on_load_state_dict_structure(state_dict)
        heads = sorted({int(m.group(1)) for k in state_dict if (m := re.match(r"net\.heads\.(\d+)\.weight$", k))})
        for t in heads[len(self.net.heads):]:
            self.reprogrammed.add_task()
            self.net.add_head(state_dict[f"net.heads.{t}.weight"].shape[0])
