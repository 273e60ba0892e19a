"""The real entry point, as a user runs it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def train(*args, cwd=ROOT, timeout=300):
    env = dict(os.environ, HYDRA_FULL_ERROR="0", WANDB_MODE="disabled")
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_quickstart_smoke_leaves_a_run_directory(tmp_path):
    result = train("experiment=quickstart", "debug=smoke", "logger=csv", "trainer.enable_progress_bar=false",
                   f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    results = json.loads((run / "results.json").read_text())
    assert results["tasks_done"] == 5 and len(results["acc_taw"]) == 5
    assert (run / ".hydra" / "config.yaml").is_file() and (run / "metrics.csv").is_file()
    assert (run / "plots" / "acc_tag_curves.png").is_file() and (run / "train.log").is_file()
    assert "after task 4:" in result.stdout + result.stderr + (run / "train.log").read_text()


@pytest.mark.parametrize("args,expected", [
    (["method=nonexistent"], "Available options in 'method'"),
    (["scenario.n_tasks=3"], "scenario.n_tasks=3 does not divide the 10 classes; valid choices: [1, 2, 5, 10]"),
    (["scenario.nc_first_task=10"], "scenario.nc_first_task=10 is too large"),
    (["scenario.class_order=icarl1993"], "scenario.class_order=icarl1993 is the CIFAR-100 order"),
    (["epochs=0"], "epochs=0 must be a positive integer"),
    (["dataset=cifar100", "dataset.download=false", "paths.data_root=/nonexistent"],
     "CIFAR100 is not in /nonexistent"),
])
def test_bad_input_is_one_clear_message_before_training(tmp_path, args, expected):
    result = train(*args, "logger=none", f"hydra.run.dir={tmp_path}/run")
    assert result.returncode != 0
    assert expected in result.stderr
    assert "Traceback" not in result.stderr and "Error in call to target" not in result.stderr
    if not args[0].startswith("method="):  # Hydra's own message for unknown group options
        assert f"error: {expected}" in result.stderr
    assert not (tmp_path / "run" / "results.json").exists()
