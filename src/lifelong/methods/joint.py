"""Joint training: at every task, train on the data of all tasks seen so far (the upper bound).

FACIL `src/approach/joint.py`: the model is trained incrementally (not re-initialised) on the
union of the training sets of tasks 0..t. ABD's "UB/Oracle" instead starts a fresh model at every
task (`reinit=True`, `trainer.py` L175-178 of the ABD code).
"""
from __future__ import annotations

import copy

import torch
from torch.nn import functional as F

from lifelong.data.scenario import Task
from lifelong.methods.base import ContinualMethod, Phase


class Joint(ContinualMethod):
    """L = CE(concat_heads(f(x)), y) over every seen class, on every seen task's data; with
    `multi_head`, L = CE(h_{task(y)}(f(x)), y): each sample's softmax is over its own task's head only
    (the multi-head joint training of the LwF and EBLL papers' upper bound)."""

    def __init__(self, *args, reinit: bool = False, multi_head: bool = False, **kwargs):
        kwargs["ce_scope"] = "seen"  # the pooled data has labels of every seen task
        super().__init__(*args, **kwargs)
        self.reinit = reinit  # FACIL continues from the current model (False)
        self.multi_head = multi_head  # FACIL: one softmax over every seen class (False)
        self._initial_backbone = copy.deepcopy(self.net.backbone.state_dict()) if reinit else None

    def begin_task(self, task: Task) -> None:
        super().begin_task(task)
        if self.reinit:
            self.net.backbone.load_state_dict(self._initial_backbone)
            for head in self.net.heads:
                self.net.init_head(head)

    def phases(self, task: Task) -> list[Phase]:
        return [Phase("train", self.epochs, self.optimizer_factory, self.scheduler_factory, data="seen")]

    def cross_entropy(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not self.multi_head:
            return super().cross_entropy(logits, y)
        # Other tasks' logits are masked out, so each sample's softmax covers its own head only.
        offsets = torch.tensor(self.net.offsets + [logits.shape[1]], device=y.device)
        task = torch.bucketize(y, offsets[1:], right=True)
        column = torch.arange(logits.shape[1], device=y.device)
        own = (column >= offsets[task].unsqueeze(1)) & (column < offsets[task + 1].unsqueeze(1))
        return F.cross_entropy(logits.masked_fill(~own, float("-inf")), y)
