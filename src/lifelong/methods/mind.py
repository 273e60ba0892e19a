"""MIND: Multi-Task Incremental Network Distillation (Bonato, Pelosin, Sabetta, Nicolosi, AAAI 2024).

One gated network holds one sub-network per task. For task t: a fresh model T_t of the same
architecture is trained from scratch on the task (phase "teacher"); task t is given a random 1/N of
every layer's still-free weights; the nested sub-network S_t (the weights of tasks 0..t, task t's
head and task t's BatchNorm) is trained with (phase "distill")

    L = CE(z_S, y) + beta * 1/2 [KL(p_T || p_S) + KL(p_S || p_T)],   p = softmax(z),

where only the weights owned by t change; then the BatchNorm layers are snapshotted for task t.
Without a task id (TAG), every sub-network j scores its own classes and the one with the largest
max softmax(z_j / tau) predicts (`selector="max_prob"`); the official code also reports the
lower-entropy one of the two most confident (`"entropy_top2"`); results.json holds both.

Implemented from the paper and the official scripts (the official code, Lsabetta/MIND,
is CC BY-NC-ND: nothing is ported); official `file:line` refer to its scripts. Decisions:

- Heads: the official bias-free classifier with the rows of task t's classes owned by t is exactly
  one bias-free head per task, trained only during its own task; that is what we keep.
- Frozen weights: the gradients of weights not owned by the current task are zeroed before each
  step, and the weights are copied back after it (as the official `ripristinate_weights`), so old
  weights stay bit-for-bit identical with any optimizer (weight decay included).
- Inference swaps gates and BatchNorm in place (no model copies) and restores the live state after.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from functools import partial
from typing import Callable, Iterator

import torch
from torch import nn
from torch.nn import functional as F

from lifelong.data.scenario import Task
from lifelong.errors import ConfigError
from lifelong.methods.base import ContinualMethod, Phase, with_lr
from lifelong.models.gated import (FREE, MAX_TASKS, BatchNormSnapshots, allocate, batchnorm_layers,
                                   batchnorm_state, gate_layers, gated_layers, he_normal_, select,
                                   set_batchnorm_state)
from lifelong.models.net import IncrementalNet
from lifelong.selection import CHOOSERS, SELECTORS

TEACHERS = ("fresh", "self")
LOGIT_MASKING = ("zero", "slice")
TEACHER_BN_MODES = ("train", "eval")
NEW_WEIGHT_INIT = ("auto", "zero", "he")
MAGNITUDE_SOURCES = ("student", "teacher")


def symmetric_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """1/2 [KL(p_T || p_S) + KL(p_S || p_T)] at temperature 1, batch mean (the official "JS" loss,
    `mind.py:52-68`: a symmetrised KL, not Jensen-Shannon). Gradients flow through p_S in both terms."""
    log_s, log_t = F.log_softmax(student_logits, 1), F.log_softmax(teacher_logits, 1)
    p_s, p_t = log_s.exp(), log_t.exp()
    return 0.5 * ((p_t * (log_t - log_s)).sum(1).mean() + (p_s * (log_s - log_t)).sum(1).mean())


@torch.no_grad()
def mind_init_(module: nn.Module) -> nn.Module:
    """A brand-new `gresnet32`'s init (`gated_resnet32.py:157-167`): conv
    N(0, 2/(k*k*C_out)) (He, fan-out), BatchNorm gamma=1 beta=0 with fresh statistics, linear He."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_parameters()
    return module


def _adamw(lr: float) -> Callable:
    return partial(torch.optim.AdamW, lr=lr, weight_decay=0.0)


def _multistep(milestones: list[int]) -> Callable:
    return partial(torch.optim.lr_scheduler.MultiStepLR, milestones=milestones, gamma=0.5)


