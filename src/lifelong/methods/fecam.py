"""FeCAM: Exploiting the Heterogeneity of Class Distributions in Exemplar-Free Continual Learning
(Goswami, Liu, Twardowski, van de Weijer, NeurIPS 2023). Official code: dipamgoswami/FeCAM
(`models/fecam.py`, `models/base.py`, `utils/maha_utils.py`, `exps/FeCAM_cifar100.json`).

The backbone f is trained on the first task (cross-entropy) and frozen. For every class c the
mean mu_c of its features and the covariance Sigma_c of its Tukey-transformed features
(x -> x^beta) are kept; Sigma_c is shrunk twice, S(Sigma) = Sigma + a1 * mean(diag) I
+ a2 * mean(offdiag) (1 - I), and normalised to a correlation matrix. A test image is assigned
to the class of smallest Mahalanobis distance

    y = argmin_c (q(x) - q(mu_c))^T pinv(Sigma_c) (q(x) - q(mu_c)),
    q(v) = tukey(v / ||v||) / ||tukey(v / ||v||)||   (q(mu) = tukey(mu) / ||tukey(mu)||)

over every seen class (TAG; the scores are minus the distances); TAW takes the argmin over the
task's classes only. After the first task (before any frozen step) the official code predicts with
the trained classifier (the cosine distance to the classifier's weights); `first_task_prediction`
chooses that (`head`, default) or the Mahalanobis rule already on task 0 (`mahalanobis`).

Everything kept lives in buffers: the means `[n_seen, d]` and the precision matrices
pinv(Sigma_c) `[n_seen, d, d]` (float32, as the official `torch.linalg.pinv(cov).float()`).
Deviation: the official network ends in a cosine classifier (PyCIL's `CosineIncrementalNet`); here the
first task trains our usual linear heads, which only matters for the task-0 prediction.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from lifelong.data.scenario import Task
from lifelong.errors import ConfigError
from lifelong.methods.base import ContinualMethod, Phase, freeze
from lifelong.prototypes import class_means, covariance, extract_features

FIRST_TASK_PREDICTIONS = ("head", "mahalanobis")
EPSILON = 1e-8  # official models/base.py


def tukey(x: torch.Tensor, beta: float) -> torch.Tensor:
    """Tukey's ladder of powers: x^beta, log x for beta = 0 (`_tukeys_transform`). Features are ReLU outputs
    (non-negative); negative entries would give NaN, as in the official code, so they are clamped to 0."""
    x = x.clamp_min(0)
    return torch.log(x) if beta == 0 else x.pow(beta)


def shrink(cov: torch.Tensor, alpha1: float = 1.0, alpha2: float = 1.0) -> torch.Tensor:
    """Covariance shrinkage of `shrink_cov`: add alpha1 * mean diagonal on the diagonal and alpha2 * the mean
    of the non-zero off-diagonal entries off it."""
    d = cov.shape[0]
    eye = torch.eye(d, dtype=cov.dtype, device=cov.device)
    diag_mean = torch.diagonal(cov).mean()
    off = cov * (1 - eye)
    nonzero = off != 0
    off_mean = off[nonzero].sum() / nonzero.sum().clamp_min(1)
    return cov + alpha1 * diag_mean * eye + alpha2 * off_mean * (1 - eye)


def correlation(cov: torch.Tensor) -> torch.Tensor:
    """`normalize_cov`: Sigma / (sd sd^T), sd the square roots of the diagonal."""
    sd = torch.sqrt(torch.diagonal(cov))
    return cov / (sd[:, None] * sd[None, :])


def mahalanobis(x: torch.Tensor, means: torch.Tensor, precisions: torch.Tensor) -> torch.Tensor:
    """`[B, K]`: (x_b - mu_k)^T P_k (x_b - mu_k) for features `[B, d]`, means `[K, d]`, precisions `[K, d, d]`."""
    diff = x[:, None, :] - means[None, :, :]
    return torch.einsum("bkd,kde,bke->bk", diff, precisions, diff)


class FeCAM(ContinualMethod):
    def __init__(self, *args, beta: float = 0.5, alpha1: float = 1.0, alpha2: float = 1.0, shrink_times: int = 2,
                 normalize_covariance: bool = True, first_task_prediction: str = "head", **kwargs):
        super().__init__(*args, **kwargs)
        if first_task_prediction not in FIRST_TASK_PREDICTIONS:
            raise ConfigError(f"method.first_task_prediction={first_task_prediction!r} is unknown; "
                              f"valid choices: {list(FIRST_TASK_PREDICTIONS)}")
        if int(shrink_times) < 0:
            raise ConfigError(f"method.shrink_times={shrink_times} must be >= 0")
        # exps/FeCAM_cifar100.json: "beta": 0.5, "tukey": true.
        self.beta = beta
        # exps/FeCAM_cifar100.json: "alpha1": 1, "alpha2": 1, "shrink": true.
        self.alpha1, self.alpha2 = alpha1, alpha2
        # Official: shrunk in compute_new_cov and once more in `_train` ("we apply covariance shrinkage
        # 2 times to obtain better estimates", models/fecam.py).
        self.shrink_times = int(shrink_times)
        # exps/FeCAM_cifar100.json: "norm_cov": true (correlation matrices).
        self.normalize_covariance = normalize_covariance
        # Official eval at task 0: distance to the trained (cosine) classifier's weights, identity covariance.
        self.first_task_prediction = first_task_prediction
        d = self.net.out_dim
        self.register_buffer("class_means", torch.zeros(0, d))
        self.register_buffer("precisions", torch.zeros(0, d, d))

    # ----------------------------------------------------------------------------- task hooks
    def begin_task(self, task: Task) -> None:
        super().begin_task(task)
        if task.id > 0:
            freeze(self.net.backbone)

    def phases(self, task: Task) -> list[Phase]:
        """Only the first task trains; later tasks add statistics in `end_task` (official `_train`)."""
        return super().phases(task) if task.id == 0 else []

    def frozen_modules(self) -> Iterator[nn.Module]:
        yield from super().frozen_modules()
        if self.task is not None and self.task.id > 0:
            yield self.net.backbone

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"ce": F.cross_entropy(self.net(x), y)}

    def end_task(self, task: Task, data) -> None:
        super().end_task(task, data)
        features, labels = extract_features(self.net.backbone, data.batches("train", device=self.device))
        classes = list(range(task.offset, task.offset + task.n_classes))
        means = class_means(features, labels, classes)
        precisions = torch.stack([self.precision(features[labels == c]) for c in classes])
        self.class_means = torch.cat([self.class_means, means.to(self.class_means)])
        self.precisions = torch.cat([self.precisions, precisions.to(self.precisions)])
        self.broadcast_from_rank0(self.class_means)  # DDP: every rank keeps rank zero's statistics
        self.broadcast_from_rank0(self.precisions)

    def class_covariance(self, features: torch.Tensor) -> torch.Tensor:
        """Sigma_c as the official pipeline builds it: Tukey, covariance, shrinkage (twice), correlation."""
        cov = covariance(tukey(features, self.beta))
        for _ in range(self.shrink_times):
            cov = shrink(cov, self.alpha1, self.alpha2)
        return correlation(cov) if self.normalize_covariance else cov

    def precision(self, features: torch.Tensor) -> torch.Tensor:
        return torch.linalg.pinv(self.class_covariance(features)).float()

    # ----------------------------------------------------------------------------- prediction
    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Minus the Mahalanobis distance to every seen class `[B, n_seen]` (`_maha_dist`)."""
        v = self.net.features(x)
        v = v / (v.norm(dim=1, keepdim=True) + EPSILON)
        q = F.normalize(tukey(v, self.beta), dim=1)
        mu = F.normalize(tukey(self.class_means, self.beta), dim=1)
        return -mahalanobis(q, mu, self.precisions)

    def use_head(self) -> bool:
        """While task 0 trains (no statistics yet), and after it with `first_task_prediction=head`."""
        return len(self.class_means) == 0 or (self.first_task_prediction == "head" and len(self.net.heads) == 1)

    def task_agnostic_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) if self.use_head() else self.scores(x)

    def task_aware_logits(self, x: torch.Tensor, task_id: int) -> torch.Tensor:
        start, size = self.net.offsets[task_id], self.net.task_sizes[task_id]
        return self.task_agnostic_logits(x)[:, start : start + size]

    def extra_results(self) -> dict:
        kept = self.class_means.numel() + self.precisions.numel()
        return {"memory": {"class_means": len(self.class_means), "covariance_matrices": len(self.precisions),
                           "floats": kept, "bytes": kept * self.precisions.element_size(), "stored_images": 0}}

    def on_load_state_dict_structure(self, state_dict: dict[str, torch.Tensor]) -> None:
        super().on_load_state_dict_structure(state_dict)
        self.class_means = torch.empty_like(state_dict["class_means"], device=self.class_means.device)
        self.precisions = torch.empty_like(state_dict["precisions"], device=self.precisions.device)
