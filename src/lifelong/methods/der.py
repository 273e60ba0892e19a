"""Dark Experience Replay (Buzzega et al., NeurIPS 2020), Mammoth `models/der.py`.

    L = CE(h(f(x)), y) + alpha * || h(f(x')) - z' ||^2 ,   (x', z') ~ M

M is the reservoir memory (`memory=reservoir`, `lifelong.memory`) of past inputs x' (raw uint8,
augmented when replayed) with the logits z' the model gave them when they were seen, kept as the
memory's per-sample payload `logits` (and `width`, how many of them were real). The CE covers every
seen class (Mammoth's single head over all classes). Here the network grows a head per task, so a
stored z' has as many entries as classes were seen when it was stored; the memory zero-pads it to
the current width. Mammoth's full-width output stores the (low) logits of classes not yet seen as
well, and the MSE holds them there; the zeros do that job here (with `method.mask_unseen=true` only
the stored entries count: forgets more on digits).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from lifelong.data.scenario import Task
from lifelong.memory import require
from lifelong.methods.base import ContinualMethod


def logit_mse(outputs: torch.Tensor, stored: torch.Tensor, widths: torch.Tensor, mask_unseen: bool) -> torch.Tensor:
    """Mean squared error against stored logits zero-padded to the current width; with `mask_unseen`,
    over the stored entries only (entry (i, c) counts when c < widths[i])."""
    stored = F.pad(stored[:, : outputs.shape[1]], (0, outputs.shape[1] - min(stored.shape[1], outputs.shape[1])))
    if not mask_unseen:
        return F.mse_loss(outputs, stored)
    mask = (torch.arange(outputs.shape[1], device=outputs.device)[None, :] < widths[:, None]).float()
    return ((outputs - stored) ** 2 * mask).sum() / mask.sum().clamp_min(1)


class DER(ContinualMethod):
    def __init__(self, *args, alpha: float = 0.3, buffer_batch_size: int = 32, mask_unseen: bool = False,
                 **kwargs):
        kwargs["ce_scope"] = "seen"  # Mammoth: one head over every class
        super().__init__(*args, **kwargs)
        require(self.memory, type(self).__name__.lower(), ("reservoir",), default="reservoir")
        # Mammoth utils/best_args.py L901: seq-cifar100, buffer 2000 -> alpha 0.3 (also seq-cifar10, all buffers)
        self.alpha = alpha
        # Mammoth --minibatch_size: the buffer batch (best_args: = batch_size, 32, in every DER entry)
        self.buffer_batch_size = buffer_batch_size
        self.mask_unseen = mask_unseen  # False: zero targets for classes unseen at storage (see above)

    def phase_data(self, phase, train):
        return train  # the memory is a separate stream, drawn in loss_terms

    def replay(self):
        """A buffer batch (this rank's share), augmented like the stream: images, labels, logits, widths."""
        buf = self.memory.sample(self.buffer_batch_size)
        device = self.net.heads[0].weight.device
        x = self.task.augment(buf.x.to(device), train=True)
        return x, buf.y.to(device), buf.payloads["logits"].to(device), buf.payloads["width"].flatten().to(device)

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        raw_x, raw_y = self.raw_batch
        logits = self.net(x)
        terms = {"ce": self.cross_entropy(logits, y)}
        if len(self.memory):
            bx, _, bz, widths = self.replay()
            terms["der"] = self.alpha * logit_mse(self.net(bx), bz, widths, self.mask_unseen)
        terms.update(self.buffer_terms())
        if self.training:  # after sampling, as Mammoth adds after the step: the not-augmented stream
            width = torch.full((len(raw_y), 1), logits.shape[1], dtype=torch.long, device=logits.device)
            self.memory.add_batch(raw_x, raw_y, logits=logits.detach(), width=width)
        return terms

    def buffer_terms(self) -> dict[str, torch.Tensor]:
        return {}

    def update_memory(self, task: Task) -> None:
        self.memory.record()  # filled online during training
