"""The convolutional VAE that ABD's code uses as DGR's generator (GT-RIPL/AlwaysBeDreaming-DFCIL
`models/autoencoder.py`, `CIFAR_GEN`, after van de Ven & Tolias's generative replay code).

Encoder: three Conv(4x4, stride 2, padding 1) + ReLU stages (64, 128, 512 channels), image / 8 per
side; linear maps to the mean and log-variance of z (z_size 1024). Decoder: linear projection
back to 512 x (image/8)^2, two ConvTranspose(4x4, stride 2) + ReLU stages (256, 64), a last
ConvTranspose to the image channels and a sigmoid: images in [0, 1]. No BatchNorm (`bn=False`).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from lifelong.errors import ConfigError


class VAE(nn.Module):
    def __init__(self, image_size: int = 32, channels: int = 3, z_size: int = 1024,
                 widths: tuple[int, int, int] = (64, 128, 512)):
        super().__init__()
        if image_size % 8 or image_size < 8:
            raise ConfigError(f"dataset.image_size={image_size}: DGR's VAE halves the image three times; "
                              "use a dataset whose image size is a multiple of 8 (digits 8, CIFAR 32), or pad MNIST and "
                              "Fashion-MNIST to 32: dataset.pad=2 dataset.image_size=32")
        self.image_size, self.channels, self.z_size = image_size, channels, z_size
        self.feature_size = image_size // 8
        w1, w2, w3 = widths
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, w1, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(w1, w2, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(w2, w3, 4, 2, 1), nn.ReLU(),
        )
        self.feature_channels = w3
        volume = w3 * self.feature_size**2
        self.q_mean = nn.Linear(volume, z_size)
        self.q_logvar = nn.Linear(volume, z_size)
        self.project = nn.Linear(z_size, volume)
        self.decoder = nn.Sequential(  # the official hard-codes 256 and 64 here: w3 / 2 and w1 of CIFAR_GEN
            nn.ConvTranspose2d(w3, w3 // 2, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(w3 // 2, w1, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(w1, channels, 4, 2, 1),
        )

    @property
    def in_dim(self) -> int:
        return self.channels * self.image_size**2

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x).flatten(1)
        return self.q_mean(h), self.q_logvar(h)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder before its sigmoid."""
        h = self.project(z).view(-1, self.feature_channels, self.feature_size, self.feature_size)
        return self.decoder(h)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(reconstruction logits, mu, logvar)`; z is sampled in train mode and is mu in eval mode."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        return self.decode_logits(z), mu, logvar

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """`n` images in [0, 1] from z ~ N(0, I) (the official `sample`, in eval mode)."""
        z = torch.randn(n, self.z_size, device=self.project.weight.device)
        return torch.sigmoid(self.decode_logits(z))

    def loss_terms(self, x: torch.Tensor, weights: torch.Tensor, weight_kl: bool = False) -> dict[str, torch.Tensor]:
        """The official `loss_function` on images `x` in [0, 1] with per-sample weights:

        recon = mean_i w_i * mean_pixels BCE(x_hat_i, x_i);  kl = mean_i KL(q(z|x_i) || N(0, I)) / in_dim,
        or mean_i w_i * KL_i / in_dim with `weight_kl` (the whole ELBO weighted per sample, as van de Ven &
        Tolias's `rnt * loss_current + (1 - rnt) * loss_replay`; the official weights only the reconstruction).
        The BCE is taken on the logits (the same value as BCELoss after the sigmoid, without its clamp).
        """
        logits, mu, logvar = self(x)
        bce = F.binary_cross_entropy_with_logits(logits.flatten(1), x.flatten(1), reduction="none").mean(1)
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1) / self.in_dim
        return {"recon": (bce * weights).mean(), "kl": (kl * weights).mean() if weight_kl else kl.mean()}
