"""Encoder Based Lifelong Learning (Rannen Triki, Aljundi, Blaschko & Tuytelaars, ICCV 2017).

LwF, plus one frozen undercomplete encoder E_k per old task that keeps the codes of the shared
features F(x) where the previous model F* had them. Training task t (heads on T(F(x))):

    L = CE(h_t(T(F(x))), y) + lamb * KD_T(h_{<t}(T(F(x))), h*_{<t}(T*(F*(x))))
        + alpha / 2 * sum_{k<t} || sigmoid(E_k F(x)) - sigmoid(E_k F*(x)) ||^2

after a warm-up in which only the new head h_t is trained. After task k, with the model frozen,
the autoencoder r = D o sigmoid o E is fitted on cached features F(x) of task k's data:

    L_AE = rec_weight * || r(F(x)) - F(x) ||^2 + CE(h_k(T(r(F(x)))), y)

and only its encoder is kept. F is `backbone.code_input` and T `backbone.from_code_input` when the
backbone is two-stage (AlexNet: pool5, and fc6-fc7, as in the paper); for other backbones F is the
whole backbone and T the identity (a ResNet's pooled feature).

Sources: the official MatConvNet code (rahafaljundi/Encoder-Based-Lifelong-learning @88a6bbc) and
its PyTorch demo; the CLsurvey re-implementation (Mattdl/CLsurvey). Where they disagree, the values
here follow the paper and its official code, and the alternatives are noted at each default.
Reductions are explicit because the sources mix conventions: "batchmean" sums the squared
differences over dimensions and averages over the batch (the paper's and MatConvNet's), "mean"
averages over every element (`nn.MSELoss`, the PyTorch demo and CLsurvey), "sum" sums everything.

The KD term is LwF's (`kd_scope`): "concat", on the concatenated old logits as FACIL's LwF, for
class-incremental use (no official version exists); "per_head", each old head on its own softmax,
as the paper's multi-head setting does (`utils/multitask_forward_bef_fc8.m:44-47`).

Deviations: the teacher's logits and codes are computed online on the same augmented batch (the
PyTorch demo and CLsurvey do this; MatConvNet records them offline on pre-augmented copies); during
the warm-up the backbone is in eval mode, so BatchNorm statistics do not drift while only the head
learns (AlexNet has no BatchNorm, but its fc6/fc7 dropout is then off during the warm-up); the
autoencoder is fitted for a fixed number of epochs on un-augmented features, without the
validation-based checkpoint selection of the PyTorch demo and CLsurvey.
"""
from __future__ import annotations

import functools
import logging
from typing import Callable, Iterator

import torch
from torch import nn
from torch.nn import functional as F

from lifelong.data.scenario import Task
from lifelong.errors import ConfigError
from lifelong.methods.base import Phase, freeze
from lifelong.methods.lwf import LwF
from lifelong.models.autoencoder import AutoEncoder, make_encoder

log = logging.getLogger("lifelong")

REDUCTIONS = ("batchmean", "mean", "sum")


def squared_distance(a: torch.Tensor, b: torch.Tensor, reduction: str) -> torch.Tensor:
    """`||a - b||^2` over `[B, d]` tensors, reduced as described in the module docstring."""
    squared = (a - b) ** 2
    if reduction == "batchmean":
        return squared.sum() / len(squared)
    if reduction == "mean":
        return squared.mean()
    return squared.sum()


