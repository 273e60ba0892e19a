"""Resume after preemption: what a run writes so that it can continue, and how it continues.

Two levels of resume points, both written atomically (temporary file, then rename), so a run that
is killed at any moment (Ctrl-C, SIGTERM, a Slurm time limit, a crash) leaves a usable state:

- `checkpoints/last.pt` after every finished task: the method's `state_dict()`, the results so
  far, the logger step offset, the W&B run id and the config the run was trained with.
- `checkpoints/task<t>/<i>_<phase>/last.ckpt` at the end of an epoch of the current task: a Lightning
  checkpoint (model, optimizer, scheduler, loop progress) plus the RNG states and the training
  sampler's generator state (`EpochCheckpoint`), so that the resumed epochs see the same batches
  and random draws as an uninterrupted run. Deleted once the task's `last.pt` is written. Which
  epochs write one is `checkpoint.*` (`CheckpointPolicy`): by default the first epoch of every
  phase, then as often as keeps the writing under 2 % of the training time (ABD's full checkpoint
  is ~105 MB: after each of its 250 epochs per task it cost more than the target). A resume
  continues from whichever epoch was saved last, with the same results.

On resume the runner rebuilds the method from the config, replays `begin_task` for every finished
task, calls `method.on_load_state_dict_structure(state_dict)` and then `load_state_dict` (see the
contract in `lifelong.methods.base`), and continues with the next task; a phase that has a
checkpoint continues from it (`Trainer.fit(ckpt_path=...)`).
"""
from __future__ import annotations

import logging
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import Checkpoint
from omegaconf import DictConfig, OmegaConf

from lifelong import validate
from lifelong.validate import IDENTITY_KEYS, check_same_config, identity  # noqa: F401  (light: checked before the imports too)
from lifelong.errors import ConfigError

log = logging.getLogger("lifelong")

LAST = Path("checkpoints") / "last.pt"
WANDB_ID = Path("checkpoints") / "wandb_id"
def is_global_zero() -> bool:
    """True on the process that writes reports and checkpoints (always true without DDP)."""
    return rank_zero_only.rank == 0


def has_state(run_dir: Path) -> bool:
    """Whether `run_dir` holds anything to resume from (a finished task or an epoch checkpoint)."""
    run_dir = Path(run_dir)
    return (run_dir / LAST).is_file() or any((run_dir / "checkpoints").glob("task*/*/last.ckpt"))


def save_task_state(run_dir: Path, method, summary: dict, cfg: DictConfig, step_offset: int,
                    wandb_id: str | None) -> None:
    """The resume point after a finished task (rank zero only)."""
    path = Path(run_dir) / LAST
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    try:
        torch.save({"tasks_done": summary["tasks_done"], "state_dict": method.state_dict(), "results": summary,
                    "step_offset": step_offset, "wandb_id": wandb_id, "config": identity(cfg)}, tmp)
        tmp.replace(path)
    except BaseException:  # a full disk or a kill: no half-written file stays behind
        tmp.unlink(missing_ok=True)
        raise
    # The finished task's epoch checkpoints are covered by last.pt now.
    shutil.rmtree(Path(run_dir) / "checkpoints" / f"task{summary['tasks_done'] - 1}", ignore_errors=True)


def load_task_state(run_dir: Path) -> dict | None:
    path = Path(run_dir) / LAST
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001  (whatever torch raises on a damaged file)
        raise validate.unreadable_checkpoint(path, f"{type(error).__name__}: {error}") from error


def phase_checkpoint(run_dir: Path, task_id: int, index: int, name: str) -> Path:
    return Path(run_dir) / "checkpoints" / f"task{task_id}" / f"{index}_{name}" / "last.ckpt"


def usable_checkpoint(path: Path) -> Path | None:
    """`path` if it exists and loads; a torn file (a kill during the write) is dropped with a warning."""
    if not path.is_file():
        return None
    try:
        torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001  (any unreadable file means: no checkpoint)
        log.warning("ignoring unreadable checkpoint %s (%s)", path, error)
        return None
    return path


def wandb_run_id(run_dir: Path) -> str | None:
    """The W&B id of an earlier attempt of this run (None for a fresh run): a resumed run continues it."""
    path = Path(run_dir) / WANDB_ID
    return path.read_text().strip() if path.is_file() else None


def keep_wandb_run_id(run_dir: Path, run_id: str) -> None:
    """Written as soon as the W&B run exists, so that even a run killed in its first task continues it."""
    path = Path(run_dir) / WANDB_ID
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n")


