"""Lightning loggers for a run that is a sequence of fits.

Lightning restarts `global_step` at every `Trainer.fit`; a continual run has many fits (tasks and
phases), so the loggers add an offset that the runner advances after each fit, giving one x-axis
for the whole run.
"""
from __future__ import annotations

import netrc
import os

from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class _StepOffset:
    step_offset = 0

    def log_metrics(self, metrics, step=None):
        super().log_metrics(metrics, None if step is None else step + self.step_offset)


class _KeepingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv when it starts; a resumed run keeps
    the rows of its earlier attempts and appends (new columns rewrite the header, as Lightning does)."""

    def _check_log_dir_exists(self) -> None:
        import csv

        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = list(csv.DictReader(file).fieldnames or [])


class RunCSVLogger(_StepOffset, CSVLogger):
    """Training curves (loss terms, validation accuracy) in `<run dir>/logs/metrics.csv`; a resumed
    run appends to the rows of the interrupted one (steps of an epoch cut short appear again as the
    resumed run repeats that epoch)."""

    @property
    def experiment(self):
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(log_dir=self.log_dir)
        return self._experiment


class RunWandbLogger(_StepOffset, WandbLogger):
    """W&B through Lightning's logger, with the task index as the step of per-task results."""


def wandb_mode(requested: str = "auto") -> str:
    """`auto`: online when credentials exist (WANDB_API_KEY or ~/.netrc), else offline; never prompts."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1]
        if netrc.netrc().authenticators(host):
            return "online"
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        pass
    return "offline"
