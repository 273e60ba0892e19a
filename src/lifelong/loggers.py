"""Lightning loggers for a run that is a sequence of fits.

Lightning restarts `global_step` at every `Trainer.fit`; a continual run has many fits (tasks and
phases), so the loggers add an offset that the runner advances after each fit, giving one x-axis
for the whole run.
"""
from __future__ import annotations

import netrc
import os

from lightning.pytorch.loggers import CSVLogger, WandbLogger


class _StepOffset:
    step_offset = 0

    def log_metrics(self, metrics, step=None):
        super().log_metrics(metrics, None if step is None else step + self.step_offset)


class RunCSVLogger(_StepOffset, CSVLogger):
    """Training curves (loss terms, validation accuracy) in `<run dir>/logs/metrics.csv`."""


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
