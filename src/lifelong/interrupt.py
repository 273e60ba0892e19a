"""Interrupted runs: Ctrl-C and SIGTERM end a run with a clear line and a resumable state.

`handle_signals()` turns SIGINT and SIGTERM into `RunInterrupted`, a `BaseException` (not a
`KeyboardInterrupt`, which Lightning swallows and turns into exit status 1). It propagates out of
any fit or between-task loop; `with deferred():` postpones it while files are written (a task's
results and its checkpoint), so an interruption never leaves one without the other. The entry
point (`lifelong.run.main`) marks `results.json` as interrupted, prints one line

    interrupted during task k of T; resume with: python train.py ... resume=<run dir>

and exits with 128 + the signal number (130 for SIGINT, 143 for SIGTERM), as shells and other
tools do. Handlers that someone else installed stay: in a submitit job on Slurm, submitit owns
SIGTERM (it ignores it) and its own requeue signal, so preemption and time-limit requeues work as
before; the requeued job resumes from its run dir.
"""
from __future__ import annotations

import contextlib
import shlex
import signal
import sys
from pathlib import Path

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunInterrupted(BaseException):
    """SIGINT or SIGTERM arrived; `exit_status` is 128 + the signal number."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


_pending: list[int] = []  # signals received inside `deferred()`
# Where the run is (set by the task loop): the interruption line and results.json name it.
where: dict = {"run_dir": None, "task": None, "n_tasks": 0, "done": 0}
_depth = 0


def _handler(signum, frame) -> None:
    if _depth > 0:
        _pending.append(signum)
        return
    raise RunInterrupted(signum)


def _ours_to_take(signum: int) -> bool:
    current = signal.getsignal(signum)
    return current in (signal.SIG_DFL, signal.default_int_handler, None, _handler)


@contextlib.contextmanager
def handle_signals():
    """SIGINT/SIGTERM raise `RunInterrupted` inside the block (main thread only); the previous
    handlers come back afterwards. A handler installed by someone else (submitit) is left alone."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS if _ours_to_take(s)}
    for s in previous:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


BEFORE_TRAINING = "interrupted before training started; nothing was written: run the same command again"


@contextlib.contextmanager
def at_startup(cleanup=None):
    """train.py's imports, checks and Hydra's setup: SIGINT/SIGTERM end them with one line and
    128 + the signal (no traceback), after `cleanup()` (the run dir Hydra may have made already);
    the task loop (`lifelong.cli.main`) handles its own."""
    try:
        with handle_signals():
            yield
    except BaseException as error:  # noqa: BLE001  (Hydra may wrap the interruption in its own error)
        stop = None if isinstance(error, SystemExit) else cause(error)  # SystemExit: handled and said already
        if stop is None:
            raise
        if cleanup is not None:
            cleanup()
        print(f"\n{BEFORE_TRAINING}", file=sys.stderr, flush=True)
        sys.exit(stop.exit_status)


def cause(error: BaseException | None) -> RunInterrupted | None:
    """The `RunInterrupted` behind `error` (itself, or what a library's own error was raised from)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, RunInterrupted):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


@contextlib.contextmanager
def deferred():
    """Postpone an interruption until the block is done (writing results and checkpoints)."""
    global _depth
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _pending:
            signum = _pending[0]
            _pending.clear()
            raise RunInterrupted(signum)


def command_line(run_dir: Path) -> str:
    """The command that continues `run_dir`: this run's overrides, with resume=<run dir>."""
    overrides: list[str] = []
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            overrides = list(HydraConfig.get().overrides.task)
    except Exception:  # noqa: BLE001  (no Hydra: plain arguments)
        overrides = []
    if not overrides:
        overrides = [a for a in sys.argv[1:] if not a.startswith("-")]
    kept = [o for o in overrides if not o.split("=", 1)[0].lstrip("+~") in ("resume", "hydra.run.dir")]
    return " ".join(["python train.py", *map(shlex.quote, kept), f"resume={shlex.quote(str(run_dir))}"])


def message(task_index: int | None, n_tasks: int, run_dir: Path, done: int = 0) -> str:
    if task_index is not None:
        where = f"during task {task_index + 1} of {n_tasks}"
    else:
        where = f"after task {done} of {n_tasks}" if done else "before the first task"
    return f"interrupted {where}; resume with: {command_line(run_dir)}"
