"""Always Be Dreaming (Smith, Hsu, Balloch, Shen, Jin, Kira, ICCV 2021): data-free class-incremental
learning by inverting the frozen previous model. Official code: GT-RIPL/AlwaysBeDreaming-DFCIL,
`learners/datafree.py` (`AlwaysBeDreaming.update_model`, L298-353).

For task t > 0, with a real batch (x, y) of the current task, a synthetic batch x' = G(z) labelled
y' = argmax f*(x') by the frozen previous model f* = W* h*, and r = n_old / n_seen:

    L = (1 - r) CE(g_new(h(x)), y)                                                   (local CE)
      + mean_{i in x u x'} w_i CE(g(sg[h(x_i)]), y_i)                                (head fine-tuning)
      + mu mean_{i in x u x'} (h(x_i) - h*(x_i))^T W*^T W* (h(x_i) - h*(x_i)) / n_old   (feature KD)

where g is every head, g_new the current task's head only, sg stops gradients (the fine-tuning CE
trains the classifier alone), w_i = r for old-class labels and 1 - r for new-class ones (class
balance), and W* stacks the previous model's heads (the importance matrix). The first task is
plain CE. Between tasks, the generator G is trained by model inversion of the frozen model
(`lifelong.inversion`): at the beginning of task t + 1, before its training phase, in a
"synthesis" phase (see `phases`). That is the official schedule (it inverts the model of task t,
right after task t), it is naturally skipped after the last task, and as a Lightning fit it gets
a progress bar, logging and `trainer.limit_train_batches`.

Faithful to the official code, each as an option: the local CE also carries the (1 - r) weight
(`balance_local_ce`); the head fine-tuning CE sees features from a second, gradient-free
train-mode forward pass, which updates the BatchNorm running statistics a second time
(`ft_second_forward`); the generator and its Adam moments are warm-started across tasks
(`reinit_generator`, `reset_generator_optimizer`); the BN-statistics loss is a KL averaged over
layers, the blur has effective sigma sqrt(2), the content temperature is 1000 (see
`lifelong.inversion.build_synthesizer`).

Deviation (the one known): our heads are per task, so logits exist only for seen classes. The
official code pre-allocates one 100-way head and its first-task and fine-tuning CEs softmax over
all 100 outputs, unseen classes included; here every softmax is over the classes seen so far.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from lifelong.data.scenario import Task
from lifelong.inversion import build_synthesizer
from lifelong.methods.base import ContinualMethod, Phase


def importance_weighted_distillation(features: torch.Tensor, old_features: torch.Tensor,
                                     importance: torch.Tensor) -> torch.Tensor:
    """mean_i (h_i - h*_i)^T W^T W (h_i - h*_i) / n_old, with W = `importance` `[n_old, d]`.

    The official code writes it as the MSE between the previous head's logits on h and on h*
    (the bias cancels), summed over the n_old old classes, averaged over the batch, divided by n_old.
    """
    return ((features - old_features) @ importance.T).pow(2).sum(1).mean() / importance.shape[0]


def class_balance_weights(y: torch.Tensor, n_old: int, n_seen: int) -> torch.Tensor:
    """r = n_old / n_seen for old-class labels, 1 - r for new-class labels (`datafree.py` L300-307)."""
    r = n_old / n_seen
    return torch.where(y < n_old, torch.full_like(y, r, dtype=torch.float), torch.full_like(y, 1 - r, dtype=torch.float))


class ABD(ContinualMethod):
    keeps_old_model = True
    class_incremental_only = True  # old-vs-new class balancing and synthetic images of old classes

    # search=continual decays mu from its strongest setting; no published start:
    # the top of conf/hparams_search/abd_optuna.yaml, one decade above the official --mu 1e-1
    stability_key, stability_start = "mu", 1.0

    def __init__(self, backbone: nn.Module, optimizer, scheduler=None, epochs: int = 1, ce_scope: str = "current", *,
                 mu: float = 0.1, class_balance: bool = True, balance_local_ce: bool = True,
                 ft_second_forward: bool = True, synthetic_batch_size: int | None = None, **synthesis):
        super().__init__(backbone, optimizer, scheduler, epochs, ce_scope)
        # `--mu 1e-1` in experiments/cifar100-{five,ten,twenty}task.sh: weight of the feature KD.
        self.mu = mu
        # Official: per-sample weights r / 1 - r on the fine-tuning CE (`datafree.py` L300-307).
        self.class_balance = class_balance
        # Official: the local CE is weighted by 1 - r too (dw_cls[class_idx], L321); 0.05 at task 20 of 20.
        self.balance_local_ce = balance_local_ce
        # Official: the fine-tuning CE's features come from a second train-mode forward under no_grad
        # (L324-325): same values, but BatchNorm running statistics are updated twice per step.
        self.ft_second_forward = ft_second_forward
        # Official: as many synthetic images as real ones (`self.sample(..., len(x), ...)`, L90); None = that.
        self.synthetic_batch_size = synthetic_batch_size
        self.synthesizer = build_synthesizer(**synthesis)

    # ----------------------------------------------------------------------------- task hooks
    @property
    def synthesizing(self) -> bool:
        return self.phase is not None and self.phase.name == "synthesis"

    def phases(self, task: Task) -> list[Phase]:
        """Before training on task t > 0: invert the frozen model of task t - 1 (its seen classes)."""
        phases = super().phases(task)
        if self.old_net is not None and self.synthesizer.iters > 0:
            phases.insert(0, self.synthesizer.phase())
        return phases

    def frozen_modules(self) -> Iterator[nn.Module]:
        yield from super().frozen_modules()
        if self.synthesizing:
            yield self.net  # the classifier waits while the generator trains
        else:
            yield self.synthesizer  # eval mode (running BN statistics) and out of the SGD optimizer

    # ----------------------------------------------------------------------------- training
    def loss_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.synthesizing:
            return self.synthesizer.loss_terms(self.old_net)
        if self.old_net is None:
            return {"ce": F.cross_entropy(self.net(x), y)}  # first task: CE over every seen class
        n_real, n_old = len(x), self.task.offset
        n_seen = n_old + self.task.n_classes
        x_syn = self.synthesizer.sample(self.synthetic_batch_size or n_real)
        with torch.no_grad():
            old_features_syn = self.old_net.features(x_syn)
            y_syn = self.old_net.head_logits(old_features_syn).argmax(1)  # hard pseudo-labels over old classes
            old_features = torch.cat([self.old_net.features(x), old_features_syn])
        x_all, y_all = torch.cat([x, x_syn]), torch.cat([y, y_syn])
        features = self.net.features(x_all)  # one forward: BatchNorm batch statistics mix real and synthetic
        logits = self.net.head_logits(features)
        ones = torch.ones(len(y_all), device=y_all.device)
        weights = class_balance_weights(y_all, n_old, n_seen) if self.class_balance else ones

        local = F.cross_entropy(logits[:n_real, n_old:n_seen], y - n_old, reduction="none")
        if self.balance_local_ce:
            local = local * weights[:n_real]
        if self.ft_second_forward:
            with torch.no_grad():
                ft_features = self.net.features(x_all)
        else:
            ft_features = features.detach()
        ft = F.cross_entropy(self.net.head_logits(ft_features), y_all, reduction="none") * weights
        importance = torch.cat([head.weight for head in self.old_net.heads])  # W*: [n_old, d]
        return {
            "local_ce": local.mean(),
            "ft_ce": ft.mean(),
            "feat_kd": self.mu * importance_weighted_distillation(features, old_features, importance),
        }

    def extra_results(self) -> dict:
        return {"generator_parameters": sum(p.numel() for p in self.synthesizer.generator.parameters())}
