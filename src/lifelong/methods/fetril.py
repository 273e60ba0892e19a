"""FeTrIL: Feature Translation for Exemplar-Free Class-Incremental Learning (Petit, Popescu,
Schindler, Picard, Delezoide, WACV 2023). Official code: GregoirePetit/FeTrIL
(`codes/compute_distances.py`, `codes/train_classifiers.py`, `configs/cifar100_b50_t10.cf`);
PyCIL's port: G-U-N/PyCIL `models/fetril.py`, `exps/fetril.json`.

The backbone f is trained on the first task (cross-entropy) and frozen. After every task t the
mean feature mu_c of each new class is kept, and each old class c gets pseudo-features by
translating the real features of its nearest new class c' = argmin_{n in new} ||mu_c - mu_n||:

    f_pseudo(c) = { f(x) - mu_c' + mu_c : x of class c' }

A linear classifier over every seen class is then fitted on the real features of the new classes
plus the pseudo-features of the old ones:

    svm    (paper, official): one-vs-rest LinearSVC (C = 1, tol = 1e-4, squared hinge, primal) on
           L2-normalised features, also on the first task;
    linear (PyCIL):           the task heads trained by SGD with cross-entropy on the raw features
           (first task: the heads trained with the backbone).

The classifier's weights live in the per-task heads and the class means in a buffer, so both are
in the state dict. Prediction (TAG) is the classifier's argmax over every seen class; TAW restricts
it to the task's classes. Deviations: the official code forgets to L2-normalise the first chunk of
512 training features before the SVM (`normalize_train_features`); we normalise them all.
"""
from __future__ import annotations

import logging
from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from lifelong.data.scenario import Task
from lifelong.errors import ConfigError
from lifelong.methods.base import ContinualMethod, Phase, freeze
from lifelong.prototypes import class_means, extract_features

log = logging.getLogger("lifelong")

CLASSIFIERS = ("svm", "linear")
PAIRINGS = ("euclidean", "cosine")


def nearest_new_class(old_means: torch.Tensor, new_means: torch.Tensor, pairing: str = "euclidean") -> torch.Tensor:
    """For each old class, the index (into `new_means`) of its closest new class.

    "euclidean": `pairwise_distances(...).argmin` (official `compute_distances.py`); "cosine": the
    largest cosine similarity (PyCIL `_compute_relations`).
    """
    if pairing == "cosine":
        return (F.normalize(old_means, dim=1) @ F.normalize(new_means, dim=1).T).argmax(1)
    return torch.cdist(old_means.double(), new_means.double()).argmin(1)


def pseudo_features(features: torch.Tensor, labels: torch.Tensor, means: torch.Tensor, n_old: int,
                    pairing: str = "euclidean") -> tuple[torch.Tensor, torch.Tensor]:
    """FeTrIL's translated features of every old class.

    `features`, `labels`: the real features of the new classes (labels `n_old ..`); `means`: the mean
    of every seen class `[n_seen, d]`. Old class c gets `f - mu_c' + mu_c` for each real feature f of
    its nearest new class c'. Returns the stacked pseudo-features and their labels (0 .. n_old - 1).
    """
    partner = nearest_new_class(means[:n_old], means[n_old:], pairing) + n_old
    pseudo, pseudo_labels = [], []
    for c in range(n_old):
        source = features[labels == partner[c]]
        pseudo.append(source - means[partner[c]] + means[c])
        pseudo_labels.append(torch.full((len(source),), c, dtype=labels.dtype, device=labels.device))
    return torch.cat(pseudo), torch.cat(pseudo_labels)


