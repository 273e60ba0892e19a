"""Progress a reader can follow, in a terminal and in a log file.

In a terminal, Lightning's bar says where the run is: `task 2/5 · train · epoch 3/30`. When stdout
is not a terminal (CI, Slurm logs, `> log.txt`), carriage-return bars would fill the file with
hundreds of kilobytes of redraws: each epoch prints one plain line instead, and tqdm bars of
between-task loops and evaluation are off (`TQDM_DISABLE`, read by tqdm when it is imported:
`lifelong.cli` sets it before the heavy imports).
"""
from __future__ import annotations

import sys
import time

from lightning.pytorch.callbacks import Callback, TQDMProgressBar


def interactive() -> bool:
    return sys.stdout.isatty()


def where(task_id: int, n_tasks: int, phase: str, epoch: int, epochs: int) -> str:
    return f"task {task_id + 1}/{n_tasks} · {phase} · epoch {epoch + 1}/{epochs}"


class TaskProgressBar(TQDMProgressBar):
    """Lightning's bar, described by task, phase and epoch."""

    def __init__(self, task_id: int, n_tasks: int, phase: str):
        # Each redraw reads the bar's numbers back from the device (a host sync): every 10 steps, not every step.
        super().__init__(refresh_rate=10)
        self.task_id, self.n_tasks, self.phase = task_id, n_tasks, phase

    def on_train_epoch_start(self, trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(
            where(self.task_id, self.n_tasks, self.phase, trainer.current_epoch, trainer.max_epochs))


class EpochLines(Callback):
    """One line per training epoch: where, the epoch's logged numbers, how long it took."""

    def __init__(self, task_id: int, n_tasks: int, phase: str):
        self.task_id, self.n_tasks, self.phase = task_id, n_tasks, phase
        self._start = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.time()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        numbers = []
        for key, value in sorted(trainer.progress_bar_metrics.items()):
            try:
                numbers.append(f"{key} {float(value):.4g}")
            except (TypeError, ValueError):
                continue
        line = where(self.task_id, self.n_tasks, self.phase, trainer.current_epoch, trainer.max_epochs)
        print(f"{line}: {', '.join(numbers) or '-'} ({time.time() - self._start:.1f} s)", flush=True)


def callbacks(trainer_options: dict, task_id: int, n_tasks: int, phase: str) -> list:
    """The progress callbacks of one fit; sets `enable_progress_bar` in `trainer_options` to match."""
    if not trainer_options.get("enable_progress_bar", True):
        return []
    if interactive():
        return [TaskProgressBar(task_id, n_tasks, phase)]
    trainer_options["enable_progress_bar"] = False
    return [EpochLines(task_id, n_tasks, phase)]
