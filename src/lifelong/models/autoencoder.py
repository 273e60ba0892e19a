"""The undercomplete autoencoder of EBLL (Rannen Triki et al., ICCV 2017, Sec. 3).

One linear layer and a sigmoid encode a feature vector into a short code; one linear layer decodes
it back (official code: `Autoencoder/cnn_autoencoder_with_classerror.m:69-105`, and the PyTorch
`AutoEncoder` of the authors' demo). After training only the encoder is kept.
"""
from __future__ import annotations

import torch
from torch import nn


class AutoEncoder(nn.Module):
    """`code(f) = sigmoid(W_enc f + b_enc)`, `forward(f) = W_dec code(f) + b_dec` (linear output)."""

    def __init__(self, in_features: int, code_size: int = 100):
        super().__init__()
        self.encoder = make_encoder(in_features, code_size)
        self.decoder = nn.Linear(code_size, in_features)

    def code(self, f: torch.Tensor) -> torch.Tensor:
        return self.encoder(f)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(f))


def make_encoder(in_features: int, code_size: int) -> nn.Sequential:
    """The kept half: `Linear(in_features, code_size)` then a sigmoid."""
    return nn.Sequential(nn.Linear(in_features, code_size), nn.Sigmoid())
