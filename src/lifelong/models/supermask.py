"""Supermask layers (Wortsman et al., NeurIPS 2020, "Supermasks in Superposition"; edge-popup of
Ramanujan et al., CVPR 2020): a fixed random weight W and, per task, learned scores S_t whose top
`density` fraction by |S_t| forms the binary mask M_t, with the straight-through gradient.

- `SupermaskLayer`: a Linear or Conv2d with W a buffer (signed Kaiming constant,
  +-sqrt(2 / fan_in): SupSup's `signed_constant` init), no bias, and one score tensor per task
  (Kaiming uniform, SupSup's `mask_init`). `forward(h, task)` uses W * M_task;
  `forward(h, alphas=a)` the superposition sum_i a[:, i] W * M_i with per-sample coefficients.
- `supermask_backbone(backbone)` rebuilds our `mlp` or `convnet` from such layers (no BatchNorm:
  statistics shared by the tasks would change old tasks' outputs).
- `SupermaskHead`: the same for one task's output layer.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from lifelong.errors import ConfigError
from lifelong.models.backbones import MLP, ConvNet


class TopK(torch.autograd.Function):
    """1 on the `density` fraction of the largest entries, 0 elsewhere; gradient passed straight through."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, density: float) -> torch.Tensor:
        flat = scores.flatten()
        k = max(1, int(round(density * flat.numel())))
        mask = torch.zeros_like(flat)
        mask[flat.topk(k).indices] = 1
        return mask.view_as(scores)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class SupermaskLayer(nn.Module):
    def __init__(self, shape: tuple[int, ...], density: float, stride: int = 1, padding: int = 0):
        super().__init__()
        self.density, self.stride, self.padding = density, stride, padding
        self.convolutional = len(shape) == 4
        self.out_features = shape[0]
        weight = torch.empty(shape)
        fan_in = nn.init._calculate_correct_fan(weight, "fan_in")
        self.register_buffer("weight", torch.randn(shape).sign() * math.sqrt(2.0 / fan_in))
        self.scores = nn.ParameterList()

    def add_task(self) -> None:
        scores = torch.empty_like(self.weight)
        nn.init.kaiming_uniform_(scores, a=math.sqrt(5))
        self.scores.append(nn.Parameter(scores))

    def mask(self, task: int) -> torch.Tensor:
        return TopK.apply(self.scores[task].abs(), self.density)  # edge-popup ranks |scores|

    def _apply_weight(self, h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if self.convolutional:
            return F.conv2d(h, weight, stride=self.stride, padding=self.padding)
        return F.linear(h, weight)

    def forward(self, h: torch.Tensor, task: int | None = None, alphas: torch.Tensor | None = None) -> torch.Tensor:
        if alphas is None:
            return self._apply_weight(h, self.weight * self.mask(task))
        out = 0
        for i in range(alphas.shape[1]):
            coefficient = alphas[:, i].view(-1, *([1] * (h.dim() - 1)))
            out = out + coefficient * self._apply_weight(h, self.weight * self.mask(i).detach())
        return out


class SupermaskBackbone(nn.Module):
    def __init__(self, layers: list[SupermaskLayer], convolutional: bool):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.convolutional = convolutional
        self.out_dim = layers[-1].out_features

    def add_task(self) -> None:
        for layer in self.layers:
            layer.add_task()

    def forward(self, x: torch.Tensor, task: int | None = None, alphas: torch.Tensor | None = None) -> torch.Tensor:
        h = x if self.convolutional else x.flatten(1)
        for layer in self.layers:
            h = F.relu(layer(h, task, alphas))
            if self.convolutional:
                h = F.max_pool2d(h, 2, ceil_mode=True)
        return F.adaptive_avg_pool2d(h, 1).flatten(1) if self.convolutional else h


class SupermaskHead(nn.Module):
    """One task's output layer: a fixed random weight and that task's scores."""

    def __init__(self, in_features: int, out_features: int, density: float):
        super().__init__()
        self.layer = SupermaskLayer((out_features, in_features), density)
        self.layer.add_task()
        self.out_features = out_features

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.layer(h, 0)


def supermask_backbone(backbone: nn.Module, density: float) -> SupermaskBackbone:
    """The supermask twin of an `mlp` or `convnet` backbone (same layer sizes, fixed random weights)."""
    if isinstance(backbone, MLP):
        return SupermaskBackbone([SupermaskLayer((m.out_features, m.in_features), density)
                                  for m in backbone.layers if isinstance(m, nn.Linear)], convolutional=False)
    if isinstance(backbone, ConvNet):
        return SupermaskBackbone([SupermaskLayer(tuple(m.weight.shape), density, m.stride[0], m.padding[0])
                                  for m in backbone.features if isinstance(m, nn.Conv2d)], convolutional=True)
    raise ConfigError(f"method=supsup masks the weights of an MLP or a plain convnet, not backbone "
                      f"{type(backbone).__name__}; valid choices: backbone=mlp, backbone=convnet")
