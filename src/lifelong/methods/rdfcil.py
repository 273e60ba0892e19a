"""R-DFCIL: Relation-guided representation learning for data-free class-incremental learning
(Gao, Xu, Shen, Gong, Cheng, Wang, CVPR 2022). Official code: jianzhangcs/R-DFCIL (`module.py`,
`mixin/finetuning.py`, `config/cifar100.yaml`), built on gqk/cl-lite.

Synthetic images x' = G(z) come from a generator trained by inverting the frozen previous model f*
(ABD's model inversion, `lifelong.inversion`, in a "synthesis" phase at the start of every task
t > 0), freshly initialised at every task (cl-lite builds a new `GenerativeInversion` per task).
With n_old old and n_new new classes, alpha = log2(n_new / 2 + 1) and beta = sqrt(n_old / n_new),
the "train" phase minimises, on a real batch (x, y) and a synthetic batch x':

    L = lambda_ce (1 + 1 / alpha) / beta * CE(g_new(h(x)), y - n_old)              (local CE)
      + lambda_hkd alpha beta * | g_old(h(x')) - f*(x') |_1                        (hard KD, mean)
      + lambda_rkd alpha beta * RKD_angle(P_s h(x), P_t h*(x))                      (relation KD)

where g_new is the current task's head only, g_old the old heads, h and h* the new and old
features, and P_s, P_t two linear projections to 2d dimensions trained with the model (cl-lite
`RKDAngleLoss(d, proj_dim=2d)`, fresh per task; the official code relates the features of the real
batch). Then a "refine" phase (the official last 40 epochs, `finetuning_epochs`) trains the heads
alone (backbone frozen, in eval mode) at lr `refine_lr` on

    L_refine = lambda_ce * CE_w(g(h([x, x'])), [y, y*]) + lambda_hkd alpha beta * | g_old(h(x')) - f*(x') |_1

with y* = argmax f*(x') and CE_w class-weighted by w_c = (sum_k n_k / n_c) / min_k(...), n_c the
labels of class c counted over all steps of the task so far (real and synthetic), updated at each
epoch end. The first task is plain CE over its classes.
"""
from __future__ import annotations

import math
from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from lifelong.data.scenario import Task
from lifelong.errors import ConfigError
from lifelong.inversion import build_synthesizer
from lifelong.losses import rkd_angle
from lifelong.methods.base import ContinualMethod, Phase


class RelationProjection(nn.Module):
    """The two linear maps of cl-lite's `RKDAngleLoss`: student and teacher features to `proj_dim`."""

    def __init__(self, dim: int, proj_dim: int):
        super().__init__()
        self.student, self.teacher = nn.Linear(dim, proj_dim), nn.Linear(dim, proj_dim)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return rkd_angle(self.student(student), self.teacher(teacher))


def rdfcil_factors(n_old: int, n_new: int) -> tuple[float, float]:
    """alpha = log2(n_new / 2 + 1), beta = sqrt(n_old / n_new) (`module.py` `register_losses`)."""
    return math.log(n_new / 2 + 1, 2), math.sqrt(n_old / n_new)


def balanced_class_weights(counts: torch.Tensor) -> torch.Tensor:
    """w_c = (sum n / n_c) / min_k (sum n / n_k), counts clamped at 1 (`module.py` `training_epoch_end`)."""
    w = counts.sum() / counts.clamp(min=1)
    return w / w.min()


