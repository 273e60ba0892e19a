"""Interrupted runs: Ctrl-C and SIGTERM end a run with a clear line and a resumable state.

`handle_signals()` turns SIGINT and SIGTERM into `RunInterrupted`, a `BaseException` (not a
`KeyboardInterrupt`, which Lightning swallows and turns into exit status 1). It propagates out of
any fit or between-task loop; `with deferred():` postpones it while files are written (a task's
results and its checkpoint), so an interruption never leaves one without the other.

A signal is also recorded when its exception is lost: Python runs the handler between two bytecodes,
and code that clears errors swallows what it raised (torch's C initialisation clears a failed numpy
import, a `__del__` ignores exceptions). `check()` raises a recorded signal at safe points (after
the imports, before and after each phase, before a task's results are written), and an error or a
`SystemExit` (Lightning's own SIGTERM exit, status 0) that follows a signal counts as the
interruption. So a signal can never be lost and a run that got one never ends as finished. The entry
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


_received: list[int] = []  # every signal since the outermost `handle_signals` began, raised or not
# Where the run is (set by the task loop): the interruption line and results.json name it.
where: dict = {"run_dir": None, "task": None, "n_tasks": 0, "done": 0}
_depth = 0  # open `deferred()` blocks
_scopes = 0  # open `handle_signals()` blocks


def _handler(signum, frame) -> None:
    _received.append(signum)
    if _depth == 0:
        raise RunInterrupted(signum)  # may be swallowed where it lands: `check()` raises it again


def pending() -> RunInterrupted | None:
    """The interruption a signal of this scope asked for (None when no signal came)."""
    return RunInterrupted(_received[0]) if _received else None


def check() -> None:
    """Raise the interruption a signal asked for, if any, unless results are being written."""
    stop = pending()
    if stop is not None and _depth == 0:
        raise stop


def _ours_to_take(signum: int) -> bool:
    current = signal.getsignal(signum)
    return current in (signal.SIG_DFL, signal.default_int_handler, None, _handler)


@contextlib.contextmanager
def handle_signals():
    """SIGINT/SIGTERM raise `RunInterrupted` inside the block (main thread only); the previous
    handlers come back afterwards. A handler installed by someone else (submitit) is left alone."""
    import threading

    global _scopes
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS if _ours_to_take(s)}
    for s in previous:
        signal.signal(s, _handler)
    if _scopes == 0:
        _received.clear()  # a new run (kept after the block: its error handlers read it)
    _scopes += 1
    try:
        yield
        check()  # a signal whose exception was swallowed inside the block
    finally:
        _scopes -= 1
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
        stop = cause(error) or pending()  # a failure after a signal: its lost exception's doing
        if isinstance(error, SystemExit) and (error.code not in (0, None) or stop is None):
            raise  # handled and said already (status 2, 130, 143) or a plain exit
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
    check()


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
