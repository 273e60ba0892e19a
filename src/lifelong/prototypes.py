"""Per-class feature statistics of a frozen backbone, for the exemplar-free methods that classify
from prototypes (FeTrIL's class means, FeCAM's means and covariances).

Features are taken in eval mode on the un-augmented training images. Under DDP every rank computes
the same full pass (these are single forward passes over one task's data), and the methods then
broadcast what they keep from rank zero, so every rank holds identical statistics.
"""
from __future__ import annotations

import torch
from torch import nn


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
