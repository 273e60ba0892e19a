"""Channel-wise lightweight reprogramming of a frozen backbone (Ge et al., ICCV 2023, Sec. 3).

A CLR layer is a k x k depthwise convolution (one kernel per channel, no bias) placed right after a
frozen convolution and before its BatchNorm, initialised to the identity (centre tap 1, others 0),
so that at initialisation the reprogrammed network computes exactly what the pretrained one does
(official `network/ReGhos_Block.py:5-20`: `dirac_` on a `groups=C` 3x3 conv).

`ReprogrammedBackbone` keeps one frozen copy of the backbone and, per task, its own CLR kernels and
its own BatchNorm layers (affine parameters and running statistics, initialised from the
pretrained ones). `set_task(t)` routes every wrapped layer through task t's tensors. Which convs
get a CLR layer (official `network/utils.py:31-48`):

- `k_gt_1` (the paper's CLR, `--method Ghost_reduced_v1`): every conv with a kernel larger than
  1x1; in a ResNet the stem and every 3x3, not the 1x1 bottleneck or shortcut convs.
- `all` (CLR-Full, `--method Ghost`): every conv, 1x1 included.
- `v2` (`Ghost_reduced_v2`): k x k CLR after convs larger than 1x1, a 1x1 depthwise (a scale per
  channel) after 1x1 convs.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

INSERT_RULES = ("k_gt_1", "all", "v2")


def _clr_kernel_size(conv: nn.Conv2d, insert: str, kernel_size: int) -> int | None:
    """Kernel size of the CLR layer after `conv`, or None for no CLR layer."""
    large = any(k > 1 for k in conv.kernel_size)
    if insert == "all" or large:
        return kernel_size
    return 1 if insert == "v2" else None


def identity_depthwise(channels: int, kernel_size: int) -> nn.Conv2d:
    """A depthwise conv that is the identity: one k x k kernel per channel, centre tap 1."""
    layer = nn.Conv2d(channels, channels, kernel_size, stride=1, padding=kernel_size // 2, groups=channels, bias=False)
    nn.init.dirac_(layer.weight, groups=channels)
    return layer


class ReprogrammedConv(nn.Module):
    """`y = CLR_t(conv(x))`: a frozen conv followed by the active task's depthwise CLR kernels."""

    def __init__(self, conv: nn.Conv2d, kernel_size: int):
        super().__init__()
        self.conv = conv
        self.kernel_size = kernel_size
        self.clr = nn.ModuleList()
        self.task = 0

    def add_task(self) -> nn.Conv2d:
        layer = identity_depthwise(self.conv.out_channels, self.kernel_size).to(self.conv.weight.device)
        self.clr.append(layer)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.clr[self.task](self.conv(x))


class TaskBatchNorm(nn.Module):
    """One BatchNorm per task, each a copy of the pretrained one (`pretrained` itself never runs)."""

    def __init__(self, bn: nn.BatchNorm2d):
        super().__init__()
        self.pretrained = bn
        self.per_task = nn.ModuleList()
        self.task = 0

    def add_task(self) -> nn.BatchNorm2d:
        bn = copy.deepcopy(self.pretrained)
        for p in bn.parameters():
            p.requires_grad_(True)
        self.per_task.append(bn)
        return bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.per_task[self.task](x)


class ReprogrammedBackbone(nn.Module):
    """A frozen backbone whose convs and BatchNorms are routed through the active task's tensors.

    Args:
        backbone: any module of `Conv2d`/`BatchNorm2d` layers exposing `out_dim` (modified in place).
        insert: which convs get a CLR layer, one of `INSERT_RULES`.
        kernel_size: size of the CLR kernels (official: 3).
        task_bn: a BatchNorm copy per task (official `train_BN`); False keeps the pretrained
            BatchNorms frozen in eval mode for every task.
    """

    def __init__(self, backbone: nn.Module, insert: str = "k_gt_1", kernel_size: int = 3, task_bn: bool = True):
        super().__init__()
        for p in backbone.parameters():
            p.requires_grad_(False)
        self.out_dim = backbone.out_dim
        self.insert, self.kernel_size, self.task_bn = insert, kernel_size, task_bn
        self.convs: list[ReprogrammedConv] = []
        self.norms: list[TaskBatchNorm] = []
        self._wrap(backbone)
        self.body = backbone
        self.n_tasks = 0

    def _wrap(self, module: nn.Module) -> None:
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Conv2d):
                k = _clr_kernel_size(child, self.insert, self.kernel_size)
                if k is not None:
                    wrapped = ReprogrammedConv(child, k)
                    setattr(module, name, wrapped)
                    self.convs.append(wrapped)
            elif isinstance(child, nn.BatchNorm2d) and self.task_bn:
                wrapped = TaskBatchNorm(child)
                setattr(module, name, wrapped)
                self.norms.append(wrapped)
            else:
                self._wrap(child)

    def frozen_parts(self) -> list[nn.Module]:
        """The pretrained layers, shared by every task; BatchNorms among them stay in eval mode."""
        if self.task_bn:
            return [norm.pretrained for norm in self.norms]
        return [m for m in self.body.modules() if isinstance(m, nn.BatchNorm2d)]

    def add_task(self) -> None:
        for layer in self.convs + self.norms:
            layer.add_task()
        self.n_tasks += 1
        self.set_task(self.n_tasks - 1)

    def set_task(self, task_id: int) -> None:
        if not 0 <= task_id < self.n_tasks:
            raise IndexError(f"task {task_id} has no reprogramming (tasks so far: {self.n_tasks})")
        for layer in self.convs + self.norms:
            layer.task = task_id

    def clr_layers(self, task_id: int) -> list[nn.Conv2d]:
        return [conv.clr[task_id] for conv in self.convs]

    def bn_layers(self, task_id: int) -> list[nn.BatchNorm2d]:
        return [norm.per_task[task_id] for norm in self.norms]

    def task_modules(self, task_id: int) -> list[nn.Module]:
        """Everything task `task_id` owns in the backbone: its CLR layers and BatchNorm copies."""
        return self.clr_layers(task_id) + self.bn_layers(task_id)

    def pretrained_parameter_count(self) -> int:
        """Parameters of the frozen pretrained backbone (without any task's tensors)."""
        task_params = {id(p) for t in range(self.n_tasks) for m in self.task_modules(t) for p in m.parameters()}
        return sum(p.numel() for p in self.body.parameters() if id(p) not in task_params)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
