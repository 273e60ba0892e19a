"""Hyperparameter search: the objective comes from validation data; an Optuna study through train.py."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lifelong import search

ROOT = Path(__file__).resolve().parents[1]
TINY_STUDY = ["dataset=digits", "scenario.n_tasks=2", "epochs=1", "trainer.limit_train_batches=2",
              "eval.limit_batches=2", "logger=none", "trainer.enable_progress_bar=false"]


def test_objective_is_read_from_validation_data_not_test(run, monkeypatch):
    """Scrambling every test label changes the test accuracies but not the objective."""
    summary, run_dir = run("method=lwf", "scenario.val_fraction=0.2")
    assert summary["val_acc_tag"][2][0] is not None and summary["val_final_avg_acc_tag"] is not None
    value = search.objective({"objective": "val_final_avg_acc_tag"}, summary)
    assert value == summary["val_final_avg_acc_tag"]
    assert json.loads((run_dir / "results.json").read_text())["val_final_avg_acc_tag"] == value

    from lifelong.data import scenario as scenarios

    original = scenarios.build_scenario

    def scrambled(*args, **kwargs):
        built = original(*args, **kwargs)
        for task in built.tasks:
            task.test.y = task.offset + (task.test.y - task.offset + 1) % task.n_classes  # every test label wrong
        return built

    monkeypatch.setattr(scenarios, "build_scenario", scrambled)
    other, _ = run("method=lwf", "scenario.val_fraction=0.2")
    assert other["final_avg_acc_tag"] != summary["final_avg_acc_tag"]  # the test sets did change
    assert search.objective({"objective": "val_final_avg_acc_tag"}, other) == value


def _study(sweep: Path, *extra: str, n_trials: int) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "train.py"), "-m", "hparams_search=lwf_optuna", *TINY_STUDY,
               f"hydra.sweeper.n_trials={n_trials}", f"hydra.sweep.dir={sweep}", *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    sweep.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.run(command, cwd=sweep.parent, capture_output=True, text=True, timeout=600, env=env)


def _trials(sweep: Path) -> list[dict]:
    return list(csv.DictReader((sweep / "trials.csv").open()))


@pytest.mark.slow
def test_optuna_study_through_train_py_and_its_continuation(tmp_path):
    sweep = tmp_path / "study"
    result = _study(sweep, n_trials=2)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    trials = _trials(sweep)
    assert [t["state"] for t in trials] == ["COMPLETE", "COMPLETE"]
    run_dirs = sorted(p for p in sweep.iterdir() if (p / "results.json").is_file())
    assert len(run_dirs) == 2
    # Each trial's value is its run's validation objective, never the test-set average.
    by_lr = {}
    for run_dir in run_dirs:
        results = json.loads((run_dir / "results.json").read_text())
        overrides = (run_dir / ".hydra" / "overrides.yaml").read_text()
        lr = next(line.split("=", 1)[1] for line in overrides.splitlines() if "optimizer.lr=" in line)
        by_lr[float(lr)] = results
    for t in trials:
        results = by_lr[float(t["optimizer.lr"])]
        assert float(t["value"]) == pytest.approx(results["val_final_avg_acc_tag"])
        assert float(t["value"]) != pytest.approx(results["final_avg_acc_tag"])
    best = (sweep / "optimization_results.yaml").read_text()
    assert "best_params" in best and "method.lamb" in best

    # Continue the study: finished trials are kept, not repeated; the new trial gets its own run dir.
    mtimes = {p: (p / "results.json").stat().st_mtime for p in run_dirs}
    result = _study(sweep, n_trials=1)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    trials_after = _trials(sweep)
    assert [t["number"] for t in trials_after] == ["0", "1", "2"]
    assert trials_after[:2] == trials
    assert all(t["state"] == "COMPLETE" for t in trials_after)
    assert {p: (p / "results.json").stat().st_mtime for p in run_dirs} == mtimes
    assert len([p for p in sweep.iterdir() if (p / "results.json").is_file()]) == 3

    summary = subprocess.run([sys.executable, str(ROOT / "scripts" / "study.py"), str(sweep)], capture_output=True,
                             text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")}).stdout
    assert "3 trials, 3 complete" in summary and "Best: trial" in summary
    assert (sweep / "plots" / "study_value.png").is_file() and (sweep / "plots" / "study_method.lamb.png").is_file()


def test_a_search_without_validation_splits_is_refused(tmp_path):
    result = _study(tmp_path / "study", "scenario.val_fraction=0", n_trials=1)
    assert "scenario.val_fraction=0" in result.stderr and "validation" in result.stderr
    assert not list((tmp_path / "study").glob("*/results.json"))


def test_every_search_space_composes():
    from tests.conftest import compose_config

    for path in sorted((ROOT / "conf" / "hparams_search").glob("[!_]*.yaml")):
        extra = ["+memory.size=2000"] if path.stem == "memory_optuna" else []
        cfg = compose_config(Path("/tmp"), f"hparams_search={path.stem}", *extra)
        assert cfg.hydra.sweeper.direction == "maximize" and cfg.hydra.sweeper.params, path.name
        assert cfg.objective.startswith("val_") and cfg.scenario.val_fraction > 0
        assert cfg.hydra.sweeper.sampler.seed == 0
        for key in cfg.hydra.sweeper.params:
            from omegaconf import OmegaConf

            assert OmegaConf.select(cfg, key) is not None, f"{path.name}: {key} is not a config key"


def test_study_summary_and_wandb_study_run(tmp_path, monkeypatch):
    """The summary table and plots from hand-made trials; the W&B `study` run in the sweep's group."""
    from omegaconf import OmegaConf

    from lifelong.study import best, log_study_to_wandb, plot, summary_markdown

    trials = [{"number": 0, "state": "COMPLETE", "value": 0.5, "params": {"optimizer.lr": 0.01, "method.lamb": 1.0}},
              {"number": 1, "state": "COMPLETE", "value": 0.7, "params": {"optimizer.lr": 0.1, "method.lamb": 5.0}},
              {"number": 2, "state": "RUNNING", "value": None, "params": {"optimizer.lr": 0.3, "method.lamb": 9.0}},
              {"number": 3, "state": "COMPLETE", "value": 0.6, "params": {"optimizer.lr": 0.2, "method.lamb": 2.0}}]
    assert best(trials)["number"] == 1
    text = summary_markdown(trials)
    assert "4 trials, 3 complete" in text and "Best: trial 1, objective 70.00 %" in text
    assert "| 3 | COMPLETE | 60.00 | 70.00 | 2 | 0.2 |" in text  # best so far stays at trial 1's value
    names = sorted(p.name for p in plot(trials, tmp_path / "plots"))
    assert names == ["study_method.lamb.png", "study_optimizer.lr.png", "study_value.png"]

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    sweep = tmp_path / "multirun" / "2026-01-31" / "12-00-00_42"
    sweep.mkdir(parents=True)
    cfg = OmegaConf.create({"logger": {"wandb": {"project": "lifelong", "entity": None, "group": None, "mode": "auto"}}})
    import wandb

    seen = {}
    real_init = wandb.init
    monkeypatch.setattr(wandb, "init", lambda **kw: seen.update(kw) or real_init(**kw))
    log_study_to_wandb(cfg, sweep, trials)
    assert seen["group"] == "multirun/2026-01-31/12-00-00_42" and seen["job_type"] == "study"
    assert list((sweep / "wandb").glob("offline-run-*"))


def test_a_study_composes_with_the_slurm_launcher():
    from tests.conftest import compose_config

    cfg = compose_config(Path("/tmp"), "hparams_search=lwf_optuna", "hydra/launcher=slurm", "hydra.sweeper.n_jobs=4")
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher") and cfg.hydra.sweeper.n_jobs == 4
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert cfg.hydra.sweeper.storage.startswith("sqlite:///")
