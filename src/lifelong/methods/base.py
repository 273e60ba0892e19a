"""The one interface every method implements.

A method is a `LightningModule` that owns an `IncrementalNet` (backbone + one head per task) and
everything else it needs across tasks (a frozen previous model, Fisher matrices, masks, encoders,
a generator, ...) as submodules or buffers, so that its whole state is in `state_dict()`. The
runner (`lifelong.run`) knows no method by name; per task it calls

    method.begin_task(task)       # grow: a new head, per-task layers, masks; snapshot what is needed
    method.fit_task(task, fit)    # one Lightning fit per `Phase` from `method.phases(task)`
    method.end_task(task, data)   # between-task work: Fisher, autoencoders, generator, BN snapshots

and then evaluates the two prediction paths on every seen task:

    method.task_aware_logits(x, u)   # logits over task u's classes only (TAW)
    method.task_agnostic_logits(x)   # logits over every class seen so far (TAG)

A training step returns the sum of the named terms of `loss_terms(x, y)`; each term is logged on
its own as `loss/<name>` (or `<phase>/loss/<name>` in a phase other than "train").

How the four methods we own fit this interface, so that none of them needs the runner changed:

- ABD (Smith et al., ICCV 2021): `end_task` trains the generator by inverting the frozen model.
  That is a `Phase` of its own (a fit whose "batches" are generator iterations, with its own Adam
  optimizer and `parameters`), or a plain loop with a progress bar. In the next task's `loss_terms`
  a synthetic batch from the frozen generator joins the real one: local CE on real data, head-only
  CE on detached features of real + synthetic, importance-weighted feature distillation against
  `old_net`. The generator and `old_net` are listed in `frozen_modules()` of the training phase, so
  they are in eval mode there and their parameters never reach its optimizer; in the synthesis phase
  the generator is what trains, so it is in train mode (its BatchNorm normalises with batch statistics).
- MIND (Bonato et al., AAAI 2024): `phases()` returns two phases, "teacher" (a fresh model of the
  same architecture, a submodule, trained from scratch on the task) and "distill" (the gated
  sub-network, CE + beta * symmetric KL to the teacher). `begin_task` allocates the task's share of
  weights (owner maps are buffers); `end_task` snapshots the task's BatchNorm statistics. It
  overrides both prediction paths: task-aware uses the task's sub-network; task-agnostic runs every
  sub-network and keeps the most confident one.
- CLR (Ge et al., ICCV 2023): the backbone is frozen and pretrained; `begin_task` adds the task's
  reprogramming kernels, BatchNorm copy and head; `task_aware_logits(x, u)` routes through task u's
  reprogramming, `task_agnostic_logits` picks the most confident task.
- EBLL (Rannen Triki et al., ICCV 2017): `phases()` returns "warmup" (new head only, via the
  phase's `parameters`) and "train" (CE + LwF distillation + code loss against every old encoder);
  `end_task` trains the task's autoencoder on cached features of the frozen model and keeps its
  encoder (a submodule in a `ModuleList`).

Train and eval modes are set in one place. Lightning 2.x does not call `train()` when a fit starts,
and after each validation it puts every submodule back in the mode it had before. So the runner
adds `PhaseModes` to every fit: at the start of training and of every epoch it calls
`method.set_phase_modes()`, which puts the method in train mode and every module of
`frozen_modules()` (for the current `self.phase`) in eval mode. A method only declares, per phase,
what is frozen; work trained outside a fit (in `end_task`) sets its own modes.

Defaults here follow FACIL (Masana et al., TPAMI 2022), whose `Inc_Learning_Appr` is the model.
"""
from __future__ import annotations

import contextlib
import copy
import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from lifelong import distributed
from lifelong.data.datamodule import concat
from lifelong.data.scenario import Task
from lifelong.errors import ConfigError
from lifelong.models.net import IncrementalNet

CE_SCOPES = ("current", "seen")


