"""Networks with hard attention to the task (Serra et al., ICML 2018): every hidden unit (a neuron
or a channel) of layer l is multiplied by a task gate a_l^t = sigmoid(s * e_l^t), with e_l^t a
learned embedding per task and layer and s the gate's slope.

`hat_backbone(backbone)` rebuilds our `mlp` or `convnet` as such a network: the same layer sizes,
every Linear/Conv2d followed by ReLU and the gate (and the max-pool, for the convnet). BatchNorm is
left out, as in the official networks (`src/networks/alexnet_hat.py`, `mlp_hat.py`): running
statistics shared by every task would change old tasks' outputs. Layers get biases in its place.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from lifelong.errors import ConfigError
from lifelong.models.backbones import MLP, ConvNet


class HATBackbone(nn.Module):
    """`forward(x, gates)`: features with unit l of layer k scaled by `gates[k][l]`."""

    def __init__(self, layers: list[nn.Module], convolutional: bool):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.convolutional = convolutional
        self.units = [layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels for layer in layers]
        self.out_dim = self.units[-1]
        # One embedding vector per layer and task; grows by `add_task` (official: nn.Embedding, N(0, 1)).
        self.embeddings = nn.ModuleList(nn.ParameterList() for _ in layers)

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

    def forward(self, x: torch.Tensor, gates: list[torch.Tensor]) -> torch.Tensor:
        h = x if self.convolutional else x.flatten(1)
        for layer, gate in zip(self.layers, gates):
            h = F.relu(layer(h))
            if self.convolutional:
                h = F.max_pool2d(h, 2, ceil_mode=True) * gate.view(1, -1, 1, 1)
            else:
                h = h * gate
        return F.adaptive_avg_pool2d(h, 1).flatten(1) if self.convolutional else h

    def weight_masks(self, used: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, the gradient factors (weight, bias) that keep the units old tasks use:
        1 - min(a_l^{<t}[i], a_{l-1}^{<t}[j]) for the weight from unit j to unit i, 1 - a_l^{<t}[i] for
        the bias (Eq. 2); the input of the first layer counts as used."""
        masks, previous = [], None
        for layer, post in zip(self.layers, used):
            shape = (-1,) + (1,) * (layer.weight.dim() - 1)
            if previous is None:
                weight = 1 - post.view(shape).expand_as(layer.weight)
            else:
                pre = previous.view((1, -1) + (1,) * (layer.weight.dim() - 2))
                weight = 1 - torch.minimum(post.view(shape), pre).expand_as(layer.weight)
            masks.append((weight, 1 - post))
            previous = post
        return masks


def hat_backbone(backbone: nn.Module) -> HATBackbone:
    """The gated twin of an `mlp` or `convnet` backbone (fresh weights; the layer sizes kept)."""
    if isinstance(backbone, MLP):
        linears = [m for m in backbone.layers if isinstance(m, nn.Linear)]
        return HATBackbone([nn.Linear(m.in_features, m.out_features) for m in linears], convolutional=False)
    if isinstance(backbone, ConvNet):
        convs = [m for m in backbone.features if isinstance(m, nn.Conv2d)]
        layers = [nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding) for m in convs]
        return HATBackbone(layers, convolutional=True)
    raise ConfigError(f"method=hat gates the units of an MLP or a plain convnet, not backbone "
                      f"{type(backbone).__name__}; valid choices: backbone=mlp, backbone=convnet")
