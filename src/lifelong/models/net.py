"""The network every method trains: a backbone and one linear head per task (FACIL's LLL_Net)."""
from __future__ import annotations

import torch
from torch import nn


class IncrementalNet(nn.Module):
    """`forward(x)` returns the logits of every head so far, concatenated: `[B, n_seen_classes]`.

    Head t covers the class ids `[offsets[t], offsets[t] + sizes[t])`, matching the scenario's
    label remapping, so the concatenation is indexed by global class id.
    """

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleList()

    @property
    def out_dim(self) -> int:
        return self.backbone.out_dim

    @property
    def task_sizes(self) -> list[int]:
        return [h.out_features for h in self.heads]

    @property
    def offsets(self) -> list[int]:
        sizes = self.task_sizes
        return [sum(sizes[:i]) for i in range(len(sizes))]

    def add_head(self, n_classes: int) -> nn.Linear:
        """A new linear head; `backbone.head_init="kaiming_normal"` re-draws its weight He-normal (fan-in),
        as ABD's ResNet-32 initialises its classifier; otherwise PyTorch's default Linear init."""
        head = self.init_head(nn.Linear(self.out_dim, n_classes), reset=False)  # nn.Linear has just drawn it
        if len(self.heads):  # new heads live where the model lives
            head.to(next(self.heads[0].parameters()).device)
        self.heads.append(head)
        return head

    def init_head(self, head: nn.Linear, reset: bool = True) -> nn.Linear:
        """(Re-)initialise a head as the backbone's source does (`backbone.head_init`)."""
        if reset:
            head.reset_parameters()
        if getattr(self.backbone, "head_init", "default") == "kaiming_normal":
            nn.init.kaiming_normal_(head.weight)
        return head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def head_logits(self, features: torch.Tensor) -> torch.Tensor:
        return torch.cat([head(features) for head in self.heads], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_logits(self.features(x))
