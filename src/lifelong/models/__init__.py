"""Backbones (plain `nn.Module`s exposing `out_dim`) and the incremental multi-head network."""

from lifelong.models.backbones import convnet, mlp, resnet18, resnet32, resnet50, torchvision_resnet
from lifelong.models.net import IncrementalNet

__all__ = ["IncrementalNet", "convnet", "mlp", "resnet18", "resnet32", "resnet50", "torchvision_resnet"]
