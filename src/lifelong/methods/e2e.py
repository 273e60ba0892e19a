"""End-to-End Incremental Learning, EEIL (Castro et al., ECCV 2018), FACIL `src/approach/eeil.py`.

    L = CE(z, y) + lamb * sum_{k in distilled heads} BCE(softmax(z_k / T), softmax(z*_k / T))

Task 0 trains with CE. Every later task has two phases: "train" on the task's data plus the
exemplars, distilling the old heads from the model of the previous task; then "balanced": fine-tuning
at `lr * lr_finetuning_factor` on a class-balanced set (the exemplars plus as many random images of
each new class as the memory holds per old class), distilling every head, new ones included, from
the model as it left "train" (Sec. 4.4, "a temporary distillation loss for the new classes").
FACIL distils heads `range(t - 1)` / `range(t)` in the two phases and draws as many new images in
total as there are exemplars; here the paper's reading is followed (all old heads / all heads; equally
many per class). Exemplars: the shared memory (`memory=`, random by default as FACIL's
`--exemplar-selection`; `memory.size // n_seen` per class after each task); the balanced set is a
phase `data` set the method builds, served by the runner like the task's data.
"""
from __future__ import annotations

import copy

import torch
from torch.nn import functional as F

from lifelong.data.datasets import ImageSet
from lifelong.data.scenario import Task
from lifelong.memory import require
from lifelong.methods.base import ContinualMethod, Phase, freeze


class E2E(ContinualMethod):
    keeps_old_model = True

    # search=continual decays lamb from its strongest setting (FACIL gridsearch_config.py 'eeil': lamb [10])
    stability_key, stability_start = "lamb", 10.0

    def __init__(self, *args, lamb: float = 1.0, T: float = 2.0, lr_finetuning_factor: float = 0.1,
                 finetuning_epochs: int = 40, noise_grad: bool = False, **kwargs):
        kwargs["ce_scope"] = "seen"  # FACIL eeil.py criterion: CE over every head
        super().__init__(*args, **kwargs)
        require(self.memory, "e2e")  # Sec. 5: CIFAR-100 with 2,000 exemplars
        self.lamb = lamb  # FACIL eeil.py --lamb 1: "trade-off between the terms of Eq. 1 -- L = L_C + lamb * L_D"
        self.T = T  # Sec. 4.2 / FACIL: "we set T to 2 for all our experiments"
        # Sec. 5: training starts at lr 0.1, "the same reduction ... except that the starting rate is 0.01"
        # for fine-tuning: a factor 0.1 (FACIL eeil.py __init__: 0.1; its command-line default is 0.01)
        self.lr_finetuning_factor = lr_finetuning_factor
        self.finetuning_epochs = finetuning_epochs  # FACIL eeil.py --nepochs-finetuning 40
        # Sec. 5 gradient noise (eta 0.3, gamma 0.55); FACIL eeil.py --noise-grad, off by default
        self.noise_grad = noise_grad

    def phases(self, task: Task) -> list[Phase]:
        # "train": the task's data plus the exemplars (`phase_data`); "balanced": the set built here
        phases = [Phase("train", self.epochs, self.optimizer_factory, self.scheduler_factory)]
        if task.id > 0:
            phases.append(Phase("balanced", self.finetuning_epochs, self.finetuning_optimizer, self.scheduler_factory,
                                data=self.balanced_set(task)))
        return phases

    def balanced_set(self, task: Task) -> ImageSet:
        """The exemplars plus as many random training images of each new class as the memory holds per
        old class. The draw uses torch's RNG, which the runner seeds per task: the same set on every
        DDP rank and after a resume."""
        exemplars = self.memory.as_imageset()
        per_class = len(exemplars) // max(task.offset, 1)
        generator = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, ()).item()))
        xs, ys = [exemplars.x], [exemplars.y]
        for c in task.class_range:
            index = (task.train.y == c).nonzero().flatten()
            index = index[torch.randperm(len(index), generator=generator)[:per_class]]
            xs.append(task.train.x[index])
            ys.append(task.train.y[index])
        return ImageSet(torch.cat(xs), torch.cat(ys))

    def finetuning_optimizer(self, params):
        optimizer = self.optimizer_factory(params)
        for group in optimizer.param_groups:
            group["lr"] *= self.lr_finetuning_factor
        return optimizer

    def fit_task(self, task: Task, fit) -> None:
        for phase in self.phases(task):
            self.phase = phase
            if phase.name == "balanced":  # the teacher of the balanced stage: the model after "train"
                self.old_net = freeze(copy.deepcopy(self.net))
            fit(phase)
        self.phase = None

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.net(x)
        terms = {"ce": self.cross_entropy(logits, y)}
        if self.old_net is not None:
            with torch.no_grad():
                old = self.old_net(x)
            kd = logits.new_zeros(())
            for start, size in zip(self.old_net.offsets, self.old_net.task_sizes):
                kd = kd + F.binary_cross_entropy(F.softmax(logits[:, start : start + size] / self.T, dim=1),
                                                 F.softmax(old[:, start : start + size] / self.T, dim=1))
            terms["kd"] = self.lamb * kd
        return terms

    def on_after_backward(self) -> None:
        if not self.noise_grad:
            return
        # Sec. 5 / FACIL eeil.py _noise_grad: N(0, 1) * eta / (1 + epoch)^gamma added to each gradient
        scale = 0.3 / (1 + self.current_epoch) ** 0.55
        for p in self.parameters():
            if p.grad is not None:
                p.grad.add_(torch.randn_like(p.grad) * scale)

