"""LwF with synthetic data: the "LwF (synthetic)" baseline of ABD (Smith et al., ICCV 2021, Table 1),
the official `DeepInversionLWF` (GT-RIPL/AlwaysBeDreaming-DFCIL `learners/datafree.py`, run by
`experiments/cifar100-*.sh` with `--mu 1e-1`).

The generator and its training are ABD's (`lifelong.inversion`, a "synthesis" phase at the start of
every task after the first). For task t > 0, with a real batch (x, y), a synthetic batch x' = G(z)
of the same size and the frozen previous model f* over its n_old classes:

    L = CE(f(x), y) + mu KD_T(f([x; x'])[:, :n_old], f*([x; x']))

CE over every seen class on the real half only (`class_idx = arange(batch_size)`); KD_T is LwF's
temperature-scaled soft cross-entropy without the T^2 factor (`loss_fn_kd`), over the old classes,
averaged over the real and synthetic images together. DeepInversion (`method=deepinversion`)
differs only in its distillation; this class reuses its synthesis and replay unchanged.
"""
from __future__ import annotations

import torch
from torch import nn

from lifelong.losses import distillation
from lifelong.methods.deepinversion import DeepInversion


class LwFSynthetic(DeepInversion):
    def __init__(self, backbone: nn.Module, optimizer, scheduler=None, epochs: int = 1, ce_scope: str = "seen", *,
                 mu: float = 0.1, T: float = 2.0, synthetic_batch_size: int | None = None, **synthesis):
        # mu: `--mu 1e-1` for "LWF - Synthetic" in experiments/cifar100-*.sh; T: `--temp` default 2.0.
        # ce_scope "seen": the official CE is over the seen-class slice of the head.
        super().__init__(backbone, optimizer, scheduler, epochs, ce_scope, mu=mu, T=T,
                         synthetic_batch_size=synthetic_batch_size, **synthesis)

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.synthesizing or self.old_net is None:
            return super().loss_terms(x, y)
        n_real, n_old = len(x), self.task.offset
        x_all = torch.cat([x, self.synthesizer.sample(self.synthetic_batch_size or n_real)])
        with torch.no_grad():
            old_logits = self.old_net(x_all)
        logits = self.net(x_all)  # one forward: BatchNorm statistics mix real and synthetic
        return {
            "ce": self.cross_entropy(logits[:n_real], y),
            "kd": self.mu * distillation(logits[:, :n_old], old_logits, self.T),
        }

    def extra_results(self) -> dict:
        generator = self.synthesizer.generator
        n = sum(p.numel() for p in generator.parameters())
        return {"generator_parameters": n,
                "memory": {"generator_parameters": n, "stored_images": 0,
                           "bytes": sum(p.numel() * p.element_size() for p in generator.parameters())}}
