"""Gated layers for parameter isolation: one network, one sub-network per task (MIND, PackNet).

- `GatedConv2d`, `GatedLinear`: `forward` uses `weight * gate`. `owner` (an int8 buffer shaped like
  the weight, so checkpoints hold it) says which task owns each weight, `FREE` (-1) for none yet;
  `gate` (a float buffer recomputed from `owner`, not saved) selects the sub-network the forward
  pass runs. `gate = None` runs the dense layer.
- `gate_layers(module)` swaps every `nn.Conv2d`/`nn.Linear` of a backbone for its gated twin, in
  place and keeping the weights; `gated_resnet32` is the ResNet-32 of MIND's code: option-A
  (parameter-free) shortcuts, bias-free convolutions, every convolution gated.
- `BatchNormSnapshots`: per-task copies of every BatchNorm layer (affine parameters, running
  statistics, batch counter) as `[n_tasks, C]` buffers, loaded into the live layers in place.
- `allocate`: gives a task `numel // n_tasks` of a layer's still-free weights, at random or by
  magnitude (MIND spec, Sec. 1.2 step 5 and Sec. 1.3).
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from lifelong.models.backbones import resnet32

FREE = -1  # owner id of a weight no task owns yet
MAX_TASKS = 127  # owner ids are int8


class _Gating:
    """Owner map and gate shared by the gated layer types."""

    weight: nn.Parameter

    def _init_gating(self) -> None:
        # int8 as the official masks (at most MAX_TASKS tasks); gloo cannot broadcast int16 under DDP.
        self.register_buffer("owner", torch.full(self.weight.shape, FREE, dtype=torch.int8, device=self.weight.device))
        self.register_buffer("gate", None, persistent=False)  # None: dense

    def gated_weight(self) -> torch.Tensor:
        return self.weight if self.gate is None else self.weight * self.gate

    def select(self, task: int | None, nested: bool = True) -> None:
        """Gate on the weights of sub-network `task`: tasks 0..task (nested) or `task` alone.

        `task=None` opens every weight (the dense layer).
        """
        if task is None:
            self.gate = None
            return
        owned = (self.owner >= 0) & (self.owner <= task) if nested else self.owner == task
        self.gate = owned.to(self.weight.dtype)


class GatedConv2d(nn.Conv2d, _Gating):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_gating()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.gated_weight(), self.bias)


class GatedLinear(nn.Linear, _Gating):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_gating()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.gated_weight(), self.bias)


GatedLayer = GatedConv2d | GatedLinear


def _gated_twin(layer: nn.Module) -> nn.Module | None:
    if type(layer) is nn.Conv2d:
        twin = GatedConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                           layer.dilation, layer.groups, layer.bias is not None, layer.padding_mode,
                           device=layer.weight.device, dtype=layer.weight.dtype)
    elif type(layer) is nn.Linear:
        twin = GatedLinear(layer.in_features, layer.out_features, layer.bias is not None,
                           device=layer.weight.device, dtype=layer.weight.dtype)
    else:
        return None
    twin.weight = layer.weight  # the very same Parameter: the swap keeps the initialisation
    if layer.bias is not None:
        twin.bias = layer.bias
    return twin


def gate_layers(module: nn.Module) -> nn.Module:
    """Replace every plain `nn.Conv2d` and `nn.Linear` inside `module` by its gated twin (in place)."""
    for name, child in module.named_children():
        twin = _gated_twin(child)
        if twin is not None:
            setattr(module, name, twin)
        else:
            gate_layers(child)
    return module


def gated_layers(module: nn.Module) -> list[tuple[str, GatedLayer]]:
    """The gated layers of `module`, by name, in a fixed order."""
    return [(n, m) for n, m in module.named_modules() if isinstance(m, (GatedConv2d, GatedLinear))]


def batchnorm_layers(module: nn.Module) -> list[tuple[str, _BatchNorm]]:
    return [(n, m) for n, m in module.named_modules() if isinstance(m, _BatchNorm)]


def select(module: nn.Module, task: int | None, nested: bool = True) -> None:
    """Gate every layer of `module` on sub-network `task` (None: dense)."""
    for _, layer in gated_layers(module):
        layer.select(task, nested)


def gated_resnet32(in_channels: int = 3, shortcut: str = "A", feature_grid: int = 1, **_) -> nn.Module:
    """MIND's `gresnet32`: the CIFAR ResNet-32 with every convolution gated.

    Convolutions are bias-free and the default option-A shortcut has no parameters, so the gated
    convolutions and the BatchNorm layers are the whole network. `feature_grid=2` is MIND's TinyImageNet and
    Core50 width: 256-d features from 64x64 inputs (`CifarResNet`).
    """
    return gate_layers(resnet32(in_channels, shortcut, feature_grid=feature_grid))


# ---------------------------------------------------------------------------------------- allocation
@torch.no_grad()
def allocate(layer: GatedLayer, task: int, n_tasks: int, scores: torch.Tensor | None = None) -> torch.Tensor:
    """Give `task` `numel // n_tasks` of the layer's free weights (fewer if fewer are free).

    MIND (`pruner.py:22-43`): always 1/N of the layer's *total* size, so every
    task gets the same share; drawn uniformly at random from the free weights (`scores=None`,
    using torch's global RNG on the CPU, so a seed gives the same draw on any device), or the free
    weights with the largest `scores` (magnitude pruning, Sec. 1.3 and PackNet). Weights already
    owned are never reassigned. Returns the flat indices given to the task.
    """
    owner = layer.owner.view(-1)
    free = (owner == FREE).nonzero().squeeze(1)
    n = min(owner.numel() // n_tasks, free.numel())
    if scores is None:
        chosen = free[torch.randperm(free.numel())[:n].to(free.device)]
    else:
        chosen = free[scores.reshape(-1)[free].topk(n).indices]
    owner[chosen] = task
    return chosen


@torch.no_grad()
def he_normal_(weight: torch.Tensor, where: torch.Tensor | None = None) -> None:
    """MIND's re-initialisation: N(0, 2 / (k*k*C_out)) for a convolution and
    N(0, 2 / (out*in)) for a linear layer; only the entries where `where` is true, if given."""
    fan = weight[0, 0].numel() * weight.shape[0] if weight.dim() == 4 else weight.numel()
    fresh = torch.randn(weight.shape) * (2.0 / fan) ** 0.5
    fresh = fresh.to(weight.device, weight.dtype)
    weight.copy_(fresh if where is None else torch.where(where, fresh, weight))


# ---------------------------------------------------------------------------------------- BatchNorm
_BN_FIELDS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _key(name: str, field: str) -> str:
    return f"{name.replace('.', '__')}__{field}"


class BatchNormSnapshots(nn.Module):
    """Per-task copies of every BatchNorm layer of `model`: `[n_tasks, C]` buffers, in checkpoints.

    `save(model, t)` copies the live layers into slot t; `load(model, t)` copies slot t into the live
    layers, in place (no copy of the model). `saved[t]` says whether slot t holds a snapshot.
    """

    def __init__(self, model: nn.Module, n_tasks: int):
        super().__init__()
        self.names = [name for name, _ in batchnorm_layers(model)]
        for name, bn in batchnorm_layers(model):
            for field in _BN_FIELDS:
                live = getattr(bn, field, None)
                if live is not None:
                    self.register_buffer(_key(name, field), torch.zeros((n_tasks, *live.shape), dtype=live.dtype))
        # uint8, not bool: DDP broadcasts buffers, and gloo (CPU) cannot broadcast bool tensors.
        self.register_buffer("saved", torch.zeros(n_tasks, dtype=torch.uint8))

    def _pairs(self, model: nn.Module) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        layers = dict(batchnorm_layers(model))
        for name in self.names:
            for field in _BN_FIELDS:
                live = getattr(layers[name], field, None)
                if live is not None:
                    yield live, getattr(self, _key(name, field))

    @torch.no_grad()
    def save(self, model: nn.Module, task: int) -> None:
        for live, slots in self._pairs(model):
            slots[task].copy_(live)
        self.saved[task] = 1

    @torch.no_grad()
    def load(self, model: nn.Module, task: int) -> None:
        for live, slots in self._pairs(model):
            live.copy_(slots[task])


@torch.no_grad()
def batchnorm_state(model: nn.Module) -> list[torch.Tensor]:
    """A clone of the live BatchNorm tensors (a few thousand numbers), to put back with `set_batchnorm_state`."""
    return [getattr(bn, f).detach().clone() for _, bn in batchnorm_layers(model) for f in _BN_FIELDS
            if getattr(bn, f, None) is not None]


@torch.no_grad()
def set_batchnorm_state(model: nn.Module, state: list[torch.Tensor]) -> None:
    live = [getattr(bn, f) for _, bn in batchnorm_layers(model) for f in _BN_FIELDS if getattr(bn, f, None) is not None]
    for tensor, value in zip(live, state, strict=True):
        tensor.copy_(value)
