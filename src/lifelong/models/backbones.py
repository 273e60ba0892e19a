"""Feature extractors. Each builder returns an `nn.Module` mapping images to `[B, out_dim]` features.

- `resnet32`: the CIFAR ResNet of He et al. (2016, Sec. 4.2): a 3x3 stem, three stages of five
  basic blocks at 16/32/64 channels, global average pooling, 64-d features. Option-A shortcuts
  (parameter-free: subsample and zero-pad channels) as in ABD's and MIND's code; option B (1x1
  convolution + BatchNorm) as in FACIL's `resnet32.py`.
- `resnet18`, `resnet50`: torchvision's, with torchvision's weights API; `small_input=True` swaps
  the 7x7/stride-2 stem and max-pool for a 3x3/stride-1 stem, the usual CIFAR adaptation.
- `convnet`: three conv-BN-ReLU-pool blocks, for quick runs on small images.
- `mlp`: two hidden layers on flattened pixels.
- `alexnet`: torchvision's AlexNet up to fc7 (4,096-d), split at `code_layer` (pool5 by default) into
  `code_input` and `from_code_input` for methods that constrain an intermediate representation (EBLL).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from lifelong.errors import ConfigError


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "A"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut_kind = shortcut
        self.shortcut = nn.Identity()
        if stride != 1 or in_planes != planes:
            if shortcut == "B":
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
                )
            else:
                self.pad = planes - in_planes
                self.shortcut = _ZeroPadShortcut(stride, self.pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class _ZeroPadShortcut(nn.Module):
    """Option A: spatial subsampling, new channels filled with zeros (no parameters)."""

    def __init__(self, stride: int, pad: int):
        super().__init__()
        self.stride, self.pad = stride, pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))


RESNET32_INITS = ("facil", "abd")


class CifarResNet(nn.Module):
    """Initialisation per source (`init`):

    - "facil": convs He-normal fan-out (ReLU gain), BatchNorm 1/0, heads PyTorch's default Linear init
      (FACIL `src/networks/resnet32.py`, the `for m in self.modules()` loop).
    - "abd": convs and heads `kaiming_normal_` with its defaults (fan-in, gain sqrt(2)), BatchNorm and
      head biases PyTorch's defaults (ABD `models/resnet.py`, `_weights_init` applied to Conv2d and Linear).
    The head part is carried out by `IncrementalNet.add_head`, which reads `head_init`.

    `feature_grid` g: the last feature map is average-pooled to g x g cells and flattened, so the features
    have `64 * g * g` dimensions. g = 1 is global average pooling (every source on 32x32 inputs); MIND's
    TinyImageNet/Core50 network keeps `AvgPool2d(8)` on the 16x16 map of 64x64 inputs, a 2x2 grid: 256-d
    features, "64 * e with e = 4" (MIND spec, models/gated_resnet32.py:139-150), i.e. g = 2.
    """

    def __init__(self, blocks_per_stage: int, in_channels: int = 3, shortcut: str = "A", widths=(16, 32, 64),
                 init: str = "facil", feature_grid: int = 1):
        super().__init__()
        if int(feature_grid) < 1:
            raise ConfigError(f"backbone.feature_grid={feature_grid} must be a positive integer (1: global pooling)")
        self.feature_grid = int(feature_grid)
        if shortcut not in ("A", "B"):
            raise ConfigError(f"backbone.shortcut={shortcut!r} is unknown; valid choices: ['A', 'B']")
        if init not in RESNET32_INITS:
            raise ConfigError(f"backbone.init={init!r} is unknown; valid choices: {list(RESNET32_INITS)}")
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        layers, in_planes = [], widths[0]
        for i, planes in enumerate(widths):
            stage = []
            for j in range(blocks_per_stage):
                stride = 2 if (i > 0 and j == 0) else 1
                stage.append(BasicBlock(in_planes, planes, stride, shortcut))
                in_planes = planes
            layers.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3 = layers
        self.out_dim = widths[-1] * self.feature_grid ** 2
        self.init, self.head_init = init, ("kaiming_normal" if init == "abd" else "default")
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and init == "abd":
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return F.adaptive_avg_pool2d(x, self.feature_grid).flatten(1)


def resnet32(in_channels: int = 3, shortcut: str = "A", init: str = "facil", feature_grid: int = 1,
             blocks_per_stage: int = 5, **_) -> CifarResNet:
    """ResNet-32 for 32x32 inputs: 6n+2 layers with n = `blocks_per_stage` = 5; `init` as the source's code
    (CifarResNet). n = 2 is the network ABD's code calls `resnet18` (models/resnet.py L115-116)."""
    return CifarResNet(int(blocks_per_stage), in_channels, shortcut, init=init, feature_grid=feature_grid)


