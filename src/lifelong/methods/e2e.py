"""End-to-End Incremental Learning, EEIL (Castro et al., ECCV 2018), FACIL `src/approach/eeil.py`.

    L = CE(z, y) + lamb * sum_{k in distilled heads} BCE(softmax(z_k / T), softmax(z*_k / T))

Task 0 trains with CE. Every later task has two phases: "train" on the task's data plus the
exemplars, distilling the old heads from the model of the previous task; then "balanced": fine-tuning
at `lr * lr_finetuning_factor` on a class-balanced set (the exemplars plus as many random images of
each new class as the memory holds per old class), distilling every head, new ones included, from
the model as it left "train" (Sec. 4.4, "a temporary distillation loss for the new classes").
FACIL distils heads `range(t - 1)` / `range(t)` in the two phases and draws as many new images in
total as there are exemplars; here the paper's reading is followed (all old heads / all heads; equally
many per class). After the task the memory keeps `memory_size // n_seen` random images per class.
"""
from __future__ import annotations

import copy

import torch
from torch.nn import functional as F

from lifelong.data.datasets import ImageSet
from lifelong.data.scenario import Task
from lifelong.methods.base import ContinualMethod, Phase, freeze
from lifelong.rehearsal import ExemplarBuffer, adopt_shared_budget, augment_raw, shuffled_batches


class E2E(ContinualMethod):
    keeps_old_model = True

    # search=continual decays lamb from its strongest setting (FACIL gridsearch_config.py 'eeil': lamb [10])
    stability_key, stability_start = "lamb", 10.0

    def __init__(self, *args, memory_size: int = 2000, lamb: float = 1.0, T: float = 2.0,
                 lr_finetuning_factor: float = 0.1, finetuning_epochs: int = 40, noise_grad: bool = False,
                 batch_size: int = 128, **kwargs):
        kwargs["ce_scope"] = "seen"  # FACIL eeil.py criterion: CE over every head
        super().__init__(*args, **kwargs)
        memory_size = adopt_shared_budget(self, memory_size)
        self.exemplars = ExemplarBuffer(memory_size, seed=0)  # Sec. 5: CIFAR-100 with 2,000 exemplars
        self.lamb = lamb  # FACIL eeil.py --lamb 1: "trade-off between the terms of Eq. 1 -- L = L_C + lamb * L_D"
        self.T = T  # Sec. 4.2 / FACIL: "we set T to 2 for all our experiments"
        # Sec. 5: training starts at lr 0.1, "the same reduction ... except that the starting rate is 0.01"
        # for fine-tuning: a factor 0.1 (FACIL eeil.py __init__: 0.1; its command-line default is 0.01)
        self.lr_finetuning_factor = lr_finetuning_factor
        self.finetuning_epochs = finetuning_epochs  # FACIL eeil.py --nepochs-finetuning 40
        # Sec. 5 gradient noise (eta 0.3, gamma 0.55); FACIL eeil.py --noise-grad, off by default
        self.noise_grad = noise_grad
        self.batch_size = batch_size

    def phases(self, task: Task) -> list[Phase]:
        train = task.train
        if len(self.exemplars):
            exemplars = self.exemplars.as_imageset()
            train = ImageSet(torch.cat([train.x, exemplars.x]), torch.cat([train.y, exemplars.y]))
        phases = [Phase("train", self.epochs, self.optimizer_factory, self.scheduler_factory,
                        data=shuffled_batches(train, self.batch_size))]
        if task.id > 0:
            phases.append(Phase("balanced", self.finetuning_epochs, self.finetuning_optimizer, self.scheduler_factory,
                                data=shuffled_batches(self.balanced_set(task), self.batch_size)))
        return phases

    def balanced_set(self, task: Task) -> ImageSet:
        exemplars = self.exemplars.as_imageset()
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
        x = augment_raw(self.task, x)
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

    def end_task(self, task: Task, data) -> None:
        super().end_task(task, data)
        self.exemplars.keep_class_balanced(task.train, task.class_range, task.offset + task.n_classes)

    def extra_results(self) -> dict:
        return {"memory": self.exemplars.stats()}