class RDFCIL(ContinualMethod):
    keeps_old_model = True

    def __init__(self, backbone: nn.Module, optimizer, scheduler=None, epochs: int = 1, ce_scope: str = "current", *,
                 lambda_ce: float = 0.5, lambda_hkd: float = 0.15, lambda_rkd: float = 0.5,
                 refine_epochs: int = 40, refine_lr: float = 0.005, relation_dim_factor: int = 2,
                 synthetic_batch_size: int | None = None, **synthesis):
        # ce_scope is accepted (experiment=abd_cifar100 sets it for its baselines) but R-DFCIL's CEs are its own:
        # over the seen classes on the first task and for real + synthetic data, over the new ones for the local CE.
        super().__init__(backbone, optimizer, scheduler, epochs, ce_scope)
        if refine_epochs < 0:
            raise ConfigError(f"method.refine_epochs={refine_epochs} must be >= 0 (0: no refinement stage)")
        self.lambda_ce = lambda_ce  # config/cifar100.yaml model.lambda_ce 0.5
        self.lambda_hkd = lambda_hkd  # config/cifar100.yaml model.lambda_hkd 0.15
        self.lambda_rkd = lambda_rkd  # config/cifar100.yaml model.lambda_rkd 0.5
        self.refine_epochs = refine_epochs  # config/cifar100.yaml model.finetuning_epochs 40 (of max_epochs 200)
        self.refine_lr = refine_lr  # config/cifar100.yaml model.finetuning_lr 0.005, constant
        self.relation_dim_factor = relation_dim_factor  # module.py: RKDAngleLoss(d, proj_dim=2 * d)
        self.synthetic_batch_size = synthetic_batch_size  # module.py: inversion.sample(input.shape[0]); None = that
        self.synthesizer = build_synthesizer(**synthesis)
        self.relation: RelationProjection | None = None
        self.register_buffer("class_counts", torch.zeros(0))
        self.register_buffer("class_weights", torch.zeros(0))

    # ----------------------------------------------------------------------------- task hooks
    @property
    def phase_name(self) -> str | None:
        return None if self.phase is None else self.phase.name

    def begin_task(self, task: Task) -> None:
        super().begin_task(task)
        device = self.net.heads[0].weight.device
        n_seen = task.offset + task.n_classes
        self.class_counts = torch.zeros(n_seen, device=device)
        self.class_weights = torch.ones(n_seen, device=device)
        if task.id > 0:  # cl-lite `update_old_model`: a fresh relation projection per task
            d = self.net.out_dim
            self.relation = RelationProjection(d, self.relation_dim_factor * d).to(device)

    def phases(self, task: Task) -> list[Phase]:
        """[synthesis] + train + [refine] for t > 0; the first task is its train phase alone."""
        phases = super().phases(task)
        if self.old_net is None:
            return phases
        if self.synthesizer.iters > 0:
            phases.insert(0, self.synthesizer.phase())
        if self.refine_epochs > 0:  # at most the train phase's epochs, so that debug=smoke cuts it too
            phases.append(Phase("refine", min(self.refine_epochs, self.epochs), self.refine_optimizer,
                                parameters=self.net.heads.parameters))
        return phases

    def refine_optimizer(self, params) -> torch.optim.Optimizer:
        """The run's optimizer (momentum, weight decay) at the constant refinement lr (ConstantLR factor)."""
        optimizer = self.optimizer_factory(params)
        for group in optimizer.param_groups:
            group["lr"] = self.refine_lr
        return optimizer

    def frozen_modules(self) -> Iterator[nn.Module]:
        yield from super().frozen_modules()
        if self.phase_name == "synthesis":
            yield self.net  # the classifier waits while the generator trains
            if self.relation is not None:
                yield self.relation
            return
        yield self.synthesizer
        if self.phase_name == "refine":
            yield self.net.backbone  # mixin/finetuning.py: backbone frozen (eval mode), classifiers train
            yield self.relation

    # ----------------------------------------------------------------------------- training
    def loss_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.phase_name == "synthesis":
            return self.synthesizer.loss_terms(self.old_net)
        if self.old_net is None:
            return {"ce": F.cross_entropy(self.net(x), y)}
        n_old, n_new = self.task.offset, self.task.n_classes
        alpha, beta = rdfcil_factors(n_old, n_new)
        x_syn = self.synthesizer.sample(self.synthetic_batch_size or len(x))
        with torch.no_grad():
            old_logits_syn = self.old_net(x_syn)
            y_syn = old_logits_syn.argmax(1)
        refining = self.phase_name == "refine"
        with torch.no_grad() if refining else torch.enable_grad():
            features = self.net.features(x)
            features_syn = self.net.features(x_syn)  # a second forward: BatchNorm statistics kept apart
        logits, logits_syn = self.net.head_logits(features), self.net.head_logits(features_syn)
        self.count_labels(torch.cat([y, y_syn]))
        terms = {"hkd": self.lambda_hkd * alpha * beta * F.l1_loss(logits_syn[:, :n_old], old_logits_syn)}
        if refining:
            terms["ce"] = self.lambda_ce * F.cross_entropy(torch.cat([logits, logits_syn]), torch.cat([y, y_syn]),
                                                           weight=self.class_weights)
            return terms
        with torch.no_grad():
            old_features = self.old_net.features(x)
        terms["local_ce"] = self.lambda_ce * (1 + 1 / alpha) / beta * F.cross_entropy(logits[:, n_old:], y - n_old)
        terms["rkd"] = self.lambda_rkd * alpha * beta * self.relation(features, old_features)
        return terms

    @torch.no_grad()
    def count_labels(self, labels: torch.Tensor) -> None:
        self.class_counts += torch.bincount(labels, minlength=len(self.class_counts)).to(self.class_counts.dtype)

    def on_train_epoch_end(self) -> None:
        if self.old_net is not None and self.phase_name != "synthesis":
            counts = self.all_reduce_sum(self.class_counts.clone())  # DDP: every rank's labels
            self.class_weights = balanced_class_weights(counts)

    # ----------------------------------------------------------------------------- checkpoints
    def on_load_state_dict_structure(self, state_dict: dict[str, torch.Tensor]) -> None:
        super().on_load_state_dict_structure(state_dict)
        self.class_counts = torch.zeros_like(state_dict["class_counts"])
        self.class_weights = torch.zeros_like(state_dict["class_weights"])

    def extra_results(self) -> dict:
        return {"generator_parameters": sum(p.numel() for p in self.synthesizer.generator.parameters())}
