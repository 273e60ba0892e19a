"""Networks with hard attention to the task (Serra et al., ICML 2018): every hidden unit (a neuron
or a channel) of layer l is multiplied by a task gate a_l^t = sigmoid(s * e_l^t), with e_l^t a
learned embedding per task and layer and s the gate's slope.

`hat_backbone(backbone)` rebuilds a backbone as such a network:

- `mlp`, `convnet` -> `HATBackbone`: the same layer sizes, every Linear/Conv2d followed by ReLU and the
  gate (and the max-pool, for the convnet). BatchNorm is left out, as in the official networks
  (`src/networks/alexnet_hat.py`, `mlp_hat.py`); layers get biases in its place.
- `resnet32` / `gated_resnet32` (CIFAR ResNet), `resnet18`, `resnet50` (torchvision) -> `HATResNet`:
  the backbone's own convolutions (its initialisation or pretrained weights kept), a gate on the output
  channels of the stem, of every convolution inside a residual branch but the last, and of every
  block's output after the residual sum (so the gate of a block's input is the previous block's gate,
  and the official rule of Eq. 2 applies to every convolution, shortcut convolutions included). Each
  BatchNorm becomes one copy per task (initialised from the backbone's), because running statistics
  and affine parameters shared by the tasks would change old tasks' outputs; HAT's official code has
  no ResNet (its AlexNet has no BatchNorm), per-task BatchNorm is what MIND and SupSup's ResNets do.

Both expose `layers` (the masked Linear/Conv2d layers) and `links` (per layer, the indices of the gates
on its input and on its output; None for the network's input), from which `weight_masks` builds the
gradient factors of Eq. 2.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from lifelong.errors import ConfigError
from lifelong.models.backbones import MLP, CifarResNet, ConvNet, TorchvisionResNet


class _GatedUnits(nn.Module):
    """Per-task embeddings for every gate, and the gradient masks that keep what old tasks use."""

    layers: nn.ModuleList
    links: list[tuple[int | None, int]]

    def _init_gates(self, units: list[int]) -> None:
        self.units = units
        # One embedding vector per gate and task; grows by `add_task` (official: nn.Embedding, N(0, 1)).
        self.embeddings = nn.ModuleList(nn.ParameterList() for _ in units)

    @property
    def n_tasks(self) -> int:
        return len(self.embeddings[0])

    def add_task(self) -> None:
        device = self.layers[0].weight.device
        for units, embedding in zip(self.units, self.embeddings):
            embedding.append(nn.Parameter(torch.randn(units, device=device)))

    def task_embeddings(self, task: int) -> list[nn.Parameter]:
        return [embedding[task] for embedding in self.embeddings]

    def gates(self, task: int, s: float | None) -> list[torch.Tensor]:
        """sigmoid(s * e) (Eq. 1); `s=None`: the s -> infinity limit, the step function 1[e > 0]."""
        if s is None:
            return [(e > 0).to(e.dtype) for e in self.task_embeddings(task)]
        return [torch.sigmoid(s * e) for e in self.task_embeddings(task)]

    def weight_masks(self, used: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, the gradient factors (weight, bias) that keep the units old tasks use:
        1 - min(a_post^{<t}[i], a_pre^{<t}[j]) for the weight from unit j to unit i, 1 - a_post^{<t}[i]
        for the bias (Eq. 2); the network's input counts as used."""
        masks = []
        for layer, (pre, post) in zip(self.layers, self.links):
            shape = (-1,) + (1,) * (layer.weight.dim() - 1)
            kept = used[post].view(shape)
            if pre is not None:
                kept = torch.minimum(kept, used[pre].view((1, -1) + (1,) * (layer.weight.dim() - 2)))
            masks.append((1 - kept.expand_as(layer.weight), 1 - used[post]))
        return masks


class HATBackbone(_GatedUnits):
    """A chain of layers (MLP, convnet); `forward(x, gates)`: unit l of layer k scaled by `gates[k][l]`."""

    def __init__(self, layers: list[nn.Module], convolutional: bool):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.convolutional = convolutional
        self._init_gates([layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
                          for layer in layers])
        self.links = [(None if k == 0 else k - 1, k) for k in range(len(layers))]
        self.out_dim = self.units[-1]

    def forward(self, x: torch.Tensor, gates: list[torch.Tensor], task: int | None = None) -> torch.Tensor:
        h = x if self.convolutional else x.flatten(1)
        for layer, gate in zip(self.layers, gates):
            h = F.relu(layer(h))
            if self.convolutional:
                h = F.max_pool2d(h, 2, ceil_mode=True) * gate.view(1, -1, 1, 1)
            else:
                h = h * gate
        return F.adaptive_avg_pool2d(h, 1).flatten(1) if self.convolutional else h


def _plain_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """A plain Conv2d holding `conv`'s weights (a gated twin of MIND's `gated_resnet32` runs dense)."""
    plain = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, conv.bias is not None, device=conv.weight.device)
    plain.weight = conv.weight
    if conv.bias is not None:
        plain.bias = conv.bias
    return plain


