"""Interrupted runs: real runs cut by SIGINT, SIGTERM and SIGKILL at random moments, then resumed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lifelong import interrupt

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_runs_cut_at_random_moments_resume_to_the_uninterrupted_matrices(tmp_path):
    # LwF (a frozen old model made at each task end), 2 epochs with validation: cuts land between
    # tasks, mid-epoch, in evaluation, plotting and checkpointing.
    spec = {"dir": str(tmp_path), "seed": int(os.environ.get("INTERRUPT_SEED", 11)), "signals": ["SIGINT", "SIGTERM", "SIGKILL"] * 2,
            "overrides": ["method=lwf", "epochs=2", "scenario.val_fraction=0.1", "logger=csv"]}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    subprocess.run([sys.executable, str(ROOT / "tests" / "interrupt_driver.py"), str(tmp_path / "spec.json"),
                    str(tmp_path / "out.json")], check=True, env=env, timeout=600)
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["full_status"] == 0 and report["full"]["status"] == "complete"
    expected = {128 + signal.SIGINT: "SIGINT", 128 + signal.SIGTERM: "SIGTERM", -signal.SIGKILL: "SIGKILL"}
    for attempt in report["attempts"]:
        assert attempt["final"] == report["full"], attempt  # every matrix as in the uninterrupted run
        assert attempt["leftovers"] == [], attempt  # no half-written file
        if attempt["status"] == 0:  # the run was already done when the signal came
            continue
        assert expected[attempt["status"]] == attempt["signal"], attempt
        cut = attempt["after_cut"]
        if attempt["signal"] != "SIGKILL":
            assert len(attempt["message"]) == 1 and "; resume with: python train.py " in attempt["message"][0]
            if cut is not None:
                assert cut["status"] in ("interrupted", "complete"), attempt
        if cut is not None and cut["status"] != "complete":
            assert cut["tasks_done"] < 3
    assert sum(a["status"] != 0 for a in report["attempts"]) >= 3  # most cuts hit a running run


def test_interruption_is_deferred_while_results_are_written():
    with pytest.raises(interrupt.RunInterrupted) as stop:
        with interrupt.handle_signals():
            with interrupt.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                written = True  # still runs: the signal waits for the block's end
            not_reached = True
    assert written and stop.value.exit_status == 143 and "not_reached" not in locals()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers put back


def test_an_interruption_that_was_swallowed_is_raised_again():
    """Code that clears errors (torch's C initialisation after a failed numpy import, a __del__)
    swallows the exception the handler raised: the signal still ends the block."""
    with pytest.raises(interrupt.RunInterrupted) as stop:
        with interrupt.handle_signals():
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
            except BaseException:  # noqa: BLE001
                pass
            swallowed = True
    assert swallowed and stop.value.exit_status == 130


@pytest.mark.slow
@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
def test_a_run_whose_interruption_was_swallowed_stops_as_interrupted(tmp_path, name):
    """Through the real entry point: a callback swallows the exception of a signal sent during the
    first training batch. The run still stops there, with the resume line and 128 + the signal, and
    results.json is marked interrupted (it used to go on, or exit 0 through Lightning's SIGTERM exit)."""
    run = tmp_path / "run"
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1", SWALLOWED_SIGNAL=name,
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]))
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "experiment=quickstart", "logger=none",
                           "torch_threads=1", "+callbacks.swallow._target_=swallow.SwallowSignal",
                           f"hydra.run.dir={run}"], capture_output=True, text=True, env=env, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 128 + signal.Signals[name], proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("interrupted during task 1 of 5; resume with:"), proc.stderr[-2000:]
    assert (run / "swallowed").read_text() == name  # the exception really was swallowed
    results = json.loads((run / "results.json").read_text())  # written although no task was done
    assert (results["status"], results["tasks_done"], results["tasks_planned"]) == ("interrupted", 0, 5)
    assert results["interrupted"] == {"signal": name, "during_task": 0}


def test_a_handler_installed_by_someone_else_is_kept():
    """Inside a submitit job, submitit owns SIGTERM (its requeue logic): we leave it alone."""
    calls = []
    previous = signal.signal(signal.SIGTERM, lambda *_: calls.append(1))
    try:
        with interrupt.handle_signals():
            os.kill(os.getpid(), signal.SIGTERM)
        assert calls == [1]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_resume_line_repeats_the_overrides():
    line = interrupt.message(1, 5, Path("/runs/x"))
    assert line.startswith("interrupted during task 2 of 5; resume with: python train.py ")
    assert line.endswith("resume=/runs/x")
    assert interrupt.message(None, 5, Path("/runs/x"), done=2).startswith("interrupted after task 2 of 5; ")
