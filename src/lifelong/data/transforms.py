"""Augmentation of whole batches on the device, for datasets held as uint8 tensors.

Per-image PIL transforms in DataLoader workers are the bottleneck for CIFAR-sized images; here a
batch is cropped, flipped and normalised in a handful of tensor operations wherever it lives.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class BatchAugment(nn.Module):
    """uint8 `[B, C, H, W]` -> normalised float, with random crop (zero padding) and flip in training.

    Each image gets its own crop offset and flip, drawn from torch's global RNG (seeded by the run).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], crop_padding: int = 0, flip: bool = False,
                 brightness: float = 0.0, contrast: float = 0.0, hue: float = 0.0):
        super().__init__()
        self.crop_padding = crop_padding
        self.flip = flip
        # Optional colour jitter, as torchvision's ColorJitter(brightness, contrast, hue); 0 = off (the default).
        if not 0 <= hue <= 0.5:
            raise ValueError(f"hue jitter {hue} must be in [0, 0.5] (torchvision's ColorJitter range)")
        self.brightness, self.contrast, self.hue = brightness, contrast, hue
        # Not persistent: these follow the dataset config, not the trained state.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def random_crop(self, x: torch.Tensor) -> torch.Tensor:
        """A random `H x W` window of the zero-padded image, per image: two gathers (rows, then columns)."""
        p = self.crop_padding
        b, c, h, w = x.shape
        padded = nn.functional.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (b, 1, 1, 1), device=x.device)
        dx = torch.randint(0, 2 * p + 1, (b, 1, 1, 1), device=x.device)
        rows = (dy + torch.arange(h, device=x.device).view(1, 1, h, 1)).expand(b, c, h, w + 2 * p)
        cols = (dx + torch.arange(w, device=x.device).view(1, 1, 1, w)).expand(b, c, h, w)
        return torch.gather(torch.gather(padded, 2, rows), 3, cols)

    def random_flip(self, x: torch.Tensor) -> torch.Tensor:
        flip = torch.rand(x.shape[0], device=x.device) < 0.5
        return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)

    def color_jitter(self, x: torch.Tensor) -> torch.Tensor:
        """ColorJitter(brightness, contrast) per image on [0, 1] pixels, as torchvision's tensor ops.

        Factors are uniform in [max(0, 1 - v), 1 + v]; brightness scales the pixels, contrast blends
        with the mean grey level of the image; the two are applied in a random order per image.
        """
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x
        b = x.shape[0]

        def factors(v: float) -> torch.Tensor:
            return torch.empty(b, 1, 1, 1, device=x.device).uniform_(max(0.0, 1 - v), 1 + v)

        bright, contrast = factors(self.brightness), factors(self.contrast)

        def adjust_brightness(img):
            return (img * bright).clamp(0, 1) if self.brightness > 0 else img

        def adjust_contrast(img):
            if self.contrast <= 0:
                return img
            grey = img if img.shape[1] == 1 else (0.299 * img[:, 0:1] + 0.587 * img[:, 1:2] + 0.114 * img[:, 2:3])
            mean = grey.mean(dim=(1, 2, 3), keepdim=True)
            return (contrast * img + (1 - contrast) * mean).clamp(0, 1)

        if self.hue <= 0:
            brightness_first = (torch.rand(b, device=x.device) < 0.5).view(b, 1, 1, 1)
            return torch.where(brightness_first, adjust_contrast(adjust_brightness(x)),
                               adjust_brightness(adjust_contrast(x)))
        # With hue, as torchvision: the enabled adjustments in a random order, drawn per image.
        shift = torch.empty(b, 1, 1, device=x.device).uniform_(-self.hue, self.hue)
        steps = [op for op, on in ((adjust_brightness, self.brightness > 0), (adjust_contrast, self.contrast > 0),
                                   (lambda img: shift_hue(img, shift), True)) if on]
        order = torch.rand(b, len(steps), device=x.device).argsort(dim=1)
        for position in range(len(steps)):
            for i, op in enumerate(steps):
                x = torch.where((order[:, position] == i).view(b, 1, 1, 1), op(x), x)
        return x

    def forward(self, x: torch.Tensor, train: bool = False) -> torch.Tensor:
        if train and (self.brightness > 0 or self.contrast > 0 or self.hue > 0):
            x = self.color_jitter(x)  # first, as ABD's ColorJitter -> flip -> crop (dataloaders/utils.py L50-55)
        # Crop and flip the raw pixels, then normalise: the padding is black, as in the standard
        # pipeline RandomCrop(padding) -> RandomHorizontalFlip -> ToTensor -> Normalize (FACIL, ABD).
        if train and self.crop_padding > 0:
            x = self.random_crop(x)
        if train and self.flip:
            x = self.random_flip(x)
        return self.normalize(x)


def shift_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Hue of RGB images in [0, 1] rotated by `shift` (fractions of a turn, one per image `[B, 1, 1]`):
    RGB -> HSV, h + shift mod 1, back to RGB (torchvision's adjust_hue). Grayscale images are returned as they are."""
    if x.shape[1] != 3:
        return x
    r, g, b = x.unbind(1)
    high, low = x.max(dim=1).values, x.min(dim=1).values
    chroma = high - low
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    hue = torch.where(high == r, ((g - b) / safe) % 6, torch.where(high == g, (b - r) / safe + 2, (r - g) / safe + 4))
    hue = torch.where(chroma > 0, hue / 6, torch.zeros_like(hue))
    saturation = torch.where(high > 0, chroma / torch.where(high > 0, high, torch.ones_like(high)), torch.zeros_like(high))
    hue = (hue + shift) % 1.0
    # HSV -> RGB: channel n is v - v s max(0, min(k, 4 - k, 1)), k = (n + 6 h) mod 6 for n = 5, 3, 1.
    k = (torch.tensor([5.0, 3.0, 1.0], device=x.device).view(1, 3, 1, 1) + 6 * hue.unsqueeze(1)) % 6
    weight = torch.clamp(torch.minimum(k, 4 - k), 0, 1)
    return high.unsqueeze(1) * (1 - saturation.unsqueeze(1) * weight)