class MIND(ContinualMethod):
    """MIND. The run-wide `optimizer`, `scheduler` and `epochs` are not used: each phase has its own."""

    model_phase, subnetwork_phase = "teacher", "distill"  # phase names: dense model, then sub-network
    supports_channels_last = False  # allocation flattens weights and ownership masks as NCHW (lifelong.speed)

    # search=continual decays beta from its strongest setting; no published start:
    # the top of conf/hparams_search/mind_optuna.yaml, 4x the official --distill_beta 5
    stability_key, stability_start = "beta", 20.0

    def __init__(self, backbone: nn.Module, optimizer: Callable | None = None, scheduler: Callable | None = None,
                 epochs: int = 1, *, n_tasks: int, n_classes: int | None = None, teacher: str = "fresh",
                 beta: float = 5.0, teacher_epochs: int = 50, teacher_optimizer: Callable | None = None,
                 teacher_scheduler: Callable | None = None, distill_epochs: int = 50,
                 distill_optimizer: Callable | None = None, distill_scheduler: Callable | None = None,
                 temperature: float = 6.5, logit_masking: str = "zero", teacher_bn_mode: str = "train",
                 weight_sharing: bool = True, new_weight_init: str = "auto", per_task_bn: bool = True,
                 freeze_bn_stats_after_first: bool = False, magnitude_source: str = "student",
                 selector: str = "max_prob", ce_scope: str = "current"):
        super().__init__(gate_layers(backbone), optimizer, scheduler, epochs, ce_scope)
        for key, value, valid in (("teacher", teacher, TEACHERS), ("logit_masking", logit_masking, LOGIT_MASKING),
                                  ("teacher_bn_mode", teacher_bn_mode, TEACHER_BN_MODES),
                                  ("new_weight_init", new_weight_init, NEW_WEIGHT_INIT),
                                  ("magnitude_source", magnitude_source, MAGNITUDE_SOURCES),
                                  ("selector", selector, tuple(SELECTORS))):
            if value not in valid:
                raise ConfigError(f"method.{key}={value!r} is unknown; valid choices: {list(valid)}")
        if not isinstance(n_tasks, int) or not 1 <= n_tasks <= MAX_TASKS:
            raise ConfigError(f"method.n_tasks={n_tasks!r} must be an integer in [1, {MAX_TASKS}] (the number of "
                              f"tasks, normally ${{scenario.n_tasks}})")
        if beta < 0 or temperature <= 0:
            raise ConfigError(f"method.beta={beta} must be >= 0 and method.temperature={temperature} > 0")
        if new_weight_init == "zero" and not weight_sharing:
            raise ConfigError("method.new_weight_init=zero with method.weight_sharing=false leaves each disjoint "
                              "sub-network all zeros; use new_weight_init=he or auto")
        self._check_backbone()
        # N: every task gets numel // N of each layer (`pruner.py:22-43`).
        self.n_tasks = n_tasks
        # Classes of the whole scenario: the width of the official masked logit vector (100 on CIFAR-100).
        self.n_classes = n_classes
        self.teacher_kind = teacher  # fresh: new model per task (default); self: --self_distillation (Sec. 1.3)
        self.beta = beta  # --distill_beta 5 in every official script (Sec. 3.2); 0: the no-distillation ablation
        # Teacher phase: 50 epochs, AdamW lr 0.005 wd 0, MultiStepLR [35] gamma 0.5 (cifar100_exp.sh, Sec. 3.2).
        self.teacher_epochs = teacher_epochs
        self.teacher_optimizer = teacher_optimizer or _adamw(0.005)
        self.teacher_scheduler = teacher_scheduler or _multistep([35])
        # Distillation phase: 50 epochs, AdamW lr 0.035 wd 0, MultiStepLR [40] gamma 0.5 (cifar100_exp.sh).
        self.distill_epochs = distill_epochs
        self.distill_optimizer = distill_optimizer or _adamw(0.035)
        self.distill_scheduler = distill_scheduler or _multistep([40])
        self.temperature = temperature  # inference tau: 6.5 on CIFAR-100 (12 TinyImageNet, 3 Core50, 4 Synbols)
        # zero: other classes' logits are 0 in CE and KD, as the official output mask (Sec. 7 item 4);
        # slice: only the task's own logits (the same as -inf masking).
        self.logit_masking = logit_masking
        self.teacher_bn_mode = teacher_bn_mode  # train: the official teacher uses batch statistics (Sec. 7 item 6)
        self.weight_sharing = weight_sharing  # true: nested sub-networks, mask <= t (official default, Sec. 1.2 step 6)
        # New weights start at 0 with sharing (they were zeroed as free weights), He-normal without (Sec. 1.2 step 5).
        self.new_weight_init = ("zero" if weight_sharing else "he") if new_weight_init == "auto" else new_weight_init
        # false: BatchNorm trained on task 0 only, then frozen and shared by every sub-network (ablation).
        self.per_task_bn = per_task_bn
        # --no_bn ablation (Sec. 1.4): running statistics frozen at task 0's from task 1 on; gamma/beta per task.
        self.freeze_bn_stats_after_first = freeze_bn_stats_after_first
        # Self-distillation allocation ranks |w| of the student (official quirk, `pruner.py:92`) or the teacher.
        self.magnitude_source = magnitude_source
        # TAG rule (`test_fn.py:73-98`): max_prob, the most confident sub-network (`total_acc`, the CSV's
        # number); entropy_top2, of the two most confident the one of lower entropy (`accuracy_e`).
        self.selector = selector
        self.snapshots = BatchNormSnapshots(self.net.backbone, n_tasks)
        self.teacher: IncrementalNet | None = None
        self._frozen: list[tuple[nn.Parameter, torch.Tensor, torch.Tensor]] = []  # (weight, trainable, anchor)

    def _check_backbone(self) -> None:
        backbone = self.net.backbone
        owned = {id(layer.weight) for _, layer in gated_layers(backbone)}
        owned |= {id(p) for _, bn in batchnorm_layers(backbone) for p in bn.parameters()}
        other = [n for n, p in backbone.named_parameters() if id(p) not in owned]
        if other:
            raise ConfigError(
                f"backbone has parameters that cannot be split between tasks (biases or other layers: {other[:4]}); "
                f"{type(self).__name__} needs bias-free Conv2d/Linear layers and BatchNorm only: "
                f"use backbone=gated_resnet32, resnet32, resnet18 or convnet")
        if not gated_layers(backbone):
            raise ConfigError("backbone has no Conv2d/Linear layer to split between tasks")

    # ----------------------------------------------------------------------------- task hooks
    def begin_task(self, task: Task) -> None:
        if task.id >= self.n_tasks:
            raise ConfigError(f"method.n_tasks={self.n_tasks} but the scenario has a task {task.id}: set "
                              f"method.n_tasks to scenario.n_tasks")
        if self.n_classes is not None and task.offset + task.n_classes > self.n_classes:
            raise ConfigError(f"method.n_classes={self.n_classes} is fewer than the scenario's classes "
                              f"(task {task.id} ends at {task.offset + task.n_classes}); set it to dataset.n_classes")
        self.task = task
        backbone = self.net.backbone
        if task.id > 0:  # BN_t starts from BN_{t-1} (Sec. 7 item 8); prediction may have swapped others in
            self.snapshots.load(backbone, task.id - 1)
        self.net.heads.append(self._new_head(task))
        self.teacher = self._make_teacher(task)

    def _new_head(self, task: Task) -> nn.Linear:
        device = next(self.net.backbone.parameters()).device
        head = nn.Linear(self.net.out_dim, task.n_classes, bias=False, device=device)  # bias-free fc (Sec. 3.1)
        with torch.no_grad():
            if task.id == 0 or self.new_weight_init == "he":
                nn.init.kaiming_normal_(head.weight)  # the fc init of `gated_resnet32.py:157-167`
            else:  # later tasks' rows were zeroed as free weights when task 0 was allocated (`pruner.py:103`)
                head.weight.zero_()
        return head

    def _make_teacher(self, task: Task) -> IncrementalNet:
        backbone = copy.deepcopy(self.net.backbone)
        select(backbone, None)  # dense: every gate open
        if self.teacher_kind == "fresh":  # a brand-new model, trained from scratch (Sec. 1.2 step 3)
            head = nn.Linear(self.net.out_dim, task.n_classes, bias=False, device=self.net.heads[-1].weight.device)
            mind_init_(backbone)
            mind_init_(head)
        else:  # the network itself with every gate open: old weights frozen, free weights trained (Sec. 1.3)
            head = copy.deepcopy(self.net.heads[task.id])
        teacher = IncrementalNet(backbone)
        teacher.heads.append(head)
        return teacher

    def set_learning_rate(self, lr: float) -> None:
        """search=continual: the distillation phase's learning rate (the phase whose loss beta weighs; the
        teacher keeps its own)."""
        self.distill_optimizer = with_lr(self.distill_optimizer, lr)

    def phases(self, task: Task) -> list[Phase]:
        return [
            Phase(self.model_phase, self.teacher_epochs, self.teacher_optimizer, self.teacher_scheduler,
                  parameters=self._phase_parameters),
            Phase(self.subnetwork_phase, self.distill_epochs, self.distill_optimizer, self.distill_scheduler,
                  parameters=self._phase_parameters),
        ]

    def fit_task(self, task: Task, fit: Callable[[Phase], None]) -> None:
        for phase in self.phases(task):
            self.phase = phase
            if phase.name == self.subnetwork_phase:
                self.allocate(task)
                self.broadcast_from_rank0(self.net.backbone)  # DDP: every rank holds rank zero's allocation
                if self.teacher is not None:
                    self.teacher.requires_grad_(False)
            fit(phase)
        self.phase = None

    def end_task(self, task: Task, data) -> None:
        super().end_task(task, data)
        self.broadcast_from_rank0(self.net.backbone)  # DDP: rank zero's BatchNorm statistics everywhere
        self.snapshots.save(self.net.backbone, task.id)  # per-task BN snapshot (Sec. 1.2 step 8)
        self.teacher = None  # used only for this task
        self._frozen = []

    # ----------------------------------------------------------------------------- allocation
    @torch.no_grad()
    def allocate(self, task: Task) -> None:
        """Give task t its share of every layer (Sec. 1.2 step 5; Sec. 1.3 for self-distillation)."""
        t = task.id
        student = gated_layers(self.net.backbone)
        teacher = gated_layers(self.teacher.backbone) if self.teacher is not None else [(None, None)] * len(student)
        from_teacher = self.teacher_kind == "self" and self.teacher is not None
        for (_, layer), (_, teacher_layer) in zip(student, teacher, strict=True):
            chosen = allocate(layer, t, self.n_tasks, self._allocation_scores(layer, teacher_layer))
            weight = layer.weight.view(-1)
            if from_teacher:  # the selected slice starts from the teacher's values (`pruner.py:98-99`)
                weight[chosen] = teacher_layer.weight.view(-1)[chosen]
            elif self.teacher_kind == "fresh" and self.new_weight_init == "he":  # disjoint: He re-draw
                where = torch.zeros_like(weight, dtype=torch.bool)
                where[chosen] = True
                he_normal_(layer.weight, where.view_as(layer.weight))
            weight[layer.owner.view(-1) == FREE] = 0  # free weights are zeroed (`pruner.py:103`)
        if from_teacher:
            self.net.heads[t].weight.copy_(self.teacher.heads[0].weight)

    def _allocation_scores(self, layer, teacher_layer) -> torch.Tensor | None:
        """None: uniformly random (default MIND); else the magnitude ranking of self-distillation."""
        if self.teacher_kind == "fresh":
            return None
        source = layer.weight if self.magnitude_source == "student" or teacher_layer is None else teacher_layer.weight
        # Free student weights are all 0 from task 1 on: ties broken at random, as `pruner.py:70-72`.
        return source.abs() + 1e-5 * torch.rand(source.shape).to(source)

    # ----------------------------------------------------------------------------- training
    def _trained_model(self) -> tuple[nn.Module, nn.Module]:
        """(backbone, head) that the current phase trains."""
        if self.phase is not None and self.phase.name == self.model_phase and self.teacher is not None:
            return self.teacher.backbone, self.teacher.heads[0]
        return self.net.backbone, self.net.heads[self.task.id]

    def _trainable_mask(self, layer) -> torch.Tensor | None:
        """Which weights of `layer` the current phase may change; None: all (a fresh teacher)."""
        if self.phase.name == self.subnetwork_phase:
            return layer.owner == self.task.id  # only task t's weights (Sec. 1.2 step 7)
        if self.teacher_kind == "fresh" and self.teacher is not None:
            return None
        return layer.owner == FREE  # the dense network trains its free weights only (Sec. 1.3)

    def _student_bn_frozen(self) -> bool:
        return self.task is not None and self.task.id > 0 and (self.freeze_bn_stats_after_first or not self.per_task_bn)

    def _phase_parameters(self) -> list[nn.Parameter]:
        backbone, head = self._trained_model()
        params = [layer.weight for _, layer in gated_layers(backbone)] + list(head.parameters())
        if backbone is not self.net.backbone or self.per_task_bn or self.task.id == 0:
            params += [p for _, bn in batchnorm_layers(backbone) for p in bn.parameters()]
        return params

    def frozen_modules(self) -> Iterator[nn.Module]:
        yield from super().frozen_modules()
        if self.teacher is not None and self.phase is not None and self.phase.name == self.subnetwork_phase \
                and self.teacher_bn_mode == "eval":
            yield self.teacher
        if self._student_bn_frozen():  # running statistics stay at task 0's
            for _, bn in batchnorm_layers(self.net.backbone):
                yield bn

    def on_train_start(self) -> None:
        """Gates and weight masks of the phase (modes are already set: `base.PhaseModes`)."""
        backbone, _ = self._trained_model()
        sub = self.phase.name == self.subnetwork_phase
        select(backbone, self.task.id if sub else None, self.weight_sharing)
        self._frozen = []
        for _, layer in gated_layers(backbone):
            trainable = self._trainable_mask(layer)
            if trainable is not None:
                self._frozen.append((layer.weight, trainable, layer.weight.detach().clone()))

    def on_before_optimizer_step(self, optimizer) -> None:
        for weight, trainable, _ in self._frozen:
            if weight.grad is not None:
                weight.grad.mul_(trainable)

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        self.restore_frozen_weights()

    @torch.no_grad()
    def restore_frozen_weights(self) -> None:
        """Copy the weights the phase may not change back: exact whatever the optimizer (`pruner.py:46-56`)."""
        for weight, trainable, anchor in self._frozen:
            weight.copy_(torch.where(trainable, weight, anchor))

    def masked_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """The current task's logits as the losses see them: padded with zeros to every class (official
        output mask) or alone ("slice")."""
        if self.logit_masking == "slice":
            return logits
        start = self.task.offset
        total = self.n_classes if self.n_classes is not None else start + self.task.n_classes
        return F.pad(logits, (start, total - start - logits.shape[1]))

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        backbone, head = self._trained_model()
        logits = self.masked_logits(head(backbone(x)))
        target = y if self.logit_masking == "zero" else y - self.task.offset
        terms = {"ce": F.cross_entropy(logits, target)}
        if self.phase.name == self.subnetwork_phase and self.beta > 0 and self.teacher is not None:
            with torch.no_grad():
                teacher_logits = self.masked_logits(self.teacher(x))
            terms["kd"] = self.beta * symmetric_kl(logits, teacher_logits)
        return terms

    def validation_step(self, batch, batch_idx: int) -> None:
        """The model being trained, on the current task (swapping sub-networks here would disturb training)."""
        x, y = batch
        backbone, head = self._trained_model()
        acc = (head(backbone(x)).argmax(1) == y - self.task.offset).float().mean()
        self.log(f"{self.phase.name}/val/acc_taw", acc, prog_bar=True, batch_size=len(y))

    # ----------------------------------------------------------------------------- prediction
    @contextmanager
    def _swapping(self):
        """Prediction swaps gates and BatchNorm in place; the live (training) state comes back after."""
        backbone = self.net.backbone
        gates = [(layer, layer.gate) for _, layer in gated_layers(backbone)]
        live_bn = batchnorm_state(backbone)
        try:
            yield live_bn
        finally:
            for layer, gate in gates:
                layer.gate = gate
            set_batchnorm_state(backbone, live_bn)

    def _use_subnetwork(self, task_id: int, live_bn: list[torch.Tensor], saved: bool) -> None:
        select(self.net.backbone, task_id, self.weight_sharing)
        if saved:
            self.snapshots.load(self.net.backbone, task_id)
        else:  # the task being trained: its BatchNorm is the live one
            set_batchnorm_state(self.net.backbone, live_bn)

    def subnetwork_logits(self, x: torch.Tensor, task_ids: list[int] | None = None) -> list[torch.Tensor]:
        """Sub-network j on task j's classes, `[B, n_classes(j)]`, for every seen task j (or `task_ids`)."""
        task_ids = range(len(self.net.heads)) if task_ids is None else task_ids
        saved = self.snapshots.saved.tolist()  # one read from the device per call, not one per sub-network
        out = []
        with self._swapping() as live_bn:
            for j in task_ids:
                self._use_subnetwork(j, live_bn, bool(saved[j]))
                out.append(self.net.heads[j](self.net.backbone(x)))
        return out

    # Evaluation through `lifelong.paths` (eval.cache=true): sub-network j is final once task j ended
    # (its weights, BatchNorm snapshot and head stay bit-identical), so its outputs on a test set are cached.
    def path_logits(self, x: torch.Tensor, task_ids: list[int]) -> list[torch.Tensor]:
        return self.subnetwork_logits(x, task_ids)

    def path_selection(self):
        return CHOOSERS[self.selector], {name: CHOOSERS[name] for name in SELECTORS}, self.temperature

    def task_aware_logits(self, x: torch.Tensor, task_id: int) -> torch.Tensor:
        return self.subnetwork_logits(x, [task_id])[0]

    def task_agnostic_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The selected sub-network's probabilities, -inf elsewhere (`test_fn.py:31-161`)."""
        return SELECTORS[self.selector](self.subnetwork_logits(x), self.temperature)[0]

    def task_agnostic_variants(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Both official selectors from one pass over the sub-networks: `acc_tag_max_prob` (the CSV's
        `total_acc`) and `acc_tag_entropy_top2` (the printed `accuracy_e`) in results.json."""
        logits = self.subnetwork_logits(x)
        scores = {name: select(logits, self.temperature)[0] for name, select in SELECTORS.items()}
        return scores[self.selector], scores

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.task_agnostic_logits(x)

    def extra_results(self) -> dict:
        """Share of the backbone's gated weights each task owns, and the share still free."""
        owners = torch.cat([layer.owner.reshape(-1).long() for _, layer in gated_layers(self.net.backbone)])
        counts = torch.bincount(owners + 1, minlength=self.n_tasks + 1).tolist()
        total = owners.numel()
        return {"weights_per_task": [c / total for c in counts[1:]], "weights_free": counts[0] / total}

    # ----------------------------------------------------------------------------- checkpoints
    def on_load_state_dict_structure(self, state_dict: dict[str, torch.Tensor]) -> None:
        super().on_load_state_dict_structure(state_dict)
        if not any(k.startswith("teacher.") for k in state_dict):  # saved after end_task: no teacher
            self.teacher = None
        while f"net.heads.{len(self.net.heads)}.weight" in state_dict:
            rows, cols = state_dict[f"net.heads.{len(self.net.heads)}.weight"].shape
            self.net.heads.append(nn.Linear(cols, rows, bias=False, device=next(self.net.backbone.parameters()).device))
