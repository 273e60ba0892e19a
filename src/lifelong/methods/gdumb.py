"""GDumb (Prabhu, Torr & Dokania, ECCV 2020; Mammoth `models/gdumb.py`).

    memory <- greedy class-balanced sampling of the stream;   f <- argmin_f CE(f(x_mem), y_mem), from scratch

At each task the task's data streams through the greedy class-balanced sampler (`memory=greedy`:
a sample enters while its class is below the largest class's count, replacing a random item of the
largest class; Sec. 3), then the network is re-initialised and trained on the memory only, over
every seen class (Sec. 3: "the learner ... is trained from scratch using only the samples in memory").
"""
from __future__ import annotations

import copy

from lifelong.data.scenario import Task
from lifelong.errors import ConfigError
from lifelong.methods.base import ContinualMethod


class GDumb(ContinualMethod):
    def __init__(self, *args, **kwargs):
        kwargs["ce_scope"] = "seen"
        super().__init__(*args, **kwargs)
        if self.memory is None or self.memory.selection != "greedy":
            raise ConfigError("method=gdumb needs memory=greedy (its config selects it)")
        self._initial_backbone = copy.deepcopy(self.net.backbone.state_dict())

    def fit_task(self, task: Task, fit) -> None:
        # Sample first, then learn from scratch on the memory alone. (On a mid-task resume the
        # phase's checkpoint brings back the memory as it was when the phase started.)
        self.memory.update(task.train, list(task.class_range))
        self.net.backbone.load_state_dict(self._initial_backbone)
        for head in self.net.heads:
            head.reset_parameters()
        super().fit_task(task, fit)

    def phase_data(self, phase, train):
        return self.memory.as_imageset()

    def update_memory(self, task: Task) -> None:
        """Nothing after the task: GDumb fills (and records) its memory before training, in `fit_task`."""