@dataclass
class Phase:
    """One Lightning fit inside a task, with its own epochs, optimizer and data.

    `data` is "task" (the current task's training split), "seen" (every task so far, pooled), an
    `ImageSet`/`Dataset` the method built (BiC's held-out split, E2E's balanced set: served and
    augmented like the task's data) or a ready `DataLoader` (e.g. noise batches for a generator; such
    batches are passed on untouched). What a phase trains on is `method.phase_data(phase, train)`.
    `parameters` returns what the optimizer trains; by default every parameter that requires grad
    outside `frozen_modules()`. `validate` runs the task's validation split after each epoch.
    """

    name: str
    epochs: int
    optimizer: Callable[..., torch.optim.Optimizer]
    scheduler: Callable[..., Any] | None = None
    data: Any = "task"
    parameters: Callable[[], Iterable[nn.Parameter]] | None = None
    callbacks: list = field(default_factory=list)
    validate: bool = True


class PhaseModes(L.Callback):
    """The one place where modes are set for training: `method.set_phase_modes()` when a fit's
    training starts and at the start of every epoch (Lightning 2.x sets no mode itself)."""

    def on_train_start(self, trainer, pl_module) -> None:
        pl_module.set_phase_modes()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        pl_module.set_phase_modes()


def require_pretrained(backbone: nn.Module, method: str, random_backbone: bool) -> None:
    """Methods that freeze their backbone (CLR, linear) refuse a randomly initialised one unless asked.

    Backbones built from weights record them in `backbone.weights` (torchvision ResNets, AlexNet).
    """
    if getattr(backbone, "weights", None) is None and not random_backbone:
        raise ConfigError(
            f"method={method} freezes its backbone, but backbone.weights is null (a random network): set "
            f"backbone.weights (e.g. backbone=resnet50 backbone.weights=IMAGENET1K_V1, or a state-dict path), "
            f"or method.random_backbone=true to train on a frozen random network on purpose")


def with_lr(factory: Callable, lr: float) -> Callable:
    """An optimizer factory (`params -> Optimizer`, a Hydra `_partial_`) with its learning rate replaced."""
    return functools.partial(factory, lr=lr)


