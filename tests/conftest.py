"""Shared fixtures: compose the real config with Hydra's compose API and run the real task loop."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import lifelong.config  # noqa: F401  (registers the job_id resolver)

CONF = Path(__file__).resolve().parents[1] / "conf"

# 10 digit classes in 3 tasks (4 + 3 + 3), one epoch of a few batches: seconds per run.
TINY = [
    "dataset=digits", "scenario.n_tasks=3", "scenario.nc_first_task=4", "epochs=1",
    "trainer.limit_train_batches=4", "logger=none", "trainer.enable_progress_bar=false",
]

# What a method needs to run at all on TINY digits (the mode audit and the DDP test run every method);
# everything else is the method's own defaults.
NEEDS = {
    "abd": ["backbone=convnet", "method.synthesis_iters=2", "method.synthesis_batch_size=8"],
    "deepinversion": ["backbone=convnet", "method.synthesis_iters=2", "method.synthesis_batch_size=8"],
    "clr": ["backbone=convnet", "method.random_backbone=true", "scenario.val_fraction=0.2"],
    "linear": ["backbone=convnet", "method.random_backbone=true", "scenario.val_fraction=0.2"],
    "feature_extraction": ["backbone=convnet", "method.random_backbone=true"],
    "ebll": ["backbone=convnet", "method.ae_epochs=1", "method.warmup_epochs=1"],
    "mind": ["backbone=convnet"],
    "packnet": ["backbone=convnet"],
    "bic": ["method.bias_epochs=1"],
    "e2e": ["method.finetuning_epochs=1"],
    "dgr": ["method.z_size=32"],  # the VAE's code: 1024 (CIFAR) costs most of a tiny run
}


def compose_config(output_dir: Path, *overrides: str) -> DictConfig:
    """The config `python train.py <overrides>` would run with, writing into `output_dir`."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # so ${hydra:...} interpolations resolve
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def run_config(output_dir: Path, *overrides: str) -> dict:
    from lifelong.run import train_sequence

    cfg = compose_config(output_dir, *overrides)
    return train_sequence(cfg, Path(cfg.paths.output_dir))


@pytest.fixture
def run(tmp_path):
    """`run(*overrides)` trains with TINY + overrides in a fresh folder; returns (summary, run_dir)."""
    counter = iter(range(1000))

    def _run(*overrides: str, tiny: bool = True):
        out = tmp_path / f"run{next(counter)}"
        summary = run_config(out, *(TINY if tiny else []), *overrides)
        return summary, out

    return _run


class StopRun(Exception):
    """Raised inside a run to stop it as a kill would (what resume tests interrupt runs with)."""


@pytest.fixture
def stopped_and_resumed(run, monkeypatch, tmp_path):
    """`stopped_and_resumed(*overrides)` trains TINY + overrides, stops right after task 1's
    checkpoint is written (with `mid_task=True`: at the end of task 1's second epoch, so its epoch
    checkpoint is what resumes), resumes with `resume=` and returns the run dir (the matrices and
    `checkpoints/last.pt` can then be compared with an uninterrupted run's)."""
    from lifelong import resume as checkpoints
    from lifelong.methods.base import ContinualMethod

    def _run(*overrides: str, tiny: bool = True, mid_task: bool = False) -> Path:
        save = checkpoints.save_task_state

        def stop_after_task_1(run_dir, method, summary, *args, **kwargs):
            save(run_dir, method, summary, *args, **kwargs)
            if summary["tasks_done"] == 2:
                raise StopRun

        def stop_in_task_1_epoch_1(self):
            if self.task.id == 1 and self.current_epoch == 1:
                raise StopRun

        before = set(tmp_path.glob("run*"))
        if mid_task:
            monkeypatch.setattr(ContinualMethod, "on_train_epoch_end", stop_in_task_1_epoch_1, raising=False)
        else:
            monkeypatch.setattr(checkpoints, "save_task_state", stop_after_task_1)
        with pytest.raises(StopRun):
            run(*overrides, tiny=tiny)
        monkeypatch.undo()
        (stopped,) = set(tmp_path.glob("run*")) - before
        run(*overrides, f"resume={stopped}", tiny=tiny)
        return stopped

    return _run
