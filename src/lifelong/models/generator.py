"""Image generators for model inversion (ABD, Smith et al., ICCV 2021; DeepInversion baseline).

The DCGAN-style generators of ABD's official code (`models/generator.py`, after Fang et al.'s
Data-Free Adversarial Distillation): z ~ N(0, I_1000) -> Linear -> (C0, s, s) -> BatchNorm ->
[nearest x2 upsample -> Conv3x3 -> BatchNorm(eps=0.8) -> LeakyReLU(0.2)] per stage ->
Conv3x3 -> Tanh -> BatchNorm(affine=False). Three sizes, as in the official factories:

- `cifar`        (`CIFAR_GEN`, 32x32):    C0 = 128, stages 128, 64           (init size = image // 4)
- `tinyimagenet` (`TINYIMNET_GEN`, 64x64): C0 = 128, stages 128, 128, 64      (init size = image // 8)
- `imagenet`     (`IMNET_GEN`, 224x224):   C0 = 64,  stages 64 x 5            (init size = image // 32)

`BatchNorm2d(C, 0.8)` in the official code sets eps = 0.8 (the second positional argument is eps,
not momentum, a quirk inherited from DCGAN/DAFL code); we keep it because the trained generators
depend on it. The last BatchNorm normalises every output channel, so generated images land
roughly in the normalised input space of the classifier.
"""
from __future__ import annotations

import torch
from torch import nn

from lifelong.errors import ConfigError

# name -> (channels of the initial feature map, output channels of each upsampling stage)
ARCHITECTURES = {
    "cifar": (128, (128, 64)),
    "tinyimagenet": (128, (128, 128, 64)),
    "imagenet": (64, (64, 64, 64, 64, 64)),
}
# `generator: auto` picks by input size, as the official scripts pair dataset and generator.
AUTO = {224: "imagenet", 64: "tinyimagenet"}


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour x2 upsampling (`F.interpolate(x, scale_factor=2)`).

    Written with expand/reshape because the CUDA backward of `interpolate` is not deterministic, and
    our runs set `torch.use_deterministic_algorithms` through `trainer.deterministic`.
    """
    b, c, h, w = x.shape
    return x[:, :, :, None, :, None].expand(b, c, h, 2, w, 2).reshape(b, c, 2 * h, 2 * w)


class Generator(nn.Module):
    """Maps `z ~ N(0, I)` to images `[B, channels, image_size, image_size]`."""

    def __init__(self, image_size: int = 32, channels: int = 3, z_dim: int = 1000, init_channels: int = 128,
                 widths: tuple[int, ...] = (128, 64), bn_eps: float = 0.8, slope: float = 0.2):
        super().__init__()
        factor = 2 ** len(widths)
        if image_size % factor or image_size < factor:
            raise ConfigError(f"method.image_size={image_size} must be a multiple of {factor} for a generator with "
                              f"{len(widths)} upsampling stages")
        self.z_dim, self.init_size, self.init_channels = z_dim, image_size // factor, init_channels
        self.fc = nn.Linear(z_dim, init_channels * self.init_size**2)
        self.bn0 = nn.BatchNorm2d(init_channels)  # default eps here (official code)
        stages, c = [], init_channels
        for width in widths:
            stages.append(nn.Sequential(nn.Conv2d(c, width, 3, padding=1), nn.BatchNorm2d(width, eps=bn_eps),
                                        nn.LeakyReLU(slope, inplace=True)))
            c = width
        self.stages = nn.ModuleList(stages)
        self.out = nn.Sequential(nn.Conv2d(c, channels, 3, padding=1), nn.Tanh(),
                                 nn.BatchNorm2d(channels, affine=False))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.bn0(self.fc(z).view(len(z), self.init_channels, self.init_size, self.init_size))
        for stage in self.stages:
            x = stage(upsample2x(x))
        return self.out(x)

    def sample(self, n: int) -> torch.Tensor:
        """`n` images from fresh noise, drawn from torch's global RNG on the generator's device."""
        return self(torch.randn(n, self.z_dim, device=self.fc.weight.device))

    def reset_parameters(self) -> None:
        """PyTorch's default initialisation again (the official generator never changes it)."""
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()
            if isinstance(module, nn.BatchNorm2d):
                module.reset_running_stats()


def build_generator(name: str = "auto", image_size: int = 32, channels: int = 3, z_dim: int = 1000) -> Generator:
    """One of the official generators by name, or `auto`: by image size (224, 64, else CIFAR's)."""
    if name == "auto":
        name = AUTO.get(image_size, "cifar")
    if name not in ARCHITECTURES:
        raise ConfigError(f"method.generator={name!r} is unknown; valid choices: {['auto', *ARCHITECTURES]}")
    init_channels, widths = ARCHITECTURES[name]
    return Generator(image_size, channels, z_dim, init_channels, widths)
