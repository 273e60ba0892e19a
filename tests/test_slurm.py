"""A real Slurm sweep: scripts/slurm_local.sh starts a one-node cluster, the Slurm launcher submits."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lifelong.aggregate import aggregate

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "slurm_local.sh"
# This checkout's sources, absolute: the jobs and the launcher run in other working directories.
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(
    [str(ROOT / "src")] + [str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))


def _running(name: str) -> bool:
    return subprocess.run(["pgrep", "-x", name], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def slurm_cluster():
    if os.geteuid() != 0 and not shutil.which("sbatch"):
        pytest.skip("Slurm is not installed and installing it (apt-get) needs root")
    was_running = _running("slurmctld")
    result = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=600)
    if result.returncode == 3:
        pytest.skip(f"Slurm cannot be installed here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stdout + result.stderr
    yield
    if not was_running:  # leave a cluster the user started alone
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, timeout=60)


@pytest.mark.slow
def test_sweep_through_the_slurm_launcher(slurm_cluster, tmp_path):
    sweep = tmp_path / "sweep"
    command = [
        sys.executable, str(ROOT / "train.py"), "-m", "hydra/launcher=slurm", "method=finetune", "seed=0,1",
        "dataset=digits", "scenario.n_tasks=2", "epochs=1", "trainer.limit_train_batches=2", "eval.limit_batches=2",
        "logger=none", "trainer.enable_progress_bar=false", "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=5", f"hydra.sweep.dir={sweep}",
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=ENV)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Submitit 'slurm' sweep output dir" in result.stdout + result.stderr

    job_logs = list((sweep / ".submitit").glob("*_*/*_log.out"))
    assert len(job_logs) == 2  # two Slurm array tasks ran the two runs
    run_dirs = sorted(p for p in sweep.iterdir() if p.name.endswith("_finetune"))
    assert [p.name for p in run_dirs] == ["0_finetune", "1_finetune"]
    for run_dir in run_dirs:
        assert (run_dir / "results.json").is_file() and (run_dir / "checkpoints" / "last.pt").is_file()

    rows = aggregate(sweep)
    assert len(rows) == 1 and sorted(rows[0].seeds) == [0, 1] and rows[0].missing == []
    table = subprocess.run([sys.executable, str(ROOT / "scripts" / "aggregate.py"), str(sweep)],
                           capture_output=True, text=True, check=True, env=ENV).stdout
    row = next(line for line in table.splitlines() if "method=finetune" in line)
    assert row.split("|")[2].strip() == "2"  # both seeds in the mean
    assert (sweep / "aggregate.md").is_file() and (sweep / "aggregate.csv").is_file()


@pytest.mark.slow
def test_jobs_larger_than_the_partition_stop_the_sweep_with_a_clear_message(slurm_cluster, tmp_path):
    """The launcher's defaults (4 CPUs, 32 GB per job) exceed a small machine's partition: sbatch refuses
    them (slurm_local.sh enforces partition limits), or, on a cluster that accepts them, they pend
    with reason PartitionConfig; either way the launcher stops at once with the keys to fit."""
    if os.cpu_count() >= 4 and os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") > 40e9:
        pytest.skip("this machine's partition is large enough for the launcher's defaults")
    command = [
        sys.executable, str(ROOT / "train.py"), "-m", "hydra/launcher=slurm", "method=finetune", "seed=0",
        "debug=smoke", "logger=none", f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=ENV)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "hydra.launcher.cpus_per_task" in error[0] and "hydra.launcher.mem_gb" in error[0]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_an_optuna_study_through_the_slurm_launcher(slurm_cluster, tmp_path):
    """hparams_search=... with hydra/launcher=slurm: each batch of n_jobs trials is a Slurm array job,
    the values come back to the sweeper, the study is in optuna.db and trials.csv."""
    import csv

    sweep = tmp_path / "study"
    command = [
        sys.executable, str(ROOT / "train.py"), "-m", "hparams_search=lwf_optuna", "hydra/launcher=slurm",
        "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", "dataset=digits", "scenario.n_tasks=2", "epochs=1",
        "trainer.limit_train_batches=2", "eval.limit_batches=2", "logger=none", "trainer.enable_progress_bar=false",
        "torch_threads=1", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=5",
        f"hydra.sweep.dir={sweep}",
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=ENV)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert len(list((sweep / ".submitit").glob("*_*/*_log.out"))) == 2  # both trials ran as Slurm array tasks
    trials = list(csv.DictReader((sweep / "trials.csv").open()))
    assert [t["state"] for t in trials] == ["COMPLETE", "COMPLETE"] and all(t["value"] for t in trials)
    assert "best_params" in (sweep / "optimization_results.yaml").read_text()