class HATResNet(_GatedUnits):
    """A residual network with HAT gates; `forward(x, gates, task)` runs task `task`'s BatchNorm copies.

    A block computes relu(branch(x) + shortcut(x)) * gate_out, with branch = conv-BN-ReLU-gate ... conv-BN
    and shortcut the identity, option A's zero padding, or a 1x1 conv-BN.
    """

    def __init__(self, stem: tuple[nn.Conv2d, nn.BatchNorm2d], pool: nn.Module, blocks: list[tuple[list, nn.Module]]):
        super().__init__()
        layers, templates, links, units = [], [], [], []

        def add(conv: nn.Conv2d, norm: nn.BatchNorm2d, pre: int | None, post: int | None = None) -> int:
            if post is None:
                units.append(conv.out_channels)
                post = len(units) - 1
            layers.append(_plain_conv(conv))
            templates.append(copy.deepcopy(norm))
            links.append((pre, post))
            return post

        gate = add(*stem, None)
        # plan: per block, the layer indices of its branch, the shortcut (None, a parameter-free module,
        # or a layer index) and the gate of its output
        self.plan, self.pads = [], nn.ModuleList()
        for branch, shortcut in blocks:
            inner, pre, indices = len(branch) - 1, gate, []
            for conv, norm in branch[:inner]:
                pre = add(conv, norm, pre)
                indices.append(len(layers) - 1)
            out = add(*branch[inner], pre)
            indices.append(len(layers) - 1)
            if isinstance(shortcut, nn.Sequential):  # 1x1 conv + BatchNorm (option B / torchvision downsample)
                add(shortcut[0], shortcut[1], gate, out)
                shortcut = len(layers) - 1
            elif isinstance(shortcut, nn.Identity) or shortcut is None:
                shortcut = None
            else:  # option A's zero padding: no parameters
                self.pads.append(shortcut)
                shortcut = f"pad{len(self.pads) - 1}"
            self.plan.append((indices, shortcut, out))
            gate = out
        self.layers = nn.ModuleList(layers)
        self.links = links
        self._init_gates(units)
        self.pool = pool
        self.out_dim = units[-1]
        # the BatchNorm every task's copy starts from (not a parameter: only the copies train)
        self._norm_templates = templates
        self.norms = nn.ModuleList(nn.ModuleList() for _ in layers)

    def add_task(self) -> None:
        super().add_task()
        device = self.layers[0].weight.device
        for norms, template in zip(self.norms, self._norm_templates):
            norms.append(copy.deepcopy(template).to(device))

    def _conv_bn(self, i: int, h: torch.Tensor, task: int) -> torch.Tensor:
        return self.norms[i][task](self.layers[i](h))

    def forward(self, x: torch.Tensor, gates: list[torch.Tensor], task: int) -> torch.Tensor:
        view = lambda g: g.view(1, -1, 1, 1)  # noqa: E731
        h = self.pool(F.relu(self._conv_bn(0, x, task)) * view(gates[0]))
        for indices, shortcut, out in self.plan:
            z = h
            for i in indices[:-1]:
                z = F.relu(self._conv_bn(i, z, task)) * view(gates[self.links[i][1]])
            z = self._conv_bn(indices[-1], z, task)
            if shortcut is None:
                skip = h
            elif isinstance(shortcut, str):
                skip = self.pads[int(shortcut[3:])](h)
            else:
                skip = self._conv_bn(shortcut, h, task)
            h = F.relu(z + skip) * view(gates[out])
        return F.adaptive_avg_pool2d(h, 1).flatten(1)


def _resnet_parts(backbone: nn.Module):
    """(stem conv and BatchNorm, the pooling after the stem, [(branch [(conv, bn)], shortcut)])."""
    if isinstance(backbone, TorchvisionResNet):
        model = backbone.model
        stem, pool, stages = (model.conv1, model.bn1), model.maxpool, [model.layer1, model.layer2, model.layer3,
                                                                       model.layer4]
    else:
        stem, pool, stages = (backbone.conv1, backbone.bn1), nn.Identity(), [backbone.layer1, backbone.layer2,
                                                                             backbone.layer3]
    blocks = []
    for stage in stages:
        for block in stage:
            branch = [(getattr(block, f"conv{i}"), getattr(block, f"bn{i}")) for i in (1, 2, 3) if hasattr(block, f"conv{i}")]
            shortcut = block.downsample if isinstance(backbone, TorchvisionResNet) else block.shortcut
            blocks.append((branch, shortcut))
    return stem, pool, blocks


def hat_backbone(backbone: nn.Module) -> HATBackbone | HATResNet:
    """The gated twin of a backbone: `mlp`/`convnet` (fresh weights, the layer sizes kept) or a ResNet
    (its own weights, per-task BatchNorm)."""
    if isinstance(backbone, MLP):
        linears = [m for m in backbone.layers if isinstance(m, nn.Linear)]
        return HATBackbone([nn.Linear(m.in_features, m.out_features) for m in linears], convolutional=False)
    if isinstance(backbone, ConvNet):
        convs = [m for m in backbone.features if isinstance(m, nn.Conv2d)]
        layers = [nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding) for m in convs]
        return HATBackbone(layers, convolutional=True)
    if isinstance(backbone, (CifarResNet, TorchvisionResNet)):
        gated = HATResNet(*_resnet_parts(backbone))
        gated.weights = getattr(backbone, "weights", None)
        gated.head_init = getattr(backbone, "head_init", "default")
        return gated
    raise ConfigError(f"method=hat gates the units of an MLP, a convnet or a ResNet, not backbone "
                      f"{type(backbone).__name__}; valid choices: backbone=mlp, convnet, resnet32, gated_resnet32, "
                      f"resnet18, resnet50")
