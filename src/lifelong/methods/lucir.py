"""Learning a Unified Classifier Incrementally via Rebalancing, LUCIR (Hou et al., CVPR 2019),
FACIL `src/approach/lucir.py`.

    L = CE(sigma * cos(f(x), W), y) + lamb_t * (1 - cos(f(x), f*(x)))
        + lamb_mr * mean_{x old, k in top-K new} max(0, m - cos(f(x), w_y) + cos(f(x), w_k))

Cosine-normalised heads with one shared learnable scale sigma (Sec. 3.2, Eq. 4); the less-forget
constraint on the features of the frozen previous model f* with the adaptive
lamb_t = lamb * sqrt(n_old / n_new) (Eqs. 6-7); the margin ranking loss on exemplars of old classes
against their K highest-scoring new classes (Eq. 8). With less-forget, the old heads are frozen
(FACIL, from the original code). The last ReLU of a CIFAR ResNet is removed (Sec. 4.1). Training data:
the task plus the exemplars of the shared memory (`memory=`, random by default, as FACIL's
`--exemplar-selection`; `memory.size // n_seen` per class after each task).
"""
from __future__ import annotations

import math
import warnings

import torch
from torch import nn
from torch.nn import functional as F

from lifelong.data.scenario import Task
from lifelong.memory import require
from lifelong.methods.base import ContinualMethod
from lifelong.models.backbones import CifarResNet


class CosineLinear(nn.Module):
    """cos(x, w_c) for every class c (Eq. 4 without sigma, which `LUCIR` holds once for all heads)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.uniform_(self.weight, -1 / math.sqrt(in_features), 1 / math.sqrt(in_features))  # FACIL

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))


class _BlockWithoutFinalReLU(nn.Module):
    """A CIFAR ResNet basic block returning bn2(conv2(.)) + shortcut, without the ReLU (same keys)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.conv1, self.bn1, self.conv2, self.bn2, self.shortcut = (
            block.conv1, block.bn1, block.conv2, block.bn2, block.shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return out + self.shortcut(x)


def margin_ranking(cos: torch.Tensor, y: torch.Tensor, n_old: int, K: int, margin: float) -> torch.Tensor:
    """Eq. 8: for samples of old classes, mean of max(0, margin - cos_y + cos_k) over their top-K new classes."""
    hard = y < n_old
    if not hard.any():
        return cos.new_zeros(())
    gt = cos[hard].gather(1, y[hard, None]).expand(-1, K)
    novel = cos[hard, n_old:].topk(K, dim=1).values
    return F.margin_ranking_loss(gt.reshape(-1), novel.reshape(-1), torch.ones_like(gt.reshape(-1)), margin=margin)


class LUCIR(ContinualMethod):
    keeps_old_model = True

    # search=continual decays lamb from its strongest setting (FACIL gridsearch_config.py 'lucir': lamda_base [10])
    stability_key, stability_start = "lamb", 10.0

    def __init__(self, *args, lamb: float = 5.0, lamb_mr: float = 1.0, margin: float = 0.5, K: int = 2,
                 less_forget: bool = True, margin_ranking: bool = True, adapt_lamb: bool = True, **kwargs):
        kwargs["ce_scope"] = "seen"  # FACIL lucir.py: CE over every head
        super().__init__(*args, **kwargs)
        require(self.memory, "lucir")
        self.lamb = lamb  # Sec. 4.1: "lambda base is set to 5 for CIFAR100" (FACIL --lamb 5)
        self.lamb_mr = lamb_mr  # FACIL --lamb-mr 1: "set to 1 in the original code"
        self.margin = margin  # Sec. 4.1: "m is set to 0.5" (FACIL --dist)
        self.K = K  # Sec. 4.1: "K is set to 2"
        self.less_forget, self.use_margin_ranking, self.adapt_lamb = less_forget, margin_ranking, adapt_lamb
        self.sigma = nn.Parameter(torch.ones(1))  # FACIL CosineLinear: sigma initialised to 1, shared
        backbone = self.net.backbone
        if isinstance(backbone, CifarResNet):  # Sec. 4.1: "the ReLU in the penultimate layer is removed"
            backbone.layer3[-1] = _BlockWithoutFinalReLU(backbone.layer3[-1])
        else:
            warnings.warn(f"LUCIR: the last ReLU is removed only from CIFAR ResNets, not {type(backbone).__name__}")

    def begin_task(self, task: Task) -> None:
        super().begin_task(task)
        device = self.net.heads[-1].weight.device
        self.net.heads[-1] = CosineLinear(self.net.out_dim, task.n_classes).to(device)
        if self.less_forget:  # FACIL: old heads are not updated under the less-forget constraint
            for head in self.net.heads[:-1]:
                head.requires_grad_(False)

    def lamb_t(self) -> float:
        n_old, n_new = self.task.offset, self.task.n_classes
        return self.lamb * math.sqrt(n_old / n_new) if self.adapt_lamb else self.lamb  # Eq. 7

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.net.features(x)
        cos = self.net.head_logits(features)
        terms = {"ce": F.cross_entropy(self.sigma * cos, y)}
        if self.old_net is None:
            return terms
        if self.less_forget:  # Eq. 6 (FACIL: CosineEmbeddingLoss with target 1)
            with torch.no_grad():
                old_features = self.old_net.features(x)
            terms["less_forget"] = self.lamb_t() * (1 - F.cosine_similarity(features, old_features, dim=1)).mean()
        if self.use_margin_ranking:
            terms["margin_ranking"] = self.lamb_mr * margin_ranking(cos, y, self.task.offset, self.K, self.margin)
        return terms

    def task_aware_logits(self, x: torch.Tensor, task_id: int) -> torch.Tensor:
        start, size = self.net.offsets[task_id], self.net.task_sizes[task_id]
        return self.task_agnostic_logits(x)[:, start : start + size]

    def task_agnostic_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.sigma * self.net(x)

    def extra_results(self) -> dict:
        return {**super().extra_results(), "sigma": self.sigma.item()}
