"""What `python train.py` does around the task loop: early checks, clean errors, interruptions.

Light on purpose (no torch, no Lightning at import): a configuration error ends within a second or
two, before the heavy imports and any model is built. Exit statuses:

- 0: the run finished;
- 2: a user-fixable error (`ConfigError`, `DatasetNotFound`, a full or read-only disk): one line
  `error: ...` on stderr, also appended to the run's `train.log` when the run dir is an existing run;
  a run dir that Hydra has just created for this attempt is removed again (no stray directories);
- 130 / 143: interrupted by SIGINT / SIGTERM (`lifelong.interrupt`), with the line that resumes it.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from pathlib import Path

from omegaconf import DictConfig

from lifelong import interrupt, validate
from lifelong.errors import ConfigError, DatasetNotFound

log = logging.getLogger("lifelong")
HYDRA_FILES = {".hydra", "train.log"}  # what Hydra puts into a fresh run dir before the run starts


def output_dir(cfg: DictConfig) -> Path:
    if cfg.paths.get("output_dir"):
        return Path(cfg.paths.output_dir)
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def user_error(error: BaseException) -> BaseException | None:
    """The ConfigError/DatasetNotFound behind `error`, also when Hydra's instantiate wrapped it."""
    while error is not None:
        if isinstance(error, (ConfigError, DatasetNotFound)):
            return error
        error = error.__cause__ or error.__context__
    return None


def _only_hydra_files(path: Path) -> bool:
    return path.is_dir() and {p.name for p in path.iterdir()} <= HYDRA_FILES


def _log_line(run_dir: Path | None, line: str, level: str = "ERROR") -> None:
    """Append `line` to an existing run's train.log (Hydra's log file of this attempt may be elsewhere)."""
    if run_dir is None or not validate.is_run_dir(run_dir):
        return
    try:
        with open(Path(run_dir) / "train.log", "a") as f:
            f.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}][lifelong][{level}] - {line}\n")
    except OSError:
        pass


def _follow_log_into(run_dir: Path) -> None:
    """A resumed run logs into its own train.log, not only into the new attempt's."""
    handler = logging.FileHandler(Path(run_dir) / "train.log")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    logging.getLogger().addHandler(handler)


def main(cfg: DictConfig) -> float | None:
    """Hydra entry: check, train, and turn user errors and interruptions into one line each."""
    if not sys.stderr.isatty():  # before tqdm is imported: no redraw bars in a log file
        os.environ.setdefault("TQDM_DISABLE", "1")
    attempt_dir = output_dir(cfg)
    interrupt.where.update(run_dir=None, task=None, n_tasks=0, done=0)
    fresh = _only_hydra_files(attempt_dir) or not attempt_dir.exists()
    resume_dir = Path(str(cfg.resume)) if cfg.get("resume") else None
    run_dir = resume_dir or attempt_dir
    try:
        validate.check(cfg, run_dir)
        if resume_dir is not None and resume_dir.resolve() != attempt_dir.resolve():
            _follow_log_into(resume_dir)
            if fresh:  # Hydra made a new run dir for this attempt; the run goes on in resume_dir
                _remove_attempt(attempt_dir)
        with interrupt.handle_signals():
            if (cfg.get("speed") or {}).get("lean_imports", True):
                from lifelong import lean_imports

                lean_imports.lightning()  # without torchmetrics' scipy, torchvision and matplotlib: a second less
            from lifelong.run import train_sequence

            summary = train_sequence(cfg, attempt_dir)
    except interrupt.RunInterrupted as stop:
        _interrupted(stop, attempt_dir, run_dir, resume_dir, fresh)
    except SystemExit:  # Lightning ends a fit after SIGTERM with SystemExit(None): status 0
        if interrupt.pending() is None:
            raise
        _interrupted(interrupt.pending(), attempt_dir, run_dir, resume_dir, fresh)
    except Exception as error:  # noqa: BLE001  (sorted below; anything else goes up with its traceback)
        # A library wrapped the interruption in its own error, or failed after swallowing it (an import
        # cut half-way): either way the signal is what ended the run.
        stop = interrupt.cause(error) or interrupt.pending()
        if stop is not None:
            log.debug("after the signal: %r", error)
            _interrupted(stop, attempt_dir, run_dir, resume_dir, fresh)
        cause = user_error(error)
        message = str(cause) if cause is not None else None
        if message is None and isinstance(error, OSError):
            message = validate.disk_error_message(error, run_dir)
        if message is None:
            raise
        same = resume_dir is not None and resume_dir.resolve() == attempt_dir.resolve()
        _fail(message, run_dir, attempt_dir if fresh and not same else None)
    from lifelong import search

    return search.objective(cfg, summary)  # what a sweeper maximises: computed on validation data


