"""Large Scale Incremental Learning: Bias Correction (Wu et al., CVPR 2019), FACIL `src/approach/bic.py`.

    stage 1:  L = (1 - lamb) * CE(q(z), y) + lamb * KD_T(q(z_old_heads), q(z*)),   lamb = n_old / n_seen
    stage 2:  q_t(z_t) = alpha_t * z_t + beta_t  trained on a held-out set,  L = CE(q(z), y) + 0.1 * beta_t^2 / 2

z are the logits of every head, q applies each task's bias layer (alpha, beta) to its head's logits,
z* the frozen model of the previous task (through the old bias layers). Stage 1 trains the network
on the task's data (less the held-out share) plus the training exemplars; stage 2 ("bias" phase)
trains only the new task's alpha and beta, on a held-out set with equally many images of every
seen class: for each new class the first `val_exemplar_fraction` of its budget is taken out of
training (FACIL), and old classes keep that many of their held-out images.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from lifelong.data.datasets import ImageSet
from lifelong.data.scenario import Task
from lifelong.errors import ConfigError
from lifelong.losses import distillation
from lifelong.methods.base import ContinualMethod, Phase
from lifelong.rehearsal import ExemplarBuffer, adopt_shared_budget, augment_raw, shuffled_batches


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

    def __init__(self, *args, memory_size: int = 2000, val_exemplar_fraction: float = 0.1,
                 bias_epochs: int = 200, bias_lr: float = 0.1, beta_l2: float = 0.1, T: float = 2.0,
                 lamb: float | None = None, batch_size: int = 128, **kwargs):
        kwargs["ce_scope"] = "seen"  # FACIL bic.py criterion: CE over every head
        super().__init__(*args, **kwargs)
        memory_size = adopt_shared_budget(self, memory_size)
        if memory_size <= 0:
            raise ConfigError(f"method.memory_size={memory_size} must be positive: BiC needs exemplars "
                              "(FACIL bic.py asserts it)")
        if not 0 < val_exemplar_fraction < 1:
            raise ConfigError(f"method.val_exemplar_fraction={val_exemplar_fraction} must be in (0, 1)")
        self.exemplars = ExemplarBuffer(memory_size, seed=0)  # Sec. 6.1: CIFAR-100, 2,000 exemplars
        self.held_out = ExemplarBuffer(memory_size, seed=1)  # stage-2 images, outside the training budget
        # FACIL bic.py --val-exemplar-percentage 0.1; Sec. 6.1: "train/validation split on the exemplars is 9:1"
        self.val_exemplar_fraction = val_exemplar_fraction
        # FACIL bic.py --num-bias-epochs 200: "epochs_per_eval=100 and epoch_val_times=2" in the original code
        self.bias_epochs = bias_epochs
        # FACIL bic.py: the bias optimizer is SGD at the main lr (0.1 there), "momentum is always 0.9"
        self.bias_lr = bias_lr
        self.beta_l2 = beta_l2  # FACIL bic.py: "in their code, they apply a 0.1 * L2-loss to ... beta"
        self.T = T  # Sec. 6.2: "The temperature scalar T in Eq. 1 is set to 2"
        self.lamb = lamb  # None: Sec. 3 "lambda is set to n / (n + m)" (FACIL lamb=-1)
        self.batch_size = batch_size
        self.bias_layers = nn.ModuleList()
        self._train_split: ImageSet | None = None

    # ----------------------------------------------------------------- budget and data
    def split_budget(self, n_seen_classes: int) -> tuple[int, int]:
        """(training exemplars, held-out images) per class; FACIL bic.py Stage 0."""
        per_class = self.exemplars.size // n_seen_classes
        n_val = math.ceil(self.val_exemplar_fraction * per_class)
        return per_class - n_val, n_val

    def begin_task(self, task: Task) -> None:
        super().begin_task(task)
        self.bias_layers.append(BiasLayer().to(self.net.heads[0].weight.device))

    def fit_task(self, task: Task, fit) -> None:
        # Stage 0 (idempotent, so that a resumed task rebuilds the same split): the first n_val images
        # of each new class are held out; old classes keep n_val of theirs.
        n_seen = task.offset + task.n_classes
        _, n_val = self.split_budget(n_seen)
        held_x, held_y = [], []
        for c in range(n_seen):
            index = (self.held_out.labels == c).nonzero().flatten()[:n_val]
            if c >= task.offset and len(index) == 0:
                held_x.append(task.train.x[(task.train.y == c).nonzero().flatten()[:n_val]])
                held_y.append(torch.full((len(held_x[-1]),), c, dtype=torch.long))
            else:
                held_x.append(self.held_out.images[index].cpu())
                held_y.append(self.held_out.labels[index].cpu())
        self.held_out.set(torch.cat(held_x), torch.cat(held_y))
        keep = torch.ones(len(task.train), dtype=torch.bool)
        for c in task.class_range:
            keep[(task.train.y == c).nonzero().flatten()[:n_val]] = False
        self._train_split = task.train.subset(keep.nonzero().flatten())
        super().fit_task(task, fit)

    def phases(self, task: Task) -> list[Phase]:
        train = self._train_split
        if len(self.exemplars):
            exemplars = self.exemplars.as_imageset()
            train = ImageSet(torch.cat([train.x, exemplars.x]), torch.cat([train.y, exemplars.y]))
        phases = [Phase("train", self.epochs, self.optimizer_factory, self.scheduler_factory,
                        data=shuffled_batches(train, self.batch_size), parameters=self.net.parameters)]
        if task.id > 0:
            bias = lambda params: torch.optim.SGD(params, lr=self.bias_lr, momentum=0.9)
            phases.append(Phase("bias", self.bias_epochs, bias, None,
                                data=shuffled_batches(self.held_out.as_imageset(), self.batch_size),
                                parameters=self.bias_layers[task.id].parameters, validate=False))
        return phases

    def end_task(self, task: Task, data) -> None:
        super().end_task(task, data)  # the frozen previous model
        per_class, _ = self.split_budget(task.offset + task.n_classes)
        self.exemplars.keep_class_balanced(self._train_split, task.class_range, task.offset + task.n_classes,
                                        per_class=per_class)

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
        x = augment_raw(self.task, x)
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
        return {"memory": self.exemplars.stats(), "held_out": self.held_out.stats(),
                "bias": [[layer.alpha.item(), layer.beta.item()] for layer in self.bias_layers]}
