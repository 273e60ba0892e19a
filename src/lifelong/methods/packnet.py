"""PackNet (Mallya & Lazebnik, CVPR 2018), in MIND's gating machinery, as MIND's code runs it.

One network, pruned into nested per-task sub-networks. For task t:
  1. "train": the free weights W_free learn the task with the old tasks' weights frozen but used,
  2. prune: in every layer keep the free weights of largest magnitude, give them to t, zero the rest,
  3. "retrain": the kept weights alone (the sub-network of tasks 0..t) learn the task again;
each phase minimises

    L = CE(h_t(f(x; W ⊙ M)), y),   M = the phase's gate (dense in "train", tasks 0..t in "retrain").

Settings follow MIND's PackNet baseline, `--packnet_original`: each
task keeps numel // N of every layer; free weights are re-drawn He-normal before each task
(`pruner.dezero`); BatchNorm running statistics are frozen after task 0 while gamma/beta are
trained and kept per task; schedules as MIND's (the same `--epochs`/`--lr` flags). Unlike the
official flag, which ranks the *untrained* tensor, pruning ranks the weights
just trained, as PackNet does. Prediction is MIND's: task-aware by the task's sub-network,
task-agnostic by the most confident sub-network.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from lifelong.data.scenario import Task
from lifelong.methods.mind import MIND
from lifelong.models.gated import FREE, gated_layers, he_normal_


class PackNet(MIND):
    model_phase, subnetwork_phase = "train", "retrain"

    def __init__(self, backbone: nn.Module, optimizer: Callable | None = None, scheduler: Callable | None = None,
                 epochs: int = 1, *, n_tasks: int, n_classes: int | None = None, train_epochs: int = 50,
                 train_optimizer: Callable | None = None, train_scheduler: Callable | None = None,
                 retrain_epochs: int = 50, retrain_optimizer: Callable | None = None,
                 retrain_scheduler: Callable | None = None, temperature: float = 6.5, logit_masking: str = "zero",
                 freeze_bn_stats_after_first: bool = True, ce_scope: str = "current"):
        # --packnet_original = self-distillation with beta 0 (`parse.py:64-66`): the network trains
        # its own free weights, nothing is distilled. Phase defaults are MIND's (cifar100_exp.sh).
        super().__init__(backbone, optimizer, scheduler, epochs, n_tasks=n_tasks, n_classes=n_classes, teacher="self",
                         beta=0.0, teacher_epochs=train_epochs, teacher_optimizer=train_optimizer,
                         teacher_scheduler=train_scheduler, distill_epochs=retrain_epochs,
                         distill_optimizer=retrain_optimizer, distill_scheduler=retrain_scheduler,
                         temperature=temperature, logit_masking=logit_masking, weight_sharing=True,
                         new_weight_init="he", per_task_bn=True,
                         freeze_bn_stats_after_first=freeze_bn_stats_after_first, ce_scope=ce_scope)

    def begin_task(self, task: Task) -> None:
        if task.id > 0:  # pruned weights come back as fresh capacity (`pruner.dezero`, `main.py:144-146`)
            for _, layer in gated_layers(self.net.backbone):
                he_normal_(layer.weight, layer.owner == FREE)
        super().begin_task(task)

    def _make_teacher(self, task: Task) -> None:
        return None  # PackNet trains the network itself

    def _allocation_scores(self, layer, teacher_layer) -> torch.Tensor:
        return layer.weight.abs()  # magnitude of the weights just trained (Mallya & Lazebnik, Sec. 3)