def _interrupted(stop: interrupt.RunInterrupted, attempt_dir: Path, run_dir: Path, resume_dir: Path | None,
                 fresh: bool) -> None:
    """Mark the run interrupted, print the line that resumes it and exit with 128 + the signal."""
    where = interrupt.where
    if where["run_dir"] is None and resume_dir is None:  # before the task loop: nothing of the run yet
        if fresh:
            _remove_attempt(attempt_dir)
        print(f"\n{interrupt.BEFORE_TRAINING}", file=sys.stderr, flush=True)
        sys.exit(stop.exit_status)
    stopped_dir = Path(where["run_dir"] or run_dir)
    from lifelong import report, resume  # imported by the run already

    if resume.is_global_zero():
        report.mark_interrupted(stopped_dir, str(stop), where["task"], where["n_tasks"])
    line = interrupt.message(where["task"], where["n_tasks"], stopped_dir, where["done"])
    print(f"\n{line}", file=sys.stderr, flush=True)
    _log_line(stopped_dir, line, "WARNING")
    sys.exit(stop.exit_status)


def remove_unstarted_run_dir() -> None:
    """After an interruption before `main` ran: the run dir Hydra made for this attempt (found by
    the train.log it logs into, or hydra.run.dir= on the command line), if it holds only Hydra's
    own files (an existing run's directory is left alone). Hydra has reset its config by then."""
    candidates = [Path(h.baseFilename).parent for h in logging.getLogger().handlers
                  if isinstance(h, logging.FileHandler) and Path(h.baseFilename).name == "train.log"]
    candidates += [Path(a.split("=", 1)[1]) for a in sys.argv[1:] if a.startswith("hydra.run.dir=")]
    for path in candidates:
        if path.is_dir() and _only_hydra_files(path):
            for handler in logging.getLogger().handlers:
                if isinstance(handler, logging.FileHandler):
                    handler.close()
            _remove_attempt(path)
            return


def _remove_attempt(path: Path) -> None:
    """Remove the run dir Hydra made for this attempt, and the folders above it left empty: date folders,
    and a sweep's folder that holds nothing but Hydra's `multirun.yaml` (a sweep whose first run failed)."""
    shutil.rmtree(path, ignore_errors=True)
    cwd = Path.cwd().resolve()
    parent = path.resolve().parent
    while parent != cwd and cwd in parent.parents:
        try:
            if {p.name for p in parent.iterdir()} == {"multirun.yaml"}:
                (parent / "multirun.yaml").unlink()
            parent.rmdir()  # only when empty
        except OSError:
            break
        parent = parent.parent


def _fail(message: str, run_dir: Path | None, stray: Path | None) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    if stray is not None and _only_hydra_files(stray):
        _remove_attempt(stray)
    if stray is None or Path(run_dir) != Path(stray):
        _log_line(run_dir, f"error: {message}")
    sys.exit(2)


def check_command_line(argv: list[str], conf_dir: Path) -> None:
    """Before Hydra: misspelt or unknown keys (`lifelong.validate.check_command_line`)."""
    try:
        validate.check_command_line(argv, conf_dir)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)
