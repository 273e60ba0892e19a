"""What a run leaves for a reader: permissions, progress lines, plot titles (debug loop lengths: tests/test_smoke_loops.py)."""
from __future__ import annotations

import os
import stat


def test_result_files_respect_the_umask(run):
    previous = os.umask(0o022)
    try:
        _, run_dir = run("method=finetune", "logger=csv")
    finally:
        os.umask(previous)
    for path in [run_dir / "results.json", run_dir / "metrics.csv", *sorted((run_dir / "plots").glob("*.png"))]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_without_a_terminal_each_epoch_is_one_plain_line(run, capsys):
    summary, run_dir = run("method=finetune", "epochs=2", "trainer.enable_progress_bar=true")
    out = capsys.readouterr().out
    assert "\r" not in out
    lines = [line for line in out.splitlines() if line.startswith("task ")]
    assert [line.split(":")[0] for line in lines] == [f"task {t}/3 · train · epoch {e}/2" for t in (1, 2, 3)
                                                      for e in (1, 2)]
    assert summary["title"] == f"Finetune on digits, class_incremental (3 tasks), {run_dir.name}"
