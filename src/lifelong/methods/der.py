"""Dark Experience Replay (Buzzega et al., NeurIPS 2020), Mammoth `models/der.py`.

    L = CE(h(f(x)), y) + alpha * || h(f(x')) - z' ||^2 ,   (x', z') ~ M

M is a reservoir buffer of past inputs x' (raw, augmented when replayed) and the logits z' the model
gave them when they were seen. The CE covers every seen class (Mammoth's single head over all
classes). Here the network grows a head per task, so a stored z' has as many entries as classes
were seen when it was stored; it is zero-padded to the current width. Mammoth's full-width output
stores the (low) logits of classes not yet seen as well, and the MSE holds them there; the zeros do
that job here (with `method.mask_unseen=true` only the stored entries count: forgets more on digits).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from lifelong.data.scenario import Task
from lifelong.methods.base import ContinualMethod, Phase
from lifelong.rehearsal import ExemplarBuffer, adopt_shared_budget, augment_raw, shuffled_batches


def logit_mse(outputs: torch.Tensor, stored: torch.Tensor, widths: torch.Tensor, mask_unseen: bool) -> torch.Tensor:
    """Mean squared error against stored logits zero-padded to the current width; with `mask_unseen`,
    over the stored entries only (entry (i, c) counts when c < widths[i])."""
    stored = F.pad(stored[:, : outputs.shape[1]], (0, outputs.shape[1] - min(stored.shape[1], outputs.shape[1])))
    if not mask_unseen:
        return F.mse_loss(outputs, stored)
    mask = (torch.arange(outputs.shape[1], device=outputs.device)[None, :] < widths[:, None]).float()
    return ((outputs - stored) ** 2 * mask).sum() / mask.sum().clamp_min(1)


class DER(ContinualMethod):
    def __init__(self, *args, alpha: float = 0.3, memory_size: int = 2000, batch_size: int = 32,
                 buffer_batch_size: int | None = None, mask_unseen: bool = False, **kwargs):
        kwargs["ce_scope"] = "seen"  # Mammoth: one head over every class
        super().__init__(*args, **kwargs)
        memory_size = adopt_shared_budget(self, memory_size)
        # Mammoth utils/best_args.py L901: seq-cifar100, buffer 2000 -> alpha 0.3 (also seq-cifar10, all buffers)
        self.alpha = alpha
        self.exemplars = ExemplarBuffer(memory_size, seed=0)  # Mammoth --buffer_size; 2000 as in FACIL's CIFAR-100 setting
        self.batch_size = batch_size
        # Mammoth main.py L436: --minibatch_size (buffer batch) is the batch size unless given
        self.buffer_batch_size = buffer_batch_size or batch_size
        self.mask_unseen = mask_unseen  # False: zero targets for classes unseen at storage (see above)

    def phases(self, task: Task) -> list[Phase]:
        # Raw batches of the task only: the loss stores them un-augmented (Mammoth's not_aug_inputs).
        return [Phase("train", self.epochs, self.optimizer_factory, self.scheduler_factory,
                      data=shuffled_batches(task.train, self.batch_size))]

    def replay(self):
        x, y, z, widths = self.exemplars.sample(self.buffer_batch_size)
        return augment_raw(self.task, x), y, z, widths

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        raw = x
        logits = self.net(augment_raw(self.task, x))
        terms = {"ce": self.cross_entropy(logits, y)}
        if len(self.exemplars):
            bx, _, bz, widths = self.replay()
            terms["der"] = self.alpha * logit_mse(self.net(bx), bz, widths, self.mask_unseen)
        terms.update(self.buffer_terms())
        self.exemplars.reservoir_add(raw, y, logits.detach())  # after sampling, as Mammoth adds after the step
        return terms

    def buffer_terms(self) -> dict[str, torch.Tensor]:
        return {}

    def extra_results(self) -> dict:
        return {"memory": self.exemplars.stats()}