def _load_weights(name: str, weights: str | None):
    """A torchvision weights name (e.g. IMAGENET1K_V1), a path to a state-dict file, or None."""
    from torchvision.models import get_model, get_model_weights

    if weights is None:
        return get_model(name, weights=None)
    if Path(str(weights)).expanduser().is_file():
        model = get_model(name, weights=None)
        state = torch.load(Path(weights).expanduser(), map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if [k for k in missing if not k.startswith("fc.") and not k.startswith("classifier.")]:
            raise ConfigError(f"backbone.weights={weights} does not fit {name}: missing {missing[:5]}")
        return model
    valid = [w.name for w in get_model_weights(name)]
    if weights not in valid:
        raise ConfigError(
            f"backbone.weights={weights!r} is neither a file nor a torchvision weights name for {name}; "
            f"valid choices: {valid}, a path to a state-dict file, or null for random init"
        )
    try:
        return get_model(name, weights=weights)
    except Exception as error:  # no network and not in the torch hub cache
        from torch.hub import get_dir

        raise ConfigError(
            f"backbone.weights={weights} could not be loaded ({type(error).__name__}: {error}). Offline, "
            f"put the checkpoint file in {get_dir()}/checkpoints/ or pass its path as backbone.weights"
        ) from error


class TorchvisionResNet(nn.Module):
    def __init__(self, model: nn.Module, weights: str | None = None):
        super().__init__()
        self.weights = weights  # what the backbone was initialised from (None: random); methods that
        self.out_dim = model.fc.in_features  # freeze it (CLR, linear) check this
        model.fc = nn.Identity()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def torchvision_resnet(name: str, weights: str | None = None, in_channels: int = 3,
                       small_input: bool = False, **_) -> TorchvisionResNet:
    if weights is not None and (small_input or in_channels != 3):
        raise ConfigError(
            f"backbone.weights={weights} with backbone.small_input={small_input} and {in_channels} input channels "
            f"would replace the pretrained stem with a random one; use backbone.small_input=false and a 3-channel "
            f"dataset with pretrained weights"
        )
    model = _load_weights(name, weights)
    if small_input or in_channels != 3:
        stride = 1 if small_input else 2
        kernel, padding = (3, 1) if small_input else (7, 3)
        model.conv1 = nn.Conv2d(in_channels, 64, kernel, stride, padding, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    if small_input:
        model.maxpool = nn.Identity()
    return TorchvisionResNet(model, weights)


def resnet18(weights: str | None = None, in_channels: int = 3, small_input: bool = False, **_) -> TorchvisionResNet:
    return torchvision_resnet("resnet18", weights, in_channels, small_input)


def resnet50(weights: str | None = None, in_channels: int = 3, small_input: bool = False, **_) -> TorchvisionResNet:
    return torchvision_resnet("resnet50", weights, in_channels, small_input)


ALEXNET_CODE_LAYERS = {"pool5": 0, "fc6": 3, "fc7": 6}  # where the classifier is cut (torchvision indices)


class AlexNetFeatures(nn.Module):
    """torchvision's AlexNet without its last layer (fc8): 4096-d fc7 features.

    A two-stage backbone: `forward(x) = from_code_input(code_input(x))`. `code_input` is the
    representation methods such as EBLL constrain (F in Rannen Triki et al., ICCV 2017: pool5,
    256x6x6 flattened to 9,216-d, by default); `from_code_input` is the rest (T: fc6 and fc7 with
    dropout and ReLU), whose output the heads read.
    """

    def __init__(self, model: nn.Module, code_layer: str = "pool5", weights: str | None = None):
        super().__init__()
        self.weights = weights  # None: random init
        if code_layer not in ALEXNET_CODE_LAYERS:
            raise ConfigError(f"backbone.code_layer={code_layer!r} is unknown; valid choices: "
                              f"{list(ALEXNET_CODE_LAYERS)}")
        cut = ALEXNET_CODE_LAYERS[code_layer]
        classifier = list(model.classifier.children())[:-1]  # drop fc8: heads replace it
        self.features, self.avgpool = model.features, model.avgpool
        self.before_code = nn.Sequential(*classifier[:cut])
        self.after_code = nn.Sequential(*classifier[cut:])
        self.code_layer = code_layer
        self.out_dim = model.classifier[-1].in_features

    def code_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.before_code(self.avgpool(self.features(x)).flatten(1))

    def from_code_input(self, f: torch.Tensor) -> torch.Tensor:
        return self.after_code(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_code_input(self.code_input(x))


def alexnet(weights: str | None = None, in_channels: int = 3, code_layer: str = "pool5", **_) -> AlexNetFeatures:
    """AlexNet (Krizhevsky et al., 2012) as torchvision builds it; `weights` as for the ResNets."""
    if weights is not None and in_channels != 3:
        raise ConfigError(f"backbone.weights={weights} needs 3 input channels (got backbone.in_channels="
                          f"{in_channels}): the pretrained first convolution would be replaced by a random one")
    model = _load_weights("alexnet", weights)
    if in_channels != 3:
        model.features[0] = nn.Conv2d(in_channels, 64, 11, 4, 2)
    return AlexNetFeatures(model, code_layer, weights)


class ConvNet(nn.Module):
    def __init__(self, in_channels: int = 3, widths=(32, 64, 128)):
        super().__init__()
        layers, c = [], in_channels
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2, ceil_mode=True)]
            c = w
        self.features = nn.Sequential(*layers)
        self.out_dim = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)


def convnet(in_channels: int = 3, widths=(32, 64, 128), **_) -> ConvNet:
    return ConvNet(in_channels, tuple(widths))


class MLP(nn.Module):
    def __init__(self, in_features: int, hidden=(256, 256)):
        super().__init__()
        layers, d = [nn.Flatten()], in_features
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU(inplace=True)]
            d = h
        self.layers = nn.Sequential(*layers)
        self.out_dim = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def mlp(in_channels: int = 1, image_size: int = 28, hidden=(256, 256), **_) -> MLP:
    return MLP(in_channels * image_size * image_size, tuple(hidden))
