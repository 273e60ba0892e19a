"""Dark Experience Replay++ (Buzzega et al., NeurIPS 2020), Mammoth `models/derpp.py`.

    L = CE(h(f(x)), y) + alpha * || h(f(x')) - z' ||^2 + beta * CE(h(f(x'')), y'') ,   (x', z'), (x'', y'') ~ M

DER (`lifelong.methods.der`) plus a second, independent batch of the reservoir memory replayed with
its labels.
"""
from __future__ import annotations

import torch

from lifelong.methods.der import DER


class DERpp(DER):
    def __init__(self, *args, alpha: float = 0.1, beta: float = 0.5, **kwargs):
        super().__init__(*args, alpha=alpha, **kwargs)
        # Mammoth utils/best_args.py L905: seq-cifar100, buffer 2000 -> alpha 0.1, beta 0.5
        self.beta = beta

    def buffer_terms(self) -> dict[str, torch.Tensor]:
        if not len(self.memory):
            return {}
        bx, by, _, _ = self.replay()  # a second draw, as Mammoth's second get_data
        return {"buffer_ce": self.beta * self.cross_entropy(self.net(bx), by)}