def fit_linear_svc(features: torch.Tensor, labels: torch.Tensor, n_classes: int, C: float = 1.0,
                   tol: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """One-vs-rest LinearSVC (scikit-learn / liblinear, primal, deterministic): `(weight [K, d], bias [K])`.

    As the official `train_classifiers.py`: `LinearSVC(penalty='l2', dual=False, tol, C,
    multi_class='ovr', fit_intercept=True, intercept_scaling=1)`, one binary problem per class.
    """
    from sklearn.svm import LinearSVC

    x = features.detach().double().cpu().numpy()
    y = labels.cpu().numpy()
    svm = LinearSVC(penalty="l2", loss="squared_hinge", dual=False, tol=tol, C=C, multi_class="ovr",
                    fit_intercept=True, intercept_scaling=1)
    svm.fit(x, y)
    weight = torch.zeros(n_classes, x.shape[1], dtype=torch.float64)
    bias = torch.zeros(n_classes, dtype=torch.float64)
    classes = torch.as_tensor(svm.classes_)
    coef, intercept = torch.as_tensor(svm.coef_), torch.as_tensor(svm.intercept_)
    if len(classes) == 2:  # scikit-learn keeps one hyperplane for two classes: +w for the second
        coef, intercept = torch.cat([-coef, coef]), torch.cat([-intercept, intercept])
    weight[classes], bias[classes] = coef, intercept
    return weight.float(), bias.float()


class FeTrIL(ContinualMethod):
    def __init__(self, *args, classifier: str = "svm", pairing: str = "euclidean", svm_C: float = 1.0,
                 svm_tol: float = 1e-4, linear_epochs: int = 50, linear_lr: float = 0.05,
                 linear_momentum: float = 0.9, linear_weight_decay: float = 5e-4, linear_batch_size: int = 128,
                 progress_bar: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        if classifier not in CLASSIFIERS:
            raise ConfigError(f"method.classifier={classifier!r} is unknown; valid choices: {list(CLASSIFIERS)}")
        if pairing not in PAIRINGS:
            raise ConfigError(f"method.pairing={pairing!r} is unknown; valid choices: {list(PAIRINGS)}")
        if int(linear_epochs) < 0:
            raise ConfigError(f"method.linear_epochs={linear_epochs} must be >= 0")
        # The paper's classifier (Sec. 3.3: "a linear SVM"), official train_classifiers.py; PyCIL: "linear".
        self.classifier = classifier
        # Official compute_distances.py: Euclidean nearest new-class mean; PyCIL: cosine.
        self.pairing = pairing
        # configs/cifar100_b50_t10.cf: regul = 1.0, toler = 0.0001.
        self.svm_C, self.svm_tol = svm_C, svm_tol
        # PyCIL exps/fetril.json: epochs 50, lr 0.05, weight_decay 5e-4, batch_size 128; SGD momentum
        # 0.9 with cosine annealing over the epochs (models/fetril.py `_train`).
        self.linear_epochs, self.linear_lr = int(linear_epochs), linear_lr
        self.linear_momentum, self.linear_weight_decay = linear_momentum, linear_weight_decay
        self.linear_batch_size = int(linear_batch_size)
        self.progress_bar = progress_bar
        # mu_c of every seen class, in class-id order: the only statistics FeTrIL keeps.
        self.register_buffer("class_means", torch.zeros(0, self.net.out_dim))

    # ----------------------------------------------------------------------------- task hooks
    @property
    def frozen_backbone(self) -> bool:
        return self.task is not None and self.task.id > 0

    def begin_task(self, task: Task) -> None:
        super().begin_task(task)
        if task.id > 0:
            freeze(self.net.backbone)

    def phases(self, task: Task) -> list[Phase]:
        """Only the first task trains the network; later tasks fit the classifier in `end_task`."""
        return super().phases(task) if task.id == 0 else []

    def frozen_modules(self) -> Iterator[nn.Module]:
        yield from super().frozen_modules()
        if self.frozen_backbone:
            yield self.net.backbone

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"ce": F.cross_entropy(self.net(x), y)}  # first task: CE over its classes

    def end_task(self, task: Task, data) -> None:
        super().end_task(task, data)
        features, labels = extract_features(self.net.backbone, data.batches("train", device=self.device))
        new_means = class_means(features, labels, list(range(task.offset, task.offset + task.n_classes)))
        self.class_means = torch.cat([self.class_means, new_means.to(self.class_means)])
        self.broadcast_from_rank0(self.class_means)  # DDP: every rank keeps rank zero's statistics
        if task.id > 0:
            pseudo, pseudo_labels = pseudo_features(features, labels, self.class_means, task.offset, self.pairing)
            features, labels = torch.cat([features, pseudo]), torch.cat([labels, pseudo_labels])
        if self.classifier == "svm":
            weight, bias = fit_linear_svc(F.normalize(features, dim=1), labels, len(self.class_means),
                                          self.svm_C, self.svm_tol)
            self.set_classifier(weight.to(self.device), bias.to(self.device))
        elif task.id > 0:
            self.fit_heads(features, labels)
        self.broadcast_from_rank0(self.net.heads)

    # ----------------------------------------------------------------------------- classifier
    @torch.no_grad()
    def set_classifier(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        for head, start, size in zip(self.net.heads, self.net.offsets, self.net.task_sizes):
            head.weight.copy_(weight[start : start + size])
            head.bias.copy_(bias[start : start + size])

    def fit_heads(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """PyCIL's FC path: every head trained by SGD + cosine annealing on real and pseudo-features."""
        from tqdm.auto import tqdm

        params = [p for head in self.net.heads for p in head.parameters()]
        optimizer = torch.optim.SGD(params, lr=self.linear_lr, momentum=self.linear_momentum,
                                    weight_decay=self.linear_weight_decay)
        epochs = self.loop_length(self.linear_epochs)  # debug=smoke: one epoch
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
        self.net.heads.train()
        bar = tqdm(range(epochs), desc=f"FeTrIL classifier task {self.task.id}",
                   disable=not self.progress_bar, leave=False)
        with torch.enable_grad():
            for _ in bar:
                for idx in torch.randperm(len(features), device=features.device).split(self.linear_batch_size):
                    loss = F.cross_entropy(self.net.head_logits(features[idx]), labels[idx])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                scheduler.step()
                bar.set_postfix(loss=f"{loss.item():.4f}")

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        features = self.net.features(x)
        if self.classifier == "svm" and len(self.class_means):
            features = F.normalize(features, dim=1)  # the SVM was fitted on L2-normalised features
        return self.net.head_logits(features)

    # ----------------------------------------------------------------------------- prediction
    def task_agnostic_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(x)

    def task_aware_logits(self, x: torch.Tensor, task_id: int) -> torch.Tensor:
        start, size = self.net.offsets[task_id], self.net.task_sizes[task_id]
        return self.classify(x)[:, start : start + size]

    def extra_results(self) -> dict:
        kept = self.class_means.numel()
        return {"memory": {"class_means": len(self.class_means), "floats": kept,
                           "bytes": kept * self.class_means.element_size(), "stored_images": 0}}

    def on_load_state_dict_structure(self, state_dict: dict[str, torch.Tensor]) -> None:
        super().on_load_state_dict_structure(state_dict)
        self.class_means = torch.empty_like(state_dict["class_means"], device=self.class_means.device)
