"""Per-class feature statistics for the exemplar-free methods that work from prototypes.

- `extract_features`, `class_means`, `covariance`: one pass of a frozen backbone (eval mode) over a
  task's un-augmented training images, then FeTrIL's class means and FeCAM's covariances. Every DDP
  rank computes the same pass; the methods broadcast what they keep from rank zero.
- `class_statistics`: per-class counts, means and covariance traces summed over DDP ranks (PASS,
  SSRE), from each rank's shard of the batches.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

from lifelong import distributed


@torch.no_grad()
def extract_features(backbone: nn.Module, batches) -> tuple[torch.Tensor, torch.Tensor]:
    """`(features [N, d], labels [N])` of `backbone` (put in eval mode, restored after) over `batches`."""
    was_training = backbone.training
    backbone.eval()
    features, labels = [], []
    for x, y in batches:
        features.append(backbone(x))
        labels.append(y)
    backbone.train(was_training)
    return torch.cat(features), torch.cat(labels)


def class_means(features: torch.Tensor, labels: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """`[len(classes), d]`: the mean feature of each class in `classes`, in that order."""
    return torch.stack([features[labels == c].mean(0) for c in classes])


def covariance(features: torch.Tensor) -> torch.Tensor:
    """Unbiased sample covariance `[d, d]` of `[n, d]` features, in float64 (`numpy.cov(features.T)`)."""
    x = features.double()
    centred = x - x.mean(0, keepdim=True)
    return centred.T @ centred / (len(x) - 1)


@torch.no_grad()
def class_statistics(features: Callable[[torch.Tensor], torch.Tensor], batches: Iterable, n_classes: int,
                     offset: int, dim: int, limit_batches: int | None = None, progress: bool = False,
                     desc: str = "prototypes") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per class c in [offset, offset + n_classes): its count n_c, mean feature mu_c `[n_classes, dim]`
    and tr(Sigma_c) / dim with Sigma_c the unbiased covariance (`np.cov`, divisor n_c - 1).

    Sums (float64) are accumulated over this rank's shard of `batches` and summed over ranks, so
    every rank gets the same statistics. `features` maps images to `[B, dim]` features.
    """
    from itertools import islice

    from tqdm.auto import tqdm

    count = torch.zeros(n_classes, dtype=torch.float64)
    total = torch.zeros(n_classes, dim, dtype=torch.float64)
    total_sq = torch.zeros(n_classes, dtype=torch.float64)  # sum over samples of ||f||^2
    device = None
    for x, y in tqdm(distributed.shard(islice(batches, limit_batches)), desc=desc, disable=not progress, leave=False):
        f = features(x).double()
        if device is None:
            device = f.device
            count, total, total_sq = count.to(device), total.to(device), total_sq.to(device)
        labels = (y - offset).to(device)
        count.index_add_(0, labels, torch.ones_like(labels, dtype=torch.float64))
        total.index_add_(0, labels, f)
        total_sq.index_add_(0, labels, f.pow(2).sum(1))
    if distributed.active():  # a rank may have had no batch: reduce on the process group's device
        reduce_device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() \
            and torch.distributed.get_backend() == "nccl" else torch.device("cpu")
        count, total, total_sq = (distributed.all_reduce_sum(t.to(reduce_device)) for t in (count, total, total_sq))
    mean = total / count.clamp(min=1)[:, None]
    # sum_i ||f_i - mu||^2 = sum_i ||f_i||^2 - n ||mu||^2; tr(Sigma) = that / (n - 1)
    scatter = total_sq - count * mean.pow(2).sum(1)
    trace_per_dim = scatter.clamp(min=0) / (count - 1).clamp(min=1) / dim
    return count, mean.float(), trace_per_dim.float()
