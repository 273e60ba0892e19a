"""Freezing (feature extraction): learn the backbone on the first task, then only new heads.

FACIL `src/approach/freezing.py` (`freeze_after=0`). After the first task the backbone is frozen in
eval mode, so its BatchNorm statistics cannot drift either and old tasks' task-aware accuracy is
exactly preserved.
"""
from __future__ import annotations

from typing import Iterator

from torch import nn

from lifelong.data.scenario import Task
from lifelong.methods.base import ContinualMethod, freeze


class Freezing(ContinualMethod):
    """Task 0: L = CE(h_0(f(x)), y); task t > 0: the same with f frozen, training h_t alone."""

    def __init__(self, *args, freeze_after: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.freeze_after = freeze_after  # FACIL default: freeze after the first task (index 0)

    def begin_task(self, task: Task) -> None:
        super().begin_task(task)
        if task.id > self.freeze_after:
            freeze(self.net.backbone)

    def frozen_modules(self) -> Iterator[nn.Module]:
        yield from super().frozen_modules()
        if self.task is not None and self.task.id > self.freeze_after:
            yield self.net.backbone
