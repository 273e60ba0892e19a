"""scripts/aggregate.py on hand-made run directories: mean, sample std, missing seeds reported."""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import yaml

from lifelong.aggregate import aggregate

ROOT = Path(__file__).resolve().parents[1]


def make_run(sweep: Path, num: int, overrides: list[str], acc_taw: float, acc_tag: float, forg: float,
             tasks_done: int = 3) -> None:
    run_dir = sweep / f"{num}_run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (run_dir / "results.json").write_text(json.dumps({
        "n_tasks": 3, "tasks_done": tasks_done, "final_avg_acc_taw": acc_taw, "final_avg_acc_tag": acc_tag,
        "final_avg_forg_taw": forg, "final_avg_forg_tag": 2 * forg,
    }))


def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "sweep"
    # lwf: seeds 0, 1, 2; ewc: seeds 0 and 2 finished, seed 1 never wrote results; joint stopped early.
    make_run(root, 0, ["method=lwf", "seed=0", "logger=none"], 0.90, 0.50, 0.10)
    make_run(root, 1, ["method=lwf", "seed=1", "logger=none"], 0.80, 0.40, 0.20)
    make_run(root, 2, ["method=lwf", "seed=2", "logger=none"], 0.70, 0.30, 0.30)
    make_run(root, 3, ["method=ewc", "seed=0", "logger=none"], 0.60, 0.20, 0.05)
    (root / "4_run" / ".hydra").mkdir(parents=True)
    (root / "4_run" / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["method=ewc", "seed=1"]))
    make_run(root, 5, ["method=ewc", "seed=2", "logger=none"], 0.40, 0.10, 0.15)
    make_run(root, 6, ["method=joint", "seed=0"], 0.99, 0.99, 0.0, tasks_done=2)
    return root


def test_mean_std_and_missing_seeds(tmp_path):
    rows = {row.config: row for row in aggregate(sweep(tmp_path))}
    assert list(rows) == ["method=lwf", "method=ewc", "method=joint"]  # sweep order; seed/logger ignored
    lwf, ewc, joint = rows["method=lwf"], rows["method=ewc"], rows["method=joint"]
    mean, std = lwf.stat("acc_taw")
    assert math.isclose(mean, 0.80) and math.isclose(std, 0.10)  # sample std of 0.9, 0.8, 0.7
    assert math.isclose(lwf.stat("forg_tag")[0], 0.40)
    assert lwf.missing == []
    assert sorted(ewc.seeds) == [0, 2] and ewc.missing == [1]
    assert any("seed=1" in entry and "no results.json" in entry for entry in ewc.incomplete)
    assert math.isclose(ewc.stat("acc_tag")[0], 0.15)
    assert joint.seeds == [] and joint.missing == [0, 1, 2]
    assert joint.stat("acc_taw") == (None, None)
    assert "2/3 tasks" in joint.incomplete[0]


def test_symlinked_runs_from_several_sweeps_aggregate_together(tmp_path):
    root = sweep(tmp_path)
    gathered = tmp_path / "gathered"
    gathered.mkdir()
    for name in ("0_run", "1_run", "2_run", "3_run"):
        (gathered / name).symlink_to(root / name, target_is_directory=True)
    (gathered / "loop").symlink_to(gathered, target_is_directory=True)  # walked once, not forever
    rows = {row.config: row for row in aggregate(gathered)}
    assert list(rows) == ["method=lwf", "method=ewc"]
    assert sorted(rows["method=lwf"].seeds) == [0, 1, 2] and rows["method=ewc"].seeds == [0]


def test_script_prints_and_writes_markdown_and_csv(tmp_path):
    root = sweep(tmp_path)
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "aggregate.py"), str(root)],
                         capture_output=True, text=True, check=True).stdout
    assert "| method=lwf | 3 | 80.00 ± 10.00 | 40.00 ± 10.00 | 20.00 ± 10.00 | 40.00 ± 20.00 | - |" in out
    assert "| method=ewc | 2 |" in out and out.count("| 1 |") == 1  # ewc misses seed 1
    assert "Incomplete runs" in out
    assert (root / "aggregate.md").read_text() in out
    table = list(csv.DictReader((root / "aggregate.csv").open()))
    assert [r["configuration"] for r in table] == ["method=lwf", "method=ewc", "method=joint"]
    assert math.isclose(float(table[0]["acc_taw_mean"]), 80.0)
    assert table[1]["missing_seeds"] == "1"
    assert table[2]["acc_taw_mean"] == "" and table[2]["n_seeds"] == "0"


def test_script_rejects_a_folder_without_runs(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "aggregate.py"), str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "no run directories" in result.stderr


def test_sweep_runs_share_a_wandb_group_and_carry_tags(tmp_path, monkeypatch):
    """The W&B side of a sweep: one group per sweep dir, method/dataset/scenario as tags."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from lifelong.run import sweep_group
    from tests.conftest import compose_config

    cfg = compose_config(tmp_path, "logger=wandb", "method=ewc")
    assert list(cfg.logger.wandb.tags) == ["ewc", "digits", "class_incremental"]
    assert cfg.logger.wandb.group is None  # null in the config: the sweep decides
    assert sweep_group() is None  # a single run
    multirun = OmegaConf.create({"mode": RunMode.MULTIRUN,
                                 "sweep": {"dir": "outputs/multirun/2026-01-31/12-00-00_4242"}})
    monkeypatch.setattr(HydraConfig, "get", staticmethod(lambda: multirun))
    assert sweep_group() == "multirun/2026-01-31/12-00-00_4242"


def test_interrupted_runs_are_incomplete_whatever_their_counts(tmp_path):
    root = tmp_path / "sweep"
    make_run(root, 0, ["method=lwf", "seed=0"], 0.9, 0.5, 0.1)
    make_run(root, 1, ["method=lwf", "seed=1"], 0.8, 0.4, 0.2, tasks_done=1)
    results = root / "1_run" / "results.json"
    results.write_text(json.dumps({**json.loads(results.read_text()), "status": "interrupted"}))
    (row,) = aggregate(root)
    assert row.seeds == [0] and row.incomplete == ["seed=1 (interrupted, 1/3 tasks: 1_run)"]
