"""ResNets with re-parameterisable parallel branches, for SSRE (Zhu et al., CVPR 2022).

Every 3x3 convolution of the residual blocks is a `RepConv`: the main 3x3 convolution plus a
parallel 1x1 branch with the same stride (PyCIL `convs/modified_represnet.py`, `conv_block` in
"parallel_adapters" mode). Both are linear in the input, so the sum is one 3x3 convolution whose
kernel is the main kernel plus the 1x1 kernel zero-padded to 3x3 at its centre, and whose bias is
the sum of the biases: `merge()` folds the branch into the main convolution and zeroes the branch
(PyCIL `SSRE._network_compression`). The stem and the shortcut convolutions have no branch.

- `resnet18_rep`: PyCIL's `resnet18_rep` (64-512 channels, 3x3 stem for small images).
- `resnet32_rep`: the CIFAR ResNet-32 layout of `lifelong.models.backbones` (16/32/64 channels),
  option-B shortcuts (1x1 convolution), `blocks_per_stage` and `widths` configurable for tiny runs.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class RepConv(nn.Module):
    """y = conv3x3(x) + branch1x1(x) while `parallel`; after `merge()` the branch is in the 3x3 kernel."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=True)
        self.branch = nn.Conv2d(in_planes, planes, 1, stride, 0, bias=True)
        self.parallel = True  # structure, not state: set by the method at every task (PyCIL `switch`)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y + self.branch(x) if self.parallel else y

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the branch into the 3x3 kernel and bias, zero the branch: the same function of x."""
        self.conv.weight += F.pad(self.branch.weight, [1, 1, 1, 1])
        self.conv.bias += self.branch.bias
        self.branch.weight.zero_()
        self.branch.bias.zero_()


class RepBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1, self.bn1 = RepConv(in_planes, planes, stride), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = RepConv(planes, planes), nn.BatchNorm2d(planes)
        self.shortcut = nn.Identity()
        if stride != 1 or in_planes != planes:  # PyCIL: a 1x1 convolution with bias, no BatchNorm
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class RepResNet(nn.Module):
    """A ResNet whose block convolutions carry parallel branches; `out_dim` features after pooling."""

    def __init__(self, blocks_per_stage, widths, in_channels: int = 3, stem_width: int | None = None):
        super().__init__()
        stem_width = stem_width or widths[0]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem_width, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(stem_width), nn.ReLU(inplace=True))
        stages, in_planes = [], stem_width
        for i, (n, planes) in enumerate(zip(blocks_per_stage, widths)):
            blocks = []
            for j in range(n):
                blocks.append(RepBlock(in_planes, planes, 2 if (i > 0 and j == 0) else 1))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.out_dim = in_planes
        for m in self.modules():  # PyCIL: He init for every convolution, BN weight 1 and bias 0
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def rep_convs(self) -> list[RepConv]:
        return [m for m in self.modules() if isinstance(m, RepConv)]

    def set_parallel(self, parallel: bool) -> None:
        for conv in self.rep_convs():
            conv.parallel = parallel

    def merge(self) -> None:
        """Re-parameterise: every branch into its main convolution, then the single-branch structure."""
        for conv in self.rep_convs():
            conv.merge()
        self.set_parallel(False)

    def branch_parameters(self):
        return [p for conv in self.rep_convs() for p in conv.branch.parameters()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.stages(self.stem(x)), 1).flatten(1)


def resnet18_rep(in_channels: int = 3, **_) -> RepResNet:
    """PyCIL's `resnet18_rep` for CIFAR: 3x3 stem, [2, 2, 2, 2] blocks at 64/128/256/512 channels."""
    return RepResNet((2, 2, 2, 2), (64, 128, 256, 512), in_channels)


def resnet32_rep(in_channels: int = 3, blocks_per_stage: int = 5, widths=(16, 32, 64), **_) -> RepResNet:
    """ResNet-32's layout (three stages of five blocks at 16/32/64 channels) with parallel branches."""
    widths = tuple(widths)
    return RepResNet((blocks_per_stage,) * len(widths), widths, in_channels)
