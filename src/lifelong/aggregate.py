"""Mean ± std over seeds of a sweep's final results, one row per configuration.

A configuration is a run's command-line overrides (`<run dir>/.hydra/overrides.yaml`) without the
seed and without keys that do not change what is computed (resume, logging, paths, progress bars).
Runs that have no results.json or stopped before their last task are listed as incomplete, and
seeds that some configurations have and others lack are listed as missing: nothing is dropped
silently. The standard deviation is the sample one (n - 1); with one seed it is not defined.

Paper numbers: an experiment file may carry a `paper:` block (its `source`, the results.json key
`metric` it reports, and `results`, a list of `{method, setting, mean, std}` in %, where `setting` maps
config keys to the values the paper ran). A row whose runs match an entry (same method, every
setting key equal in the run's config) gets the paper's number beside its measured mean ± std.
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
    curves: list = field(default_factory=list)  # avg_acc_tag after each task, one list per finished seed
    paper: dict | None = None  # the matching entry of the experiment's `paper` block, with source and metric

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
    """Every run directory under `sweep_dir`: those with a .hydra/ folder or a results.json.

    Symbolic links are followed, so a folder of links to runs from several sweeps aggregates as one."""
    found, seen = set(), set()
    for folder, subfolders, files in os.walk(sweep_dir, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link back up the tree (or a second link to the same run): walk it once
            subfolders.clear()
            continue
        seen.add(real)
        folder = Path(folder)
        if "results.json" in files:
            found.add(folder)
        if folder.name == ".hydra" and "overrides.yaml" in files:
            found.add(folder.parent)
    # Lightning's DDP ranks keep their own .hydra copies inside the run dir: not runs of their own.
    found = {p for p in found if not p.name.startswith(".pl_hydra")}
    return sorted(found, key=_natural)


def _natural(path: Path):
    head = path.name.split("_", 1)[0]
    return (int(head), str(path)) if head.isdigit() else (math.inf, str(path))


def _lookup(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def method_name(run_dir: Path) -> str | None:
    """The `method` option a run used: Hydra's recorded choice, else a `method=` override."""
    hydra_file = run_dir / ".hydra" / "hydra.yaml"
    if hydra_file.is_file():
        choices = _lookup(yaml.safe_load(hydra_file.read_text()) or {}, "hydra.runtime.choices") or {}
        if choices.get("method"):
            return choices["method"]
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    for override in (yaml.safe_load(overrides_file.read_text()) or []) if overrides_file.is_file() else []:
        if _key(override) == "method":
            return override.split("=", 1)[1]
    return None


def paper_entry(run_dir: Path) -> dict | None:
    """The entry of the run's `paper` block for its method and setting (None when there is none)."""
    config_file = run_dir / ".hydra" / "config.yaml"
    config = (yaml.safe_load(config_file.read_text()) or {}) if config_file.is_file() else {}
    block = config.get("paper") or {}
    method = method_name(run_dir)
    for entry in block.get("results") or []:
        if entry.get("method") == method and all(
                _lookup(config, key) == value for key, value in (entry.get("setting") or {}).items()):
            # an entry may name its own source (another table of the same paper)
            return {"source": block.get("source", ""), **entry, "metric": block.get("metric", "final_avg_acc_tag")}
    return None


def measured(results: dict, metric: str) -> float | None:
    """A results.json number: a summary key, or a per-task list (`acc_tag_all`) at the last task."""
    value = results.get(metric)
    if isinstance(value, list):
        done = results.get("tasks_done") or len(value)
        return value[done - 1] if 0 < done <= len(value) else None
    return value


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
        if results.get("avg_acc_tag"):
            row.curves.append(results["avg_acc_tag"])
        entry = paper_entry(run_dir)
        if entry is not None:
            row.paper = entry
            row.values.setdefault("paper_metric", []).append(measured(results, entry["metric"]))
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
    compared = [row for row in rows if row.paper is not None]
    if compared:
        text += ("\nBeside the paper (`paper:` block of the experiment file):\n\n"
                 "| configuration | metric | ours | paper | ours − paper | source |\n|---|---|---|---|---|---|\n")
        for row in compared:
            mean, std = row.stat("paper_metric")
            paper = row.paper
            paper_text = f"{paper['mean']:.2f}" + (f" ± {paper['std']:.2f}" if paper.get("std") is not None else "")
            diff = "-" if mean is None else f"{100 * mean - paper['mean']:+.2f}"
            text += (f"| {row.config} | {paper['metric']} | {_pct(mean, std)} | {paper_text} | {diff} | "
                     f"{paper['source']} |\n")
    if notes:
        text += "\nIncomplete runs (not in the means):\n" + "\n".join(notes) + "\n"
    return text


