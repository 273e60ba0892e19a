"""Large Scale Incremental Learning: Bias Correction (Wu et al., CVPR 2019), FACIL `src/approach/bic.py`.

    stage 1:  L = (1 - lamb) * CE(q(z), y) + lamb * KD_T(q(z_old_heads), q(z*)),   lamb = n_old / n_seen
    stage 2:  q_t(z_t) = alpha_t * z_t + beta_t  trained on a held-out set,  L = CE(q(z), y) + 0.1 * beta_t^2 / 2

z are the logits of every head, q applies each task's bias layer (alpha, beta) to its head's logits,
z* the frozen model of the previous task (through the old bias layers). Stage 1 trains the network
on the task's data (less the held-out share) plus the training exemplars; stage 2 ("bias" phase)
trains only the new task's alpha and beta, on a held-out set with equally many images of every
seen class: for each new class the first `val_exemplar_fraction` of its budget is taken out of
training (FACIL), and old classes keep that many of their held-out images. Both sets are
`ExemplarMemory`s (`lifelong.memory`): the training exemplars are the shared memory (`memory=`,
`memory.size` the total budget, held-out share included), the held-out images a second one; the
held-out set reaches the "bias" phase as its `data`.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from lifelong.data.datasets import ImageSet
from lifelong.data.scenario import Task
from lifelong.errors import ConfigError
from lifelong.data.datamodule import concat
from lifelong.losses import distillation
from lifelong.memory import ExemplarMemory, require
from lifelong.methods.base import ContinualMethod, Phase


class BiasLayer(nn.Module):
    """alpha * z + beta with two scalars (Eq. 4); alpha = 1, beta = 0 until stage 2 trains them."""

    def __init__(self):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1))
        self.beta = nn.Parameter(torch.zeros(1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.alpha * z + self.beta


class BiC(ContinualMethod):
    keeps_old_model = True

    def __init__(self, *args, val_exemplar_fraction: float = 0.1, bias_epochs: int = 200, bias_lr: float = 0.1,
                 beta_l2: float = 0.1, T: float = 2.0, lamb: float | None = None, **kwargs):
        kwargs["ce_scope"] = "seen"  # FACIL bic.py criterion: CE over every head
        super().__init__(*args, **kwargs)
        # FACIL bic.py asserts exemplars; Sec. 6.1: CIFAR-100, 2,000 exemplars
        require(self.memory, "bic")
        if self.memory.per_class is not None:
            raise ConfigError(f"memory.per_class={self.memory.per_class}: method=bic splits a total budget "
                              f"(memory.size) into training and held-out exemplars; set memory.per_class=null")
        if not 0 < val_exemplar_fraction < 1:
            raise ConfigError(f"method.val_exemplar_fraction={val_exemplar_fraction} must be in (0, 1)")
        # The stage-2 images: a second memory, outside the training one (random: it is filled from the
        # first n_val images of each new class, all of which it keeps)
        self.held_out = ExemplarMemory("random", size=self.memory.size, batch_size=self.memory.batch_size)
        # FACIL bic.py --val-exemplar-percentage 0.1; Sec. 6.1: "train/validation split on the exemplars is 9:1"
        self.val_exemplar_fraction = val_exemplar_fraction
        # FACIL bic.py --num-bias-epochs 200: "epochs_per_eval=100 and epoch_val_times=2" in the original code
        self.bias_epochs = bias_epochs
        # FACIL bic.py: the bias optimizer is SGD at the main lr (0.1 there), "momentum is always 0.9"
        self.bias_lr = bias_lr
        self.beta_l2 = beta_l2  # FACIL bic.py: "in their code, they apply a 0.1 * L2-loss to ... beta"
        self.T = T  # Sec. 6.2: "The temperature scalar T in Eq. 1 is set to 2"
        self.lamb = lamb  # None: Sec. 3 "lambda is set to n / (n + m)" (FACIL lamb=-1)
        self.bias_layers = nn.ModuleList()
        self._train_split: ImageSet | None = None

    # ----------------------------------------------------------------- budget and data
    def split_budget(self, n_seen_classes: int) -> tuple[int, int]:
        """(training exemplars, held-out images) per class; FACIL bic.py Stage 0."""
        per_class = self.memory.size // n_seen_classes
        n_val = math.ceil(self.val_exemplar_fraction * per_class)
        return per_class - n_val, n_val

    def begin_task(self, task: Task) -> None:
        super().begin_task(task)
        self.bias_layers.append(BiasLayer().to(self.net.heads[0].weight.device))

    def fit_task(self, task: Task, fit) -> None:
        # Stage 0: the first n_val images of each new class go to the held-out memory (old classes keep
        # n_val of theirs); the rest is the task's training split. Runs again when a task resumes
        # mid-way: the state it starts from (after the previous task) is restored, so it is the same.
        _, n_val = self.split_budget(task.offset + task.n_classes)
        held = torch.zeros(len(task.train), dtype=torch.bool)
        for c in task.class_range:
            held[(task.train.y == c).nonzero().flatten()[:n_val]] = True
        self.held_out.update(task.train.subset(held.nonzero().flatten()), list(task.class_range), per_class=n_val)
        self._train_split = task.train.subset((~held).nonzero().flatten())
        super().fit_task(task, fit)

    def phases(self, task: Task) -> list[Phase]:
        # "train": the training split plus the training exemplars (`phase_data`)
        phases = [Phase("train", self.epochs, self.optimizer_factory, self.scheduler_factory, data=self._train_split,
                        parameters=self.net.parameters)]
        if task.id > 0:
            bias = lambda params: torch.optim.SGD(params, lr=self.bias_lr, momentum=0.9)
            phases.append(Phase("bias", self.bias_epochs, bias, None, data=self.held_out.as_imageset(),
                                parameters=self.bias_layers[task.id].parameters, validate=False))
        return phases

    def phase_data(self, phase, train):
        if phase.name == "train" and self.has_exemplars():
            return concat([train, self.memory.as_imageset()])
        return train

    def update_memory(self, task: Task) -> None:
        per_class, _ = self.split_budget(task.offset + task.n_classes)
        super().update_memory(task, train=self._train_split, per_class=per_class)

    def frozen_modules(self):
        yield from super().frozen_modules()
        if self.phase is not None and self.phase.name == "bias":
            yield self.net  # FACIL: self.model.eval() while the bias layer trains

    # ----------------------------------------------------------------- the bias-corrected output
    def bias_forward(self, logits: torch.Tensor) -> torch.Tensor:
        """Each head's block of logits through its task's bias layer."""
        sizes, width = [], 0
        for size in self.net.task_sizes:  # the old model's logits cover only the old heads
            if width == logits.shape[1]:
                break
            sizes.append(size)
            width += size
        blocks = torch.split(logits, sizes, dim=1)
        return torch.cat([layer(z) for layer, z in zip(self.bias_layers, blocks)], dim=1)

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.phase is not None and self.phase.name == "bias":
            with torch.no_grad():
                logits = self.net(x)
            beta = self.bias_layers[self.task.id].beta
            return {"ce": F.cross_entropy(self.bias_forward(logits), y), "beta_l2": self.beta_l2 * beta.pow(2).sum() / 2}
        out = self.bias_forward(self.net(x))
        n_old, n_seen = self.task.offset, out.shape[1]
        lamb = n_old / n_seen if self.lamb is None else self.lamb
        if self.old_net is None:
            return {"ce": self.cross_entropy(out, y)}
        with torch.no_grad():
            old = self.bias_forward(self.old_net(x))
        terms = {"kd": lamb * distillation(out[:, :n_old], old, self.T)}
        terms["ce"] = (1 - lamb if self.lamb is None else 1.0) * self.cross_entropy(out, y)
        return terms

    def task_aware_logits(self, x: torch.Tensor, task_id: int) -> torch.Tensor:
        start, size = self.net.offsets[task_id], self.net.task_sizes[task_id]
        return self.task_agnostic_logits(x)[:, start : start + size]

    def task_agnostic_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias_forward(self.net(x))

    def extra_results(self) -> dict:
        return {**super().extra_results(), "held_out": self.held_out.history,
                "bias": [[layer.alpha.item(), layer.beta.item()] for layer in self.bias_layers]}
