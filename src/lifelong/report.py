"""What a run leaves behind: results.json, metrics.csv, plots/ and the W&B record.

Everything is rewritten after every task (the plots, about half a second per figure, at most every
`PLOT_INTERVAL_S` and after the last task: `Plots`), each file atomically (write to a temporary file in the
same folder, then rename), so an interrupted run never leaves a half-written result. Files get the
permissions of a plain `open()` (0666 minus the umask), readable by colleagues on a shared disk.

`results.json` says how far the run got: `status` is "complete", "incomplete" (still running, or
killed) or "interrupted" (SIGINT/SIGTERM, with `interrupted: {signal, during_task}`), next to
`tasks_done` and `tasks_planned`. The runner writes `checkpoints/last.pt` before `results.json`,
so a resume always keeps at least the tasks that `results.json` reports.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from lifelong.metrics import Results

log = logging.getLogger(__name__)


def umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


def write_atomic(path: Path, text: str | bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o666 & ~umask())  # mkstemp creates 0600
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode() if isinstance(text, str) else text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=1) + "\n")


def metrics_rows(summary: dict) -> list[dict]:
    """One row per (task, eval_task) pair, plus one row per task with the averages."""
    rows = []
    for t in range(summary["tasks_done"]):
        for u in range(t + 1):
            rows.append({
                "task": t, "eval_task": u,
                "acc_taw": summary["acc_taw"][t][u], "acc_tag": summary["acc_tag"][t][u],
                "forg_taw": summary["forg_taw"][t][u], "forg_tag": summary["forg_tag"][t][u],
                "acc_task_id": summary["acc_task_id"][t][u],
            })
        rows.append({
            "task": t, "eval_task": "avg",
            "acc_taw": summary["avg_acc_taw"][t], "acc_tag": summary["avg_acc_tag"][t],
            "forg_taw": summary["avg_forg_taw"][t], "forg_tag": summary["avg_forg_tag"][t],
            "acc_tag_all": summary["acc_tag_all"][t],
        })
    return rows


def write_csv(path: Path, summary: dict) -> None:
    fields = ["task", "eval_task", "acc_taw", "acc_tag", "forg_taw", "forg_tag", "acc_task_id", "acc_tag_all"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    for row in metrics_rows(summary):
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    write_atomic(path, buffer.getvalue())


def _pct(v) -> str:
    return "   -  " if v is None else f"{100 * v:6.2f}"


def format_row(summary: dict, t: int) -> str:
    """The accuracy row after task t (an index), as a small table (percent). Tasks are counted from 1
    here, as in the progress bar and the interruption line; results.json indexes them from 0."""
    head = "        " + "".join(f"  task {u + 1:<3}" for u in range(t + 1)) + "      avg"
    lines = [f"after task {t + 1} of {summary['n_tasks']}:", head]
    for kind in ("taw", "tag"):
        row = summary[f"acc_{kind}"][t]
        cells = "".join(f"  {_pct(row[u])}  " for u in range(t + 1))
        lines.append(f"  {kind.upper()}  {cells}  {_pct(summary[f'avg_acc_{kind}'][t])}")
    if t > 0:
        lines.append(f"  forgetting TAW {_pct(summary['avg_forg_taw'][t])}   TAG {_pct(summary['avg_forg_tag'][t])}"
                     f"   pooled TAG acc {_pct(summary['acc_tag_all'][t])}")
    return "\n".join(lines)


def plot(summary: dict, folder: Path) -> dict[str, Path]:
    """Heatmaps of the accuracy matrices, accuracy curves per task and forgetting curves; every
    title names the run (`summary["title"]`: method, dataset, scenario, run name)."""
    import numpy as np
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no figure manager
    from matplotlib.ticker import MaxNLocator

    def figure(width: float, height: float):
        # Margins fixed in inches (axis labels, a two-line title), not measured by tight_layout:
        # its extra pass over every tick label was half of the drawing time.
        fig = Figure(figsize=(width, height), dpi=110)
        fig.subplots_adjust(left=0.7 / width, right=1 - 0.2 / width, bottom=0.5 / height, top=1 - 0.5 / height)
        return fig, fig.subplots()

    def titled(ax, what: str) -> None:
        ax.set_title(f"{what}\n{summary['title']}" if summary.get("title") else what, fontsize=8)

    def task_axis(axis) -> None:
        axis.set_major_locator(MaxNLocator(integer=True))

    folder.mkdir(parents=True, exist_ok=True)
    done = summary["tasks_done"]
    paths = {}
    for kind in ("taw", "tag"):
        matrix = np.array([[np.nan if v is None else 100 * v for v in row[:done]] for row in summary[f"acc_{kind}"][:done]])
        fig, ax = figure(max(4.0, 1.2 + 0.6 * done), max(3.4, 1 + 0.5 * done))
        im = ax.imshow(matrix, vmin=0, vmax=100, cmap="viridis")
        if done <= 20:
            for t in range(done):
                for u in range(t + 1):
                    ax.text(u, t, f"{matrix[t, u]:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if matrix[t, u] < 60 else "black")
        ax.set_xlabel("evaluated task")
        ax.set_ylabel("after training task")
        titled(ax, f"accuracy {kind.upper()} (%)")
        task_axis(ax.xaxis)
        task_axis(ax.yaxis)
        fig.colorbar(im, ax=ax)
        paths[f"acc_{kind}_heatmap"] = _save(fig, folder / f"acc_{kind}_heatmap.png")

        fig, ax = figure(6, 4)
        steps = np.arange(done)
        for u in range(done):
            ax.plot(steps[u:], matrix[u:, u], marker="o", ms=3, label=f"task {u}" if done <= 10 else None)
        ax.plot(steps, [100 * v for v in summary[f"avg_acc_{kind}"][:done]], "k--", lw=2, label="average")
        ax.set_xlabel("after training task")
        ax.set_ylabel(f"accuracy {kind.upper()} (%)")
        # From just below the lowest point to just above 100: TAW curves near the top stay apart.
        lowest = np.nanmin(matrix) if np.isfinite(matrix).any() else 0.0
        ax.set_ylim(max(0.0, 10 * np.floor(lowest / 10) - 5), 101)
        task_axis(ax.xaxis)
        titled(ax, f"accuracy {kind.upper()} per task")
        ax.legend(fontsize=7)
        paths[f"acc_{kind}_curves"] = _save(fig, folder / f"acc_{kind}_curves.png")

    fig, ax = figure(6, 4)
    for kind in ("taw", "tag"):
        values = [np.nan if v is None else 100 * v for v in summary[f"avg_forg_{kind}"][:done]]
        ax.plot(np.arange(done), values, marker="o", label=kind.upper())
    ax.set_xlabel("after training task")
    ax.set_ylabel("average forgetting (%)")
    task_axis(ax.xaxis)
    titled(ax, "average forgetting")
    ax.legend()
    paths["forgetting"] = _save(fig, folder / "forgetting.png")
    return paths


def _save(fig, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    write_atomic(path, buffer.getvalue())
    return path


def summarize(results: Results, extra: dict | None = None) -> dict:
    """What results.json holds: the matrices and summaries, how far the run got, `extra`."""
    summary = results.as_dict()
    summary["tasks_planned"] = summary["n_tasks"]
    summary["status"] = "complete" if summary["tasks_done"] == summary["n_tasks"] else "incomplete"
    if extra:
        summary.update(extra)
    return summary


def write_summary(run_dir: Path, summary: dict, plots: bool = True) -> None:
    write_json(run_dir / "results.json", summary)
    write_csv(run_dir / "metrics.csv", summary)
    if plots:
        plot(summary, run_dir / "plots")


PLOT_INTERVAL_S = 300.0


class Plots:
    """When a running run redraws its plots: after its last task, and after any other task once
    `interval_s` have passed since the last drawing (the five figures cost seconds, matplotlib's
    import included: after every task they were most of a short run's time)."""

    def __init__(self, interval_s: float = PLOT_INTERVAL_S):
        self.interval_s, self.last = interval_s, time.monotonic()

    def due(self, summary: dict) -> bool:
        now = time.monotonic()
        if summary["tasks_done"] < summary["n_tasks"] and now - self.last < self.interval_s:
            return False
        self.last = now
        return True


def write_all(run_dir: Path, results: Results, extra: dict | None = None) -> dict:
    summary = summarize(results, extra)
    write_summary(run_dir, summary)
    return summary


def mark_interrupted(run_dir: Path, signal_name: str, task_index: int | None, n_tasks: int = 0) -> None:
    """Record in results.json that the run was stopped by `signal_name` (during its first task, when
    there is no results.json yet, one that says only that: no task done of `n_tasks`)."""
    path = Path(run_dir) / "results.json"
    if path.is_file():
        summary = json.loads(path.read_text())
    else:
        summary = {"n_tasks": n_tasks, "tasks_done": 0, "tasks_planned": n_tasks}
    if summary.get("tasks_done") == summary.get("n_tasks"):
        return  # every task was done: the results are complete, whatever came after
    summary["status"] = "interrupted"
    summary["interrupted"] = {"signal": signal_name, "during_task": task_index}
    write_json(path, summary)


def run_title(method: str, dataset: str, scenario: str, n_tasks: int, run_dir: Path) -> str:
    return f"{method} on {dataset}, {scenario} ({n_tasks} tasks), {Path(run_dir).name}"


# ------------------------------------------------------------------------------------------ W&B
def wandb_task(wandb_logger, summary: dict, t: int) -> None:
    """Per task, with the task index as step: averages and one accuracy curve per task."""
    run = wandb_logger.experiment
    metrics = {"task": t}
    for kind in ("taw", "tag"):
        metrics[f"results/avg_acc_{kind}"] = summary[f"avg_acc_{kind}"][t]
        if t > 0:
            metrics[f"results/avg_forg_{kind}"] = summary[f"avg_forg_{kind}"][t]
        for u in range(t + 1):
            metrics[f"results/acc_{kind}/task_{u}"] = summary[f"acc_{kind}"][t][u]
    metrics["results/acc_tag_all"] = summary["acc_tag_all"][t]
    for key in metrics:
        if key != "task":
            run.define_metric(key, step_metric="task")
    run.log(metrics)


def wandb_final(wandb_logger, summary: dict, plots: dict[str, Path]) -> None:
    """At the end: the matrices as tables and heatmaps, the summary numbers in the run summary."""
    import wandb

    run = wandb_logger.experiment
    done = summary["tasks_done"]
    payload = {}
    for name in ("acc_taw", "acc_tag", "forg_taw", "forg_tag"):
        columns = ["after_task"] + [f"task_{u}" for u in range(done)]
        rows = [[t] + summary[name][t][:done] for t in range(done)]
        payload[f"matrices/{name}"] = wandb.Table(columns=columns, data=rows)
    for name, path in plots.items():
        payload[f"plots/{name}"] = wandb.Image(str(path))
    run.log(payload)
    for key, value in summary.items():
        if key.startswith(("final_", "avg_inc_", "bwt_", "val_final_", "val_avg_inc_")) and value is not None:
            run.summary[key] = value