# ----------------------------------------------------------------------------- RNG states
def rng_states() -> dict[str, Any]:
    """Torch, NumPy and Python RNG states, as tensors and plain types (Lightning loads weights-only)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    states = {"torch": torch.get_rng_state(), "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos,
                                                           has_gauss, cached], "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _sampler_generators(loader) -> list[torch.Generator]:
    """The torch.Generators that decide a DataLoader's order (ours: the RandomSampler inside the
    BatchSampler that serves whole batches), in a fixed order."""
    found, owners = [], [loader]
    for _ in range(3):  # loader -> (batch_)sampler -> sampler
        owners = [o for owner in owners for o in (getattr(owner, "batch_sampler", None),
                                                   getattr(owner, "sampler", None)) if o is not None]
        for owner in owners:
            generator = getattr(owner, "generator", None)
            if isinstance(generator, torch.Generator) and all(generator is not g for g in found):
                found.append(generator)
    return found


class CheckpointPolicy:
    """`checkpoint.*`: which epoch ends write a phase's mid-task resume point. An epoch end is a
    candidate every `every_n_epochs` epochs; a candidate is skipped while less than `every_s`
    seconds have passed since the phase started or its last write (None: no time rule), and while
    the last write took more than `max_fraction` of the time since it ended (None: no cost rule; the
    first write of a phase, whose cost is not known yet, is never skipped by this rule). One policy
    serves a whole run and adds up the seconds spent writing (`seconds`, in results.json)."""

    def __init__(self, every_n_epochs: int = 1, every_s: float | None = None, max_fraction: float | None = 0.02):
        self.every_n_epochs, self.every_s, self.max_fraction = every_n_epochs, every_s, max_fraction
        self.seconds, self.writes = 0.0, 0

    def due(self, epoch: int, since_last: float, last_cost: float | None) -> bool:
        if (epoch + 1) % self.every_n_epochs:
            return False
        if self.every_s is not None and since_last < self.every_s:
            return False
        if self.max_fraction is not None and last_cost is not None and last_cost > self.max_fraction * since_last:
            return False
        return True


class EpochCheckpoint(Checkpoint):
    """Saves `last.ckpt` at the end of a training epoch (those `policy` picks), atomically, with the RNG states.

    A `Checkpoint` subclass, so Lightning calls it after the LightningModule's own epoch-end hook,
    like its ModelCheckpoint. On `fit(ckpt_path=...)` the global RNG states are put back as the
    checkpoint is loaded (before Lightning creates the first DataLoader iterator, which draws a base
    seed from the global RNG, as it does after the epoch end in an uninterrupted run), and the
    sampler's generator when training starts, before its first permutation is drawn.
    """

    def __init__(self, path: Path, policy: CheckpointPolicy | None = None):
        self.path, self.policy = Path(path), policy or CheckpointPolicy(max_fraction=None)
        self._restore: dict | None = None
        self._last_end, self._last_cost = time.monotonic(), None  # this fit's last write: when it ended, its cost

    @property
    def state_key(self) -> str:
        return "EpochCheckpoint"

    def state_dict(self) -> dict[str, Any]:
        trainer = getattr(self, "_trainer", None)
        loader = trainer.train_dataloader if trainer is not None else None
        return {"rng": rng_states(), "samplers": [g.get_state() for g in _sampler_generators(loader)]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        set_rng_states(state_dict["rng"])
        self._restore = state_dict

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._trainer = trainer

    def on_train_start(self, trainer, pl_module) -> None:
        self._last_end = time.monotonic()
        if self._restore is None:
            return
        for generator, state in zip(_sampler_generators(trainer.train_dataloader), self._restore["samplers"]):
            generator.set_state(state)
        self._restore = None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        due = self.policy.due(trainer.current_epoch, time.monotonic() - self._last_end, self._last_cost)
        if trainer.world_size > 1:  # every rank takes part in a save: rank zero's clock decides for all
            due = trainer.strategy.broadcast(due, src=0)
        if due:
            start = time.monotonic()
            self._save(trainer)
            self._last_end = time.monotonic()
            self._last_cost = self._last_end - start
            self.policy.seconds += self._last_cost
            self.policy.writes += 1

    def _save(self, trainer) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            trainer.save_checkpoint(tmp)  # every rank takes part; rank zero writes
            if trainer.is_global_zero:
                os.replace(tmp, self.path)
        except BaseException:  # a full disk or a kill: no half-written file stays behind
            if trainer.is_global_zero:
                tmp.unlink(missing_ok=True)
            raise