def freeze(module: nn.Module) -> nn.Module:
    """Stop gradients and put the module in eval mode (BatchNorm statistics stay as they are)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


class ContinualMethod(L.LightningModule):
    """Base class: fine-tuning with per-task heads. Subclasses add their own terms and hooks.

    Args:
        backbone: feature extractor exposing `out_dim`.
        optimizer: factory `params -> Optimizer` (Hydra `_partial_`), used for the "train" phase.
        scheduler: factory `optimizer -> LRScheduler`, stepped per epoch, or None.
        epochs: epochs of the "train" phase of every task.
        ce_scope: "current" — cross-entropy over the current task's head only (FACIL's default,
            `all_outputs=False`); "seen" — over every head so far. With exemplars in the memory the
            CE is over every head (exemplars carry old labels; FACIL's criteria do the same).
        memory: an `ExemplarMemory` (`lifelong.memory`, config group `memory/`) or None. The runner
            passes it when `memory=` is not `none`; the base class then trains every "task" phase on
            the task's data plus the exemplars (`phase_data`) and updates it in `end_task`
            (`update_memory`).
    """

    keeps_old_model: bool = False  # set by methods that need a frozen copy of the previous model
    # Debug cap on every loop's length (config key `loop_limit`, set by the runner; debug=smoke: 1).
    # The runner caps each phase's epochs with it; a method's own loops (autoencoder epochs, generator
    # iterations, bias-layer epochs, prototype passes) take their length through `loop_length(n)`.
    loop_limit: int | None = None
    # Methods built on every task bringing new classes (old-vs-new class balancing, synthetic images of
    # old classes) set this; `check_scenario` then refuses domain-incremental scenarios.
    class_incremental_only: bool = False
    validate_task_aware: bool = False  # validation accuracy on the current task's head (val/acc_taw)
    # The continual hyperparameter framework (search=continual, lifelong.continual_search): the attribute
    # (an __init__ argument) that weighs stability against plasticity, larger = more stable (LwF's lamb,
    # EWC's lamb, ABD's mu, MIND's beta), and its strongest setting, where each task's search starts
    # (cite its source). None: the method has no such weight and search=continual refuses it.
    stability_key: str | None = None
    stability_start: float | None = None

    def __init__(self, backbone: nn.Module, optimizer: Callable, scheduler: Callable | None = None,
                 epochs: int = 1, ce_scope: str = "current", memory: nn.Module | None = None):
        super().__init__()
        if ce_scope not in CE_SCOPES:
            raise ConfigError(f"method.ce_scope={ce_scope!r} is unknown; valid choices: {list(CE_SCOPES)}")
        self.net = IncrementalNet(backbone)
        self.old_net: IncrementalNet | None = None
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.epochs, self.ce_scope = epochs, ce_scope
        self.task: Task | None = None
        self.phase: Phase | None = None
        self.memory = memory  # a submodule: its buffers are in state_dict()

    # ----------------------------------------------------------------------------- task hooks
    def check_scenario(self, scenario) -> None:
        """Called once by the runner before any training: refuse a scenario this method cannot learn."""
        if self.class_incremental_only and getattr(scenario, "domain_incremental", False):
            raise ConfigError(
                f"method={type(self).__name__} assumes every task brings new classes (disjoint class blocks), "
                f"but scenario=domain_incremental repeats the same classes each task; use scenario=class_incremental "
                f"or a method that handles shared label spaces (finetune, joint, lwf, ewc, mind, ...)"
            )
        from lifelong.data.datasets import ImageSet

        if getattr(self, "memory", None) is not None and any(not isinstance(t.train, ImageSet) for t in scenario):
            raise ConfigError("memory= keeps exemplars as uint8 images in memory, but this dataset is file-backed "
                              "(imagenet, imagenet100, image folders); use memory=none or an in-memory dataset")

    def begin_task(self, task: Task) -> None:
        """Called before training on `task`: by default adds the task's head."""
        self.task = task
        self.net.add_head(task.n_classes)

    def set_learning_rate(self, lr: float) -> None:
        """search=continual / schedule: train with learning rate `lr` from the next task on. By default the
        `optimizer=` factory (the "train" phase's optimizer); methods that train with their own optimizers
        set theirs."""
        self.optimizer_factory = with_lr(self.optimizer_factory, lr)

    def phases(self, task: Task) -> list[Phase]:
        """The fits that make up training on `task`; by default one "train" phase."""
        return [Phase("train", self.epochs, self.optimizer_factory, self.scheduler_factory)]

    def fit_task(self, task: Task, fit: Callable[[Phase], None]) -> None:
        """Runs each phase as its own Lightning fit (`fit` builds the trainer and the data)."""
        for phase in self.phases(task):
            self.phase = phase
            fit(phase)
        self.phase = None

    def phase_data(self, phase: Phase, train):
        """THE data hook: the training set (`ImageSet` or `Dataset`, labels global) of `phase`, given
        `train`, the data its `phase.data` names ("task"/"seen": those tasks' training splits; an
        `ImageSet`/`Dataset`: that set). The runner serves it with the task's batch augmentation and
        validation split. Default: a "task" phase gets the exemplars of `self.memory` added; every
        other phase its data unchanged. Methods with separate streams (ER, DER) return `train` alone
        and draw `self.memory.sample(n)` in `loss_terms`."""
        if phase.data == "task" and self.has_exemplars():
            return concat([train, self.memory.as_imageset()])
        return train

    def has_exemplars(self) -> bool:
        return self.memory is not None and len(self.memory) > 0

    def end_task(self, task: Task, data) -> None:
        """Called after training on `task`; `data.batches(...)` iterates its training data."""
        # Under DDP a rank's BatchNorm running statistics include its own share of the last batch: rank zero's
        # on every rank, so that the frozen copy and what is computed from here on are the same everywhere.
        self.broadcast_from_rank0(self.net)
        if self.keeps_old_model:
            self.old_net = freeze(copy.deepcopy(self.net))
        if self.memory is not None:
            self.update_memory(task)

    def update_memory(self, task: Task, train=None, per_class: int | None = None) -> None:
        """After a task: the memory selects exemplars of its classes (from `train`, default the task's
        training split; `per_class` overrides the budget) with the model as it is now (eval mode, no
        augmentation; FACIL selects with the test transform). Methods that fill the memory online
        (ER, DER) override this with `self.memory.record()`."""
        device = next(self.net.parameters()).device

        def features(x):
            return self.net.features(task.augment(x.to(device)))

        def logits(x):
            return self.net(task.augment(x.to(device)))

        with self.eval_mode():
            self.memory.update(task.train if train is None else train, list(task.class_range), features=features,
                               logits=logits, per_class=per_class)

    @contextlib.contextmanager
    def eval_mode(self):
        """Everything in eval mode for work between tasks; every module's mode is restored after."""
        modes = {m: m.training for m in self.modules()}
        self.eval()
        try:
            yield
        finally:
            for m, mode in modes.items():
                m.training = mode

    def frozen_modules(self) -> Iterator[nn.Module]:
        """Submodules that must stay in eval mode and out of every optimizer."""
        if self.old_net is not None:
            yield self.old_net

    def loop_length(self, n: int) -> int:
        """The length to run a loop of nominal length `n` (epochs, iterations): `n`, or `loop_limit`
        when that is smaller. Every loop a method runs outside a phase asks this, so `debug=smoke`
        shortens it without a method key in conf/debug/smoke.yaml."""
        return n if self.loop_limit is None else min(n, self.loop_limit)

    # ----------------------------------------------------------------------------- training
    def loss_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named loss terms of one batch; the training loss is their sum."""
        return {"ce": self.cross_entropy(self.net(x), y)}

    def cross_entropy(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.ce_scope == "current" and not self.has_exemplars():
            start = self.task.offset
            return F.cross_entropy(logits[:, start : start + self.task.n_classes], y - start)
        return F.cross_entropy(logits, y)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        terms = self.loss_terms(*batch) if isinstance(batch, (tuple, list)) else self.loss_terms(batch, None)
        loss = sum(terms.values())
        prefix = "loss" if self.phase is None or self.phase.name == "train" else f"{self.phase.name}/loss"
        batch_size = len(batch[0]) if isinstance(batch, (tuple, list)) else None
        for name, value in terms.items():
            self.log(f"{prefix}/{name}", value.detach(), batch_size=batch_size)
        self.log(f"{prefix}/total", loss.detach(), prog_bar=True, batch_size=batch_size)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        """`val/loss` and `val/acc_tag` over every seen class; with `validate_task_aware`, `val/acc_taw`
        on the current task's classes (what methods that select epochs per task monitor)."""
        x, y = batch
        if self.validate_task_aware:
            logits, y, name = self.task_aware_logits(x, self.task.id), y - self.task.offset, "val/acc_taw"
        else:
            logits, name = self.task_agnostic_logits(x), "val/acc_tag"
        self.log("val/loss", F.cross_entropy(logits, y), batch_size=len(y), sync_dist=True)
        self.log(name, (logits.argmax(1) == y).float().mean(), prog_bar=True, batch_size=len(y), sync_dist=True)

    def trainable_parameters(self) -> list[nn.Parameter]:
        frozen = {id(p) for m in self.frozen_modules() for p in m.parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in frozen]

    def configure_optimizers(self):
        phase = self.phase or self.phases(self.task)[0]
        params = list(phase.parameters() if phase.parameters else self.trainable_parameters())
        if not params:
            raise RuntimeError(f"phase {phase.name!r} of {type(self).__name__} has no trainable parameters")
        optimizer = phase.optimizer(params)
        if phase.scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": phase.scheduler(optimizer), "interval": "epoch"}}

    def train(self, mode: bool = True):
        """`train(True)` puts everything in train mode except `frozen_modules()`, which stay in eval."""
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    def set_phase_modes(self) -> None:
        """The modes of the current phase: train mode, `frozen_modules()` in eval (see `PhaseModes`)."""
        self.train(True)

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """Keeps the raw batch (uint8 images before augmentation) as `self.raw_batch`: what online
        memories store (ER, DER add the stream's not-augmented images, as Mammoth does)."""
        self.raw_batch = batch
        return batch

    # ----------------------------------------------------------------------------- prediction
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def task_aware_logits(self, x: torch.Tensor, task_id: int) -> torch.Tensor:
        """Logits over task `task_id`'s classes only: `[B, n_classes(task_id)]`."""
        start, size = self.net.offsets[task_id], self.net.task_sizes[task_id]
        return self.net(x)[:, start : start + size]

    def task_agnostic_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Scores over every class seen so far: `[B, n_seen_classes]`; the argmax is the prediction."""
        return self.net(x)

    def task_agnostic_variants(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`(task_agnostic_logits(x), {name: scores})`: what evaluation calls. Methods with more than one
        task-agnostic rule (MIND's two selectors) return the others by name, computed from the same
        forward passes; each is reported as `acc_tag_<name>` in results.json."""
        return self.task_agnostic_logits(x), {}

    def test_scores(self, x: torch.Tensor, task_id: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """`(task_aware_logits(x, task_id), *task_agnostic_variants(x))`: what evaluation calls per test
        batch. A method that keeps this class's three prediction methods gets both from one forward
        pass (they slice the same `self.net(x)`): evaluation then costs one pass per batch, not two."""
        own = ContinualMethod
        if all(getattr(type(self), name) is getattr(own, name)
               for name in ("task_aware_logits", "task_agnostic_logits", "task_agnostic_variants")):
            logits = self.net(x)
            start, size = self.net.offsets[task_id], self.net.task_sizes[task_id]
            return logits[:, start : start + size], logits, {}
        scores, others = self.task_agnostic_variants(x)
        return self.task_aware_logits(x, task_id), scores, others

    # ----------------------------------------------------------------------------- DDP (between fits)
    # With `hardware=ddp` every rank runs the task loop, so `end_task` runs on every rank; what it
    # computes must end identical everywhere. Without DDP all of these are no-ops (lifelong.distributed).
    def shard(self, batches: Iterable) -> Iterator:
        """This rank's share of `batches` (every world_size-th): split between-task passes over data."""
        return distributed.shard(batches)

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks, in place (sums and counts of a sharded pass, e.g. EWC's Fisher)."""
        return distributed.all_reduce_sum(tensor)

    def all_reduce_mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """Mean over ranks, in place."""
        return distributed.all_reduce_mean(tensor)

    def broadcast_from_rank0(self, module: nn.Module | torch.Tensor) -> nn.Module | torch.Tensor:
        """Rank zero's parameters and buffers on every rank (a generator, autoencoders, masks, BN snapshots
        trained or chosen between tasks)."""
        return distributed.broadcast(module, src=0)

    @torch.no_grad()
    def old_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.old_net(x)

    def extra_results(self) -> dict:
        """Method-specific numbers added to results.json after each task (e.g. parameters per task).
        Subclasses extend `super().extra_results()`: the memory's per-task stats are there."""
        return {"memory": self.memory.history} if self.memory is not None else {}

    # ----------------------------------------------------------------------------- checkpoints
    def on_load_state_dict_structure(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Before `load_state_dict` on resume: recreate modules that exist only after a task ended.

        The resume contract (`lifelong.run.restore`, `lifelong.resume`): a resumed run builds the
        method from the same config, calls `begin_task(task)` for every finished task in order (with
        the same per-task seed, but without training, `end_task` or evaluation), then this hook
        with the saved `state_dict`, then `load_state_dict(state_dict)` (strict). So:
        - everything a method needs later is in `state_dict()` (submodules, parameters, buffers);
          plain Python attributes set in `end_task` or during training are lost on resume;
        - `begin_task` only grows structure (heads, per-task layers, masks) and must not depend on
          what `end_task` of the previous task made;
        - this hook creates what `end_task` creates (a frozen old model, a generator, one encoder
          per task, BatchNorm snapshots), shaped from the keys and shapes in `state_dict`.
        Within a task, each phase resumes from its Lightning checkpoint of the last finished epoch,
        which holds the whole `state_dict()` as well.
        """
        if self.old_net is None and any(k.startswith("old_net.") for k in state_dict):
            self.old_net = freeze(copy.deepcopy(self.net))
