"""Paper numbers beside ours: the `paper:` block of experiment files, matched by method and setting,
printed by scripts/aggregate.py with the difference, and the accuracy-per-task figure of a sweep."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from conftest import compose_config
from lifelong.aggregate import aggregate, paper_entry, plot_curves, to_markdown

ROOT = Path(__file__).resolve().parents[1]


def write_run(run_dir: Path, cfg, overrides: list[str], acc_tag_all: list[float], avg_acc_tag: list[float]) -> None:
    """A run directory as Hydra and the runner leave it: .hydra/{config,hydra,overrides}.yaml, results.json."""
    (run_dir / ".hydra").mkdir(parents=True)
    config = OmegaConf.to_container(cfg, resolve=False)
    hydra = config.pop("hydra")
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": hydra}))
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    n = len(acc_tag_all)
    (run_dir / "results.json").write_text(json.dumps({
        "n_tasks": n, "tasks_done": n, "final_avg_acc_taw": 0.9, "final_avg_acc_tag": avg_acc_tag[-1],
        "final_avg_forg_taw": 0.0, "final_avg_forg_tag": 0.1, "acc_tag_all": acc_tag_all, "avg_acc_tag": avg_acc_tag,
    }))


def abd_sweep(tmp_path: Path) -> Path:
    sweep = tmp_path / "sweep"
    for num, (method, seed, final) in enumerate([("abd", 0, 0.42), ("abd", 1, 0.44), ("lwf", 0, 0.18)]):
        overrides = ["experiment=abd_cifar100", f"method={method}", "scenario.n_tasks=10", f"seed={seed}"]
        cfg = compose_config(tmp_path / "unused", *overrides)
        write_run(sweep / f"{num}_{method}", cfg, overrides, [0.8, 0.6, final], [0.8, 0.65, final + 0.05])
    return sweep


def test_the_abd_experiment_records_its_readme_table_by_method_and_setting(tmp_path):
    sweep = abd_sweep(tmp_path)
    abd = paper_entry(sweep / "0_abd")
    assert (abd["mean"], abd["std"], abd["metric"]) == (33.7, 1.2, "acc_tag_all")  # 10 tasks, not 5 or 20
    assert paper_entry(sweep / "2_lwf")["mean"] == 9.2
    other = compose_config(tmp_path / "unused", "experiment=abd_cifar100", "method=ewc")
    write_run(tmp_path / "ewc", other, ["experiment=abd_cifar100", "method=ewc"], [0.5], [0.5])
    assert paper_entry(tmp_path / "ewc") is None  # the paper has no EWC row


def test_aggregate_prints_ours_beside_the_paper_with_the_difference(tmp_path):
    rows = {row.config: row for row in aggregate(abd_sweep(tmp_path))}
    abd = rows["experiment=abd_cifar100 method=abd scenario.n_tasks=10"]
    mean, std = abd.stat("paper_metric")
    assert math.isclose(mean, 0.43) and math.isclose(std, math.sqrt(2) * 0.01)
    text = to_markdown(list(rows.values()))
    line = next(l for l in text.splitlines() if l.startswith("| experiment=abd_cifar100 method=abd") and "33.70" in l)
    assert "43.00 ± 1.41" in line and "+9.30" in line and "acc_tag_all" in line
    assert "| 9.20 ± 0.00 | +8.80 |" in text  # lwf: 18.0 measured against LwF's 9.2


def test_script_writes_the_curves_figure_next_to_the_table(tmp_path):
    sweep = abd_sweep(tmp_path)
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "aggregate.py"), str(sweep)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert (sweep / "aggregate_curves.png").stat().st_size > 1000
    assert "ours − paper" in (sweep / "aggregate.md").read_text()
    assert "paper_mean" in (sweep / "aggregate.csv").read_text().splitlines()[0]


def test_no_figure_without_a_finished_seed(tmp_path):
    assert plot_curves([], tmp_path / "x.png") is None and not (tmp_path / "x.png").exists()


def test_figure_labels_drop_shared_overrides_and_name_the_method_first():
    from lifelong.aggregate import Row, short_labels

    rows = [Row("experiment=b method=lwf"),
            Row("experiment=b method.synthesis_batch_size=32 method.synthesis_iters=200 method=abd")]
    assert short_labels(rows) == ["method=lwf", "method=abd (+2 overrides)"]


def test_the_abd_coreset_rows_match_runs_with_a_memory(tmp_path):
    def entry(name, *overrides):
        overrides = ["experiment=abd_cifar100", "scenario.n_tasks=10", *overrides]
        write_run(tmp_path / name, compose_config(tmp_path / "unused", *overrides), overrides, [0.3], [0.3])
        return paper_entry(tmp_path / name)

    naive = entry("naive", "method=finetune", "memory=random")  # Naive Rehearsal: 2,000 stored images
    assert naive["mean"] == 24.0 and "with 2000 image coreset" in naive["source"]
    base = entry("base", "method=finetune")  # no memory: the no-coreset table
    assert base["mean"] == 8.8 and "no coreset" in base["source"]
    assert entry("lwf", "method=lwf", "memory=random")["mean"] == 27.4
    assert entry("e2e", "method=e2e", "memory=random")["mean"] == 38.4
    bic = entry("bic", "method=bic")  # its own memory (random), 2,000 images
    assert bic["mean"] == 45.9 and bic["std"] == 1.8
    assert yaml.safe_load((tmp_path / "bic" / ".hydra" / "config.yaml").read_text())["memory"]["size"] == 2000


def test_the_facil_experiment_records_the_survey_numbers_quoted_in_its_issues(tmp_path):
    def entry(name, *overrides, final=0.3):
        overrides = ["experiment=facil_cifar100_10x10", *overrides]
        write_run(tmp_path / "sweep" / name, compose_config(tmp_path / "unused", *overrides), overrides,
                  [final], [final])
        return paper_entry(tmp_path / "sweep" / name)

    lwf = entry("lwf", "method=lwf", "memory=none", final=0.25)  # LwF without exemplars, 10/10
    assert (lwf["mean"], lwf.get("std"), lwf["metric"]) == (30.2, None, "final_avg_acc_tag")
    assert "issues/36" in lwf["source"]
    assert entry("lwf_e", "method=lwf") is None  # LwF-E (the herding memory): its row was not read
    lucir = entry("lucir", "method=lucir", "scenario.n_tasks=11", "scenario.nc_first_task=50")
    assert lucir["mean"] == 43.4 and "issues/6" in lucir["source"]
    assert entry("lucir_10", "method=lucir") is None  # 10/10: not the 50/11 number
    text = to_markdown(aggregate(tmp_path / "sweep"))
    line = next(l for l in text.splitlines() if "memory=none method=lwf" in l and "30.20" in l)
    assert "| final_avg_acc_tag | 25.00 | 30.20 | -5.20 |" in line  # one seed: no std


def test_the_abd_table_matches_every_row_of_its_documented_sweeps(tmp_path):
    """Each row of ABD's README table is reached by the command the experiment file gives for it:
    UB by joint_reinit (the oracle), DGR only with its script's weight decay 0."""
    def entry(name, *overrides):
        overrides = ["experiment=abd_cifar100", "scenario.n_tasks=20", *overrides]
        write_run(tmp_path / name, compose_config(tmp_path / "unused", *overrides), overrides, [0.1], [0.1])
        return paper_entry(tmp_path / name)

    assert entry("ub", "method=joint_reinit")["mean"] == 69.9
    assert entry("joint", "method=joint") is None  # joint continues from the current model: not the oracle
    assert (entry("dgr", "method=dgr", "optimizer.weight_decay=0")["mean"]) == 4.1
    assert entry("dgr_wd", "method=dgr") is None  # the sweep's weight decay 2e-4: not DGR's script
    for method, mean in [("finetune", 4.4), ("lwf", 4.7), ("lwf_mc", 7.7), ("deepinversion", 5.7), ("abd", 20.0)]:
        assert entry(method, f"method={method}")["mean"] == mean


