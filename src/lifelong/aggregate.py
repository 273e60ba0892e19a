"""Mean ± std over seeds of a sweep's final results, one row per configuration.

A configuration is a run's command-line overrides (`<run dir>/.hydra/overrides.yaml`) without the
seed and without keys that do not change what is computed (resume, logging, paths, progress bars).
Runs that have no results.json or stopped before their last task are listed as incomplete, and
seeds that some configurations have and others lack are listed as missing: nothing is dropped
silently. The standard deviation is the sample one (n - 1); with one seed it is not defined.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# Overrides that do not change the numbers a run produces.
IGNORED_PREFIXES = ("seed", "resume", "logger", "paths.", "hydra", "trainer.enable_progress_bar",
                    "trainer.enable_model_summary", "trainer.log_every_n_steps", "num_workers", "eval.batch_size")
METRICS = (("acc_taw", "final_avg_acc_taw"), ("acc_tag", "final_avg_acc_tag"),
           ("forg_taw", "final_avg_forg_taw"), ("forg_tag", "final_avg_forg_tag"))


@dataclass
class Row:
    config: str
    seeds: list = field(default_factory=list)
    values: dict = field(default_factory=dict)  # metric -> list of values, one per finished seed
    incomplete: list = field(default_factory=list)  # "seed=<s> (<why>)"
    missing: list = field(default_factory=list)  # seeds other configurations have and this lacks

    def stat(self, metric: str) -> tuple[float | None, float | None]:
        values = [v for v in self.values.get(metric, []) if v is not None]
        if not values:
            return None, None
        mean = sum(values) / len(values)
        if len(values) < 2:
            return mean, None
        return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def run_identity(run_dir: Path) -> tuple[str, object]:
    """(configuration, seed) of one run directory."""
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    overrides = (yaml.safe_load(overrides_file.read_text()) or []) if overrides_file.is_file() else []
    seed = None
    kept = []
    for override in overrides:
        key = _key(override)
        if key == "seed":
            seed = yaml.safe_load(override.split("=", 1)[1])
        elif not key.startswith(IGNORED_PREFIXES):
            kept.append(override)
    if seed is None:
        config_file = run_dir / ".hydra" / "config.yaml"
        if config_file.is_file():
            seed = (yaml.safe_load(config_file.read_text()) or {}).get("seed")
    return " ".join(sorted(kept)) or "(defaults)", seed


def find_runs(sweep_dir: Path) -> list[Path]:
    """Every run directory under `sweep_dir`: those with a .hydra/ folder or a results.json."""
    sweep_dir = Path(sweep_dir)
    found = {p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")}
    found |= {p.parent for p in sweep_dir.rglob("results.json")}
    # Lightning's DDP ranks keep their own .hydra copies inside the run dir: not runs of their own.
    found = {p for p in found if not p.name.startswith(".pl_hydra")}
    return sorted(found, key=_natural)


def _natural(path: Path):
    head = path.name.split("_", 1)[0]
    return (int(head), str(path)) if head.isdigit() else (math.inf, str(path))


def aggregate(sweep_dir: Path) -> list[Row]:
    rows: dict[str, Row] = {}
    for run_dir in find_runs(sweep_dir):
        config, seed = run_identity(run_dir)
        row = rows.setdefault(config, Row(config))
        results_file = run_dir / "results.json"
        if not results_file.is_file():
            row.incomplete.append(f"seed={seed} (no results.json: {run_dir.name})")
            continue
        results = json.loads(results_file.read_text())
        if seed is None:
            seed = results.get("seed")
        status = results.get("status", "complete")  # results.json before `status` existed: by the counts
        if results.get("tasks_done") != results.get("n_tasks") or status != "complete":
            why = "interrupted, " if status == "interrupted" else ""
            row.incomplete.append(f"seed={seed} ({why}{results.get('tasks_done')}/{results.get('n_tasks')} tasks: "
                                  f"{run_dir.name})")
            continue
        row.seeds.append(seed)
        for metric, key in METRICS:
            row.values.setdefault(metric, []).append(results.get(key))
    all_seeds = {s for row in rows.values() for s in row.seeds}
    all_seeds |= {_seed_of(entry) for row in rows.values() for entry in row.incomplete} - {None}
    for row in rows.values():
        row.missing = sorted(all_seeds - set(row.seeds), key=str)
    return list(rows.values())


def _seed_of(entry: str):
    value = entry.split(" ", 1)[0].split("=", 1)[1]
    return None if value == "None" else yaml.safe_load(value)


def _pct(mean, std) -> str:
    if mean is None:
        return "-"
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if std is not None else f"{100 * mean:.2f}"


def to_markdown(rows: list[Row]) -> str:
    lines = ["| configuration | seeds | ACC_TAW | ACC_TAG | forgetting TAW | forgetting TAG | missing seeds |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        cells = [_pct(*row.stat(metric)) for metric, _ in METRICS]
        missing = ", ".join(str(s) for s in row.missing) or "-"
        lines.append(f"| {row.config} | {len(row.seeds)} | " + " | ".join(cells) + f" | {missing} |")
    notes = [f"- {row.config}: {entry}" for row in rows for entry in row.incomplete]
    text = "\n".join(lines) + "\n"
    text += "\nAccuracies and forgetting in %, mean ± sample std over seeds (final task, averaged over tasks).\n"
    if notes:
        text += "\nIncomplete runs (not in the means):\n" + "\n".join(notes) + "\n"
    return text


def to_csv(rows: list[Row]) -> str:
    buffer = io.StringIO()
    fields = ["configuration", "n_seeds", "seeds", "missing_seeds", "incomplete"]
    for metric, _ in METRICS:
        fields += [f"{metric}_mean", f"{metric}_std"]
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    for row in rows:
        out = {"configuration": row.config, "n_seeds": len(row.seeds), "seeds": " ".join(map(str, row.seeds)),
               "missing_seeds": " ".join(map(str, row.missing)), "incomplete": "; ".join(row.incomplete)}
        for metric, _ in METRICS:
            mean, std = row.stat(metric)
            out[f"{metric}_mean"] = "" if mean is None else 100 * mean
            out[f"{metric}_std"] = "" if std is None else 100 * std
        writer.writerow(out)
    return buffer.getvalue()


def write_atomic(path: Path, text: str) -> None:
    """Write-then-rename, as the run's own reports (kept here so the script does not import torch)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    current_umask = os.umask(0o022)
    os.umask(current_umask)
    os.fchmod(fd, 0o666 & ~current_umask)  # mkstemp creates 0600: readable by others as any plain file
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
