"""Supermask layers (Wortsman et al., NeurIPS 2020, "Supermasks in Superposition"; edge-popup of
Ramanujan et al., CVPR 2020): a fixed random weight W and, per task, learned scores S_t whose top
`density` fraction by |S_t| forms the binary mask M_t, with the straight-through gradient.

- `SupermaskLayer`: a Linear or Conv2d with W a buffer (signed Kaiming constant,
  +-sqrt(2 / fan_in): SupSup's `signed_constant` init), no bias, and one score tensor per task
  (Kaiming uniform, SupSup's `mask_init`). `forward(h, task)` uses W * M_task;
  `forward(h, alphas=a)` the superposition sum_i a[:, i] W * M_i with per-sample coefficients.
- `supermask_backbone(backbone)` rebuilds our `mlp` or `convnet` from such layers (no BatchNorm:
  statistics shared by the tasks would change old tasks' outputs), and a ResNet (`resnet32`,
  `gated_resnet32`, `resnet18`, `resnet50`) as `SupermaskResNet`: every convolution, shortcut ones
  included, a supermask layer followed by a per-task BatchNorm without affine parameters (SupSup's
  ResNets: `MultitaskMaskConv` and `MultitaskNonAffineBN` of the official `models/modules.py`). The
  superposition of such a layer is sum_i alpha_i BN_i(conv(h; W * M_i)): the paper's
  W * sum_i alpha_i M_i where the layer has no BatchNorm, each task's own statistics where it has.
  SupSup's premise is a random network: a pretrained backbone (`backbone.weights`) is refused.
- `SupermaskHead`: the same for one task's output layer.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from lifelong.errors import ConfigError
from lifelong.models.backbones import MLP, CifarResNet, ConvNet, TorchvisionResNet


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
    def __init__(self, shape: tuple[int, ...], density: float, stride: int = 1, padding: int = 0,
                 norm: bool = False):
        super().__init__()
        self.density, self.stride, self.padding, self.norm = density, stride, padding, norm
        self.norms = nn.ModuleList()  # per task, BatchNorm without affine parameters (norm=True)
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
        if self.norm:
            self.norms.append(nn.BatchNorm2d(self.out_features, affine=False, device=self.weight.device))

    def mask(self, task: int) -> torch.Tensor:
        return TopK.apply(self.scores[task].abs(), self.density)  # edge-popup ranks |scores|

    def _apply_weight(self, h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if self.convolutional:
            return F.conv2d(h, weight, stride=self.stride, padding=self.padding)
        return F.linear(h, weight)

    def _task_output(self, h: torch.Tensor, task: int, mask: torch.Tensor) -> torch.Tensor:
        out = self._apply_weight(h, self.weight * mask)
        return self.norms[task](out) if self.norm else out

    def forward(self, h: torch.Tensor, task: int | None = None, alphas: torch.Tensor | None = None) -> torch.Tensor:
        if alphas is None:
            return self._task_output(h, task, self.mask(task))
        out = 0
        for i in range(alphas.shape[1]):
            z = self._task_output(h, i, self.mask(i).detach())
            out = out + alphas[:, i].view(-1, *([1] * (z.dim() - 1))) * z
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


class SupermaskResNet(nn.Module):
    """A residual network of supermask layers: a block is relu(branch(x) + shortcut(x)), the branch
    conv-BN-ReLU ... conv-BN, the shortcut the identity, option A's zero padding or a 1x1 conv-BN."""

    def __init__(self, backbone: nn.Module, density: float):
        super().__init__()
        from lifelong.models.hat import _resnet_parts

        def twin(conv: nn.Conv2d) -> SupermaskLayer:
            return SupermaskLayer(tuple(conv.weight.shape), density, conv.stride[0], conv.padding[0], norm=True)

        (stem, _), pool, blocks = _resnet_parts(backbone)
        layers, self.plan, self.pads = [twin(stem)], [], nn.ModuleList()
        for branch, shortcut in blocks:
            indices = []
            for conv, _ in branch:
                layers.append(twin(conv))
                indices.append(len(layers) - 1)
            if isinstance(shortcut, nn.Sequential):
                layers.append(twin(shortcut[0]))
                shortcut = len(layers) - 1
            elif isinstance(shortcut, nn.Identity) or shortcut is None:
                shortcut = None
            else:
                self.pads.append(shortcut)
                shortcut = f"pad{len(self.pads) - 1}"
            self.plan.append((indices, shortcut))
        self.layers = nn.ModuleList(layers)
        self.pool = pool
        self.convolutional = True
        self.out_dim = layers[self.plan[-1][0][-1]].out_features

    def add_task(self) -> None:
        for layer in self.layers:
            layer.add_task()

    def forward(self, x: torch.Tensor, task: int | None = None, alphas: torch.Tensor | None = None) -> torch.Tensor:
        h = self.pool(F.relu(self.layers[0](x, task, alphas)))
        for indices, shortcut in self.plan:
            z = h
            for i in indices[:-1]:
                z = F.relu(self.layers[i](z, task, alphas))
            z = self.layers[indices[-1]](z, task, alphas)
            if shortcut is None:
                skip = h
            elif isinstance(shortcut, str):
                skip = self.pads[int(shortcut[3:])](h)
            else:
                skip = self.layers[shortcut](h, task, alphas)
            h = F.relu(z + skip)
        return F.adaptive_avg_pool2d(h, 1).flatten(1)


class SupermaskHead(nn.Module):
    """One task's output layer: a fixed random weight and that task's scores."""

    def __init__(self, in_features: int, out_features: int, density: float):
        super().__init__()
        self.layer = SupermaskLayer((out_features, in_features), density)
        self.layer.add_task()
        self.out_features = out_features

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.layer(h, 0)


def supermask_backbone(backbone: nn.Module, density: float) -> SupermaskBackbone | SupermaskResNet:
    """The supermask twin of a backbone: the same layer sizes, fixed random weights."""
    if getattr(backbone, "weights", None) is not None:
        raise ConfigError(f"method=supsup learns masks over a fixed random network (Wortsman et al., Sec. 3), so "
                          f"backbone.weights={backbone.weights} would be thrown away; set backbone.weights=null")
    if isinstance(backbone, MLP):
        return SupermaskBackbone([SupermaskLayer((m.out_features, m.in_features), density)
                                  for m in backbone.layers if isinstance(m, nn.Linear)], convolutional=False)
    if isinstance(backbone, ConvNet):
        return SupermaskBackbone([SupermaskLayer(tuple(m.weight.shape), density, m.stride[0], m.padding[0])
                                  for m in backbone.features if isinstance(m, nn.Conv2d)], convolutional=True)
    if isinstance(backbone, (CifarResNet, TorchvisionResNet)):
        return SupermaskResNet(backbone, density)
    raise ConfigError(f"method=supsup masks the weights of an MLP, a convnet or a ResNet, not backbone "
                      f"{type(backbone).__name__}; valid choices: backbone=mlp, convnet, resnet32, gated_resnet32, "
                      f"resnet18, resnet50 (with backbone.weights=null)")