def test_every_paper_entry_names_a_method_and_config_keys_that_exist(tmp_path):
    """A typo in a `paper:` block (a method option or a setting key that does not exist) would silently
    match no run: every entry of every experiment file composes with its method and finds its keys."""
    checked = 0
    for path in sorted((ROOT / "conf" / "experiment").glob("*.yaml")):
        block = (yaml.safe_load(path.read_text()) or {}).get("paper") or {}
        assert not block or {"source", "metric", "results"} <= set(block), path.name
        for entry in block.get("results") or []:
            assert (ROOT / "conf" / "method" / f"{entry['method']}.yaml").is_file(), (path.name, entry)
            # with and without a memory: `memory._target_` exists only where memory= names one
            configs = [compose_config(tmp_path / "unused", f"experiment={path.stem}", f"method={entry['method']}",
                                      *memory) for memory in ([], ["memory=random"])]
            absent = object()
            for key in entry.get("setting") or {}:
                assert any(OmegaConf.select(cfg, key, default=absent) is not absent for cfg in configs), \
                    (path.name, entry["method"], key)
            assert isinstance(entry["mean"], (int, float)) and 0 <= entry["mean"] <= 100
            checked += 1
    assert checked >= 35  # ABD's two tables (12 + 21 entries) and FACIL's two quoted numbers
