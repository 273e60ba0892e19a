"""`speed.*`: GPU options that change how fast a run computes, not what it computes.

- `channels_last`: the model's 4-D weights in NHWC memory format before every fit (convolutions
  then run NHWC, faster on tensor cores; inputs follow the weights inside the first convolution).
  Modules a method adds later (heads, per-task layers) are converted at the next fit. MIND and
  PackNet refuse it (`supports_channels_last = False`: their allocation flattens weights and
  ownership masks as NCHW tensors).
- `compile`: `torch.compile` the backbone's forward in place (`nn.Module.compile`: parameter names
  and checkpoints stay as they are). Worth it when the model keeps its shapes within a phase, which
  holds for every method here; a method that swaps gates or per-task layers between phases costs a
  recompilation per swap.
- `data_on_device`: in-memory datasets (CIFAR, MNIST, digits) are moved to the GPU once per
  phase, so a batch is a device-side index, not a host-to-device copy.

`trainer.precision=bf16-mixed` is Lightning's own key. `scripts/benchmark.py` measures each.
"""
from __future__ import annotations

import torch

from lifelong.data.datasets import ImageSet
from lifelong.errors import ConfigError


def prepare(method, channels_last: bool = False, compile: bool = False) -> None:
    """Before a fit: the memory format, and (once) the compiled backbone."""
    if channels_last:
        if not getattr(method, "supports_channels_last", True):
            raise ConfigError(f"speed.channels_last=true: {type(method).__name__} indexes its weights and masks as "
                              f"contiguous NCHW tensors; run it with speed.channels_last=false")
        method.to(memory_format=torch.channels_last)
    backbone = getattr(getattr(method, "net", None), "backbone", None)
    if compile and backbone is not None and not getattr(backbone, "_lifelong_compiled", False):
        backbone.compile()
        backbone._lifelong_compiled = True


def on_device(data, device: torch.device):
    """`data` with its tensors on `device` when it is an in-memory `ImageSet` (else unchanged)."""
    if isinstance(data, ImageSet) and device.type != "cpu":
        return ImageSet(data.x.to(device), data.y.to(device), data.class_names)
    return data