def split_forward(backbone: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(F(x), T(F(x)))`: the representation the codes guard, and the features the heads read."""
    if hasattr(backbone, "code_input"):
        f = backbone.code_input(x)
        return f, backbone.from_code_input(f)
    f = backbone(x)
    return f, f


def from_code_input(backbone: nn.Module, f: torch.Tensor) -> torch.Tensor:
    """T(f): the part of the backbone after the guarded representation (identity if there is none)."""
    return backbone.from_code_input(f) if hasattr(backbone, "from_code_input") else f


def fit_autoencoder(ae: AutoEncoder, features: torch.Tensor, labels: torch.Tensor,
                    classify: Callable[[torch.Tensor], torch.Tensor], rec_weight: float, reduction: str,
                    optimizer: Callable, epochs: int, batch_size: int, progress: bool = False,
                    desc: str = "autoencoder") -> list[dict[str, float]]:
    """Minimise `rec_weight * ||r(f) - f||^2 + CE(classify(r(f)), y)` over the autoencoder only.

    `classify` must be frozen (the task's head on the frozen task layers). Returns, per epoch, the
    mean of each term over the batches.
    """
    from tqdm.auto import tqdm

    opt = optimizer(ae.parameters())
    history = []
    bar = tqdm(range(epochs), desc=desc, disable=not progress, leave=False)
    for _ in bar:
        sums, n_batches = {"rec": 0.0, "ce": 0.0, "total": 0.0}, 0
        for idx in torch.randperm(len(features), device=features.device).split(batch_size):
            f, y = features[idx], labels[idx]
            reconstruction = ae(f)
            rec = rec_weight * squared_distance(reconstruction, f, reduction)
            ce = F.cross_entropy(classify(reconstruction), y)
            loss = rec + ce
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for name, value in (("rec", rec), ("ce", ce), ("total", loss)):
                sums[name] += value.item()
            n_batches += 1
        history.append({name: value / n_batches for name, value in sums.items()})
        bar.set_postfix(loss=f"{history[-1]['total']:.4f}")
    return history


class EBLL(LwF):
    keeps_old_model = True

    # search=continual decays lamb from its strongest setting; CLsurvey src/methods/method.py (De Lange et al.):
    # EBLL's reg_lambda starts at 10
    stability_key, stability_start = "lamb", 10.0

    def __init__(self, *args, lamb: float = 1.0, T: float = 2.0, kd_scope: str = "concat", alpha: float = 1e-2,
                 code_reduction: str = "batchmean", warmup_epochs: int | None = None,
                 warmup_optimizer: Callable | None = None, code_size: int = 100, ae_rec_weight: float = 1e-6,
                 ae_reduction: str = "batchmean", ae_epochs: int = 100, ae_batch_size: int = 5000,
                 ae_optimizer: Callable | None = None, progress_bar: bool = True, **kwargs):
        # KD weight 1 and T = 2: the paper follows LwF (Li & Hoiem, Sec. 3); MatConvNet
        # `vl_nnsoftmaxdiff.m:74-96` (T = 2, no T^2 factor). CLsurvey starts its KD weight at 10.
        super().__init__(*args, lamb=lamb, T=T, kd_scope=kd_scope, **kwargs)
        checks = {"code_reduction": (code_reduction, REDUCTIONS),
                  "ae_reduction": (ae_reduction, REDUCTIONS)}
        for key, (value, choices) in checks.items():
            if value not in choices:
                raise ConfigError(f"method.{key}={value!r} is unknown; valid choices: {list(choices)}")
        for key, value in {"alpha": alpha, "ae_rec_weight": ae_rec_weight}.items():
            if value < 0:
                raise ConfigError(f"method.{key}={value} must be >= 0")
        for key, value in {"code_size": code_size, "ae_batch_size": ae_batch_size}.items():
            if int(value) < 1:
                raise ConfigError(f"method.{key}={value} must be a positive integer")
        for key, value in {"ae_epochs": ae_epochs, "warmup_epochs": warmup_epochs}.items():
            if value is not None and int(value) < 0:
                raise ConfigError(f"method.{key}={value} must be >= 0 (0 switches it off)")
        # Code-loss weight, spec decision: 1e-2, and 1e-3 when the guarded autoencoder is ImageNet's
        # (the paper). MatConvNet demo: 1e-1
        # (`exp_LwF_with_encoder.m:95,153`); PyTorch demo: 1e-1 on the mean MSE over d = 100 codes,
        # i.e. alpha = 2e-3 with code_reduction=batchmean.
        self.alpha = alpha
        # Sum over code dimensions, mean over the batch: MatConvNet's gradient alpha * (X - c)
        # divided by the batch size (`utils/intermediate_euclideanloss.m:19-24`).
        self.code_reduction = code_reduction
        # Warm-up of the new head alone, with the main phase's settings: MatConvNet
        # `add_new_task.m:92-101` (`cnn_fine_tune_freeze`); None = as many epochs as the main phase
        # (the PyTorch demo: 100 warm-up and 100 EBLL epochs).
        self.warmup_epochs = self.epochs if warmup_epochs is None else int(warmup_epochs)
        self.warmup_optimizer = warmup_optimizer  # None: the main phase's optimizer factory
        # Code size 100: `cnn_autoencoder_with_classerror.m:143`, PyTorch demo `dim=100`; the demo
        # uses 300 for the ImageNet autoencoder (`exp_LwF_with_encoder.m:74`).
        self.code_size = int(code_size)
        # Reconstruction weight 1e-6 per sample, summed over dimensions (`ae_reduction=batchmean`):
        # `cnn_autoencoder_with_classerror.m:155`. The PyTorch demo puts 1e-1 on the mean MSE
        # (= 1.1e-5 here for 9,216-d pool5); CLsurvey grid-searches {1e-1, 1e-2} on the mean MSE.
        self.ae_rec_weight, self.ae_reduction = ae_rec_weight, ae_reduction
        # 100 epochs, batch 5000: `exp_LwF_with_encoder.m:57-77` (PyTorch demo: 200 epochs, batch
        # 200; CLsurvey: 50 epochs with early stopping).
        self.ae_epochs, self.ae_batch_size = int(ae_epochs), int(ae_batch_size)
        # Adadelta, rho 0.9, eps 1e-8, no learning-rate scaling: `cnn_train_adadelta.m:49,483-501`
        # (PyTorch demo: lr 0.1; CLsurvey: lr 0.01).
        self.ae_optimizer = ae_optimizer or functools.partial(torch.optim.Adadelta, lr=1.0, rho=0.9, eps=1e-8)
        self.progress_bar = progress_bar
        self.encoders = nn.ModuleList()  # E_k of every finished task, frozen; in the checkpoint
        self.ae_history: list[dict] = []  # per task: autoencoder losses and accuracy, for results.json

    # ----------------------------------------------------------------------------- phases
    def phases(self, task: Task) -> list[Phase]:
        phases = []
        if task.id > 0 and self.warmup_epochs > 0:  # task 0 has no old model to protect yet
            phases.append(Phase("warmup", self.warmup_epochs, self.warmup_optimizer or self.optimizer_factory,
                                self.scheduler_factory, parameters=lambda: self.net.heads[-1].parameters()))
        return phases + super().phases(task)

    def frozen_modules(self) -> Iterator[nn.Module]:
        yield from super().frozen_modules()
        yield self.encoders
        if self.phase is not None and self.phase.name == "warmup":
            yield self.net.backbone

    # ----------------------------------------------------------------------------- losses
    def loss_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.phase is not None and self.phase.name == "warmup":
            with torch.no_grad():  # only the new head learns: no graph through the backbone
                features = self.net.features(x)
            return {"ce": self.cross_entropy(self.net.head_logits(features), y)}
        f, features = split_forward(self.net.backbone, x)
        logits = self.net.head_logits(features)
        terms = {"ce": self.cross_entropy(logits, y)}
        if self.old_net is not None:
            with torch.no_grad():
                old_f, old_features = split_forward(self.old_net.backbone, x)
                old_logits = self.old_net.head_logits(old_features)
            terms["kd"] = self.lamb * self.old_heads_kd(logits, old_logits)
            terms["code"] = self.alpha / 2 * self.code_distance(f, old_f)
        return terms

    def code_distance(self, f: torch.Tensor, old_f: torch.Tensor) -> torch.Tensor:
        """`sum_k ||sigmoid(E_k f) - sigmoid(E_k f*)||^2` over every old task's encoder."""
        total = f.new_zeros(())
        for encoder in self.encoders:
            with torch.no_grad():
                target = encoder(old_f)
            total = total + squared_distance(encoder(f), target, self.code_reduction)
        return total

    # ----------------------------------------------------------------------------- autoencoder
    def end_task(self, task: Task, data) -> None:
        super().end_task(task, data)  # old_net: the frozen model that has just learnt `task`
        features, labels = self.cached_features(data)
        labels = labels - task.offset
        head, backbone = self.old_net.heads[task.id], self.old_net.backbone

        def classify(reconstruction: torch.Tensor) -> torch.Tensor:
            return head(from_code_input(backbone, reconstruction))

        ae = AutoEncoder(features.shape[1], self.code_size).to(features.device)
        history = fit_autoencoder(ae, features, labels, classify, self.ae_rec_weight, self.ae_reduction,
                                  self.ae_optimizer, self.loop_length(self.ae_epochs), self.ae_batch_size, self.progress_bar,
                                  desc=f"autoencoder task {task.id}")
        with torch.no_grad():
            accuracy = sum((classify(ae(f)).argmax(1) == y).sum().item()
                           for f, y in zip(features.split(self.ae_batch_size), labels.split(self.ae_batch_size)))
        summary = {"task": task.id, "in_features": features.shape[1], "code_size": self.code_size,
                   "first_epoch": history[0] if history else None, "last_epoch": history[-1] if history else None,
                   "reconstruction_accuracy": accuracy / max(len(labels), 1)}
        self.ae_history.append(summary)
        log.info("EBLL autoencoder of task %d: loss %s -> %s, head accuracy on reconstructions %.2f%%", task.id,
                 _fmt(summary["first_epoch"]), _fmt(summary["last_epoch"]), 100 * summary["reconstruction_accuracy"])
        self.encoders.append(freeze(ae.encoder))
        self.broadcast_from_rank0(self.encoders[-1])  # DDP: every rank keeps rank zero's encoder

    @torch.no_grad()
    def cached_features(self, data) -> tuple[torch.Tensor, torch.Tensor]:
        """F*(x) of the task's training images (un-augmented) under the frozen model, and the labels."""
        features, labels = [], []
        for x, y in data.batches("train", device=self.device):
            features.append(split_forward(self.old_net.backbone, x)[0])
            labels.append(y)
        return torch.cat(features), torch.cat(labels)

    def extra_results(self) -> dict:
        return {"ebll_autoencoders": self.ae_history}

    # ----------------------------------------------------------------------------- checkpoints
    def get_extra_state(self) -> dict:
        """The autoencoder summaries travel in the checkpoint, so a resumed run reports every task."""
        return {"ae_history": self.ae_history}

    def set_extra_state(self, state: dict) -> None:
        self.ae_history = list(state.get("ae_history", []))

    def on_load_state_dict_structure(self, state_dict: dict[str, torch.Tensor]) -> None:
        super().on_load_state_dict_structure(state_dict)
        while f"encoders.{len(self.encoders)}.0.weight" in state_dict:
            weight = state_dict[f"encoders.{len(self.encoders)}.0.weight"]
            self.encoders.append(freeze(make_encoder(weight.shape[1], weight.shape[0]).to(self.device)))


def _fmt(terms: dict | None) -> str:
    return "-" if terms is None else f"{terms['total']:.4f} (rec {terms['rec']:.4f}, ce {terms['ce']:.4f})"