def to_csv(rows: list[Row]) -> str:
    buffer = io.StringIO()
    fields = ["configuration", "n_seeds", "seeds", "missing_seeds", "incomplete"]
    for metric, _ in METRICS:
        fields += [f"{metric}_mean", f"{metric}_std"]
    fields += ["paper_metric", "paper_metric_mean", "paper_metric_std", "paper_mean", "paper_std", "paper_source"]
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    for row in rows:
        out = {"configuration": row.config, "n_seeds": len(row.seeds), "seeds": " ".join(map(str, row.seeds)),
               "missing_seeds": " ".join(map(str, row.missing)), "incomplete": "; ".join(row.incomplete)}
        for metric, _ in METRICS:
            mean, std = row.stat(metric)
            out[f"{metric}_mean"] = "" if mean is None else 100 * mean
            out[f"{metric}_std"] = "" if std is None else 100 * std
        if row.paper is not None:
            mean, std = row.stat("paper_metric")
            out.update(paper_metric=row.paper["metric"], paper_metric_mean="" if mean is None else 100 * mean,
                       paper_metric_std="" if std is None else 100 * std, paper_mean=row.paper["mean"],
                       paper_std=row.paper.get("std", ""), paper_source=row.paper["source"])
        writer.writerow(out)
    return buffer.getvalue()


def short_labels(rows: list[Row]) -> list[str]:
    """Each configuration without the overrides every row shares (legends stay readable)."""
    parts = [row.config.split(" ") for row in rows]
    shared = set.intersection(*(set(p) for p in parts)) if len(parts) > 1 else set()
    labels = []
    for part, row in zip(parts, rows):
        own = sorted((o for o in part if o not in shared), key=lambda o: not o.startswith("method="))
        label = " ".join(own) or row.config
        if len(label) > 40 and len(own) > 1:  # e.g. a method's CPU-sized loop overrides: name it, count the rest
            label = f"{own[0]} (+{len(own) - 1} overrides)"
        labels.append(label)
    return labels


def plot_curves(rows: list[Row], path: Path) -> Path | None:
    """Average TAG accuracy after each task, one line per configuration (mean over seeds), with a band
    of ± one sample std over seeds. None when no row has a finished seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = [(row, label) for row, label in zip(rows, short_labels(rows)) if row.curves]
    if not drawn:
        return None
    # Beyond ten lines the default colours repeat: 20 colours, and a marker and dash per group of them.
    colours = plt.get_cmap("tab20" if len(drawn) > 10 else "tab10").colors
    markers, dashes = "osD^v", ("-", "--", ":", "-.")
    fig, ax = plt.subplots(figsize=(6.4 + (2.6 if len(drawn) > 6 else 0), 4.2))
    for i, (row, label) in enumerate(drawn):
        n = min(len(c) for c in row.curves)
        per_task = [[100 * c[t] for c in row.curves if c[t] is not None] for t in range(n)]
        mean = [sum(v) / len(v) for v in per_task]
        std = [math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
               for v, m in zip(per_task, mean)]
        tasks = list(range(1, n + 1))
        colour = colours[i % len(colours)]
        ax.plot(tasks, mean, color=colour, marker=markers[i % len(markers)],
                linestyle=dashes[(i // len(colours)) % len(dashes)], label=f"{label} ({len(row.curves)} seeds)")
        ax.fill_between(tasks, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                        color=colour, alpha=0.12 if len(drawn) > 6 else 0.2, linewidth=0)
    ax.set_xlabel("tasks learnt")
    ax.set_ylabel("average TAG accuracy over seen tasks (%)")
    ax.set_xticks(range(1, max(min(len(c) for c in r.curves) for r, _ in drawn) + 1))
    ax.grid(alpha=0.3)
    if len(drawn) > 6:  # many lines: the legend beside the axes, not over the curves
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    else:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


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
