"""Joint training: at every task, train on the data of all tasks seen so far (the upper bound).

FACIL `src/approach/joint.py`: the model is trained incrementally (not re-initialised) on the
union of the training sets of tasks 0..t. ABD's "UB/Oracle" instead starts a fresh model at every
task (`reinit=True`, `trainer.py` L175-178 of the ABD code).
"""
from __future__ import annotations

import copy

from lifelong.data.scenario import Task
from lifelong.methods.base import ContinualMethod, Phase


class Joint(ContinualMethod):
    """L = CE(concat_heads(f(x)), y) over every seen class, on every seen task's data."""

    def __init__(self, *args, reinit: bool = False, **kwargs):
        kwargs["ce_scope"] = "seen"  # the pooled data has labels of every seen task
        super().__init__(*args, **kwargs)
        self.reinit = reinit  # FACIL continues from the current model (False)
        self._initial_backbone = copy.deepcopy(self.net.backbone.state_dict()) if reinit else None

    def begin_task(self, task: Task) -> None:
        super().begin_task(task)
        if self.reinit:
            self.net.backbone.load_state_dict(self._initial_backbone)
            for head in self.net.heads:
                head.reset_parameters()

    def phases(self, task: Task) -> list[Phase]:
        return [Phase("train", self.epochs, self.optimizer_factory, self.scheduler_factory, data="seen")]
