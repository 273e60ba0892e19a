"""An Optuna study's trials as files and plots: what `scripts/study.py` prints and the sweep dir keeps.

The study lives in Optuna's storage (`<sweep dir>/optuna.db`); `trials.csv` lists every trial with
its number, state, objective value (a val_* entry: validation data) and parameters. Trial n ran in
the run dir `<sweep dir>/<n>_<method>` when the study was run in one go (job numbers restart at 0
when a study is continued, see README).
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from lifelong.aggregate import write_atomic


def load_trials(storage: str, study_name: str) -> list[dict]:
    import optuna

    study = optuna.load_study(study_name=study_name, storage=storage)
    return [{"number": t.number, "state": t.state.name, "value": t.value, "params": dict(t.params)}
            for t in study.trials]


def write_trials_csv(path: Path, trials: list[dict], sweep_dir: Path | None = None) -> None:
    names = sorted({k for t in trials for k in t["params"]})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["number", "state", "value", *names])
    for t in trials:
        writer.writerow([t["number"], t["state"], "" if t["value"] is None else t["value"],
                         *[t["params"].get(n, "") for n in names]])
    write_atomic(path, buffer.getvalue())


def read_trials_csv(path: Path) -> list[dict]:
    trials = []
    for row in csv.DictReader(Path(path).open()):
        params = {k: float(v) for k, v in row.items() if k not in ("number", "state", "value") and v != ""}
        trials.append({"number": int(row["number"]), "state": row["state"],
                       "value": float(row["value"]) if row["value"] else None, "params": params})
    return trials


def best(trials: list[dict]) -> dict | None:
    done = [t for t in trials if t["state"] == "COMPLETE" and t["value"] is not None]
    return max(done, key=lambda t: t["value"]) if done else None


def summary_markdown(trials: list[dict]) -> str:
    top = best(trials)
    names = sorted({k for t in trials for k in t["params"]})
    lines = [f"{len(trials)} trials, {sum(t['state'] == 'COMPLETE' for t in trials)} complete."]
    if top is not None:
        params = ", ".join(f"{k}={v:.4g}" for k, v in sorted(top["params"].items()))
        lines.append(f"Best: trial {top['number']}, objective {100 * top['value']:.2f} %, {params}")
    lines += ["", "| trial | state | objective (%) | best so far (%) | " + " | ".join(names) + " |",
              "|---" * (4 + len(names)) + "|"]
    running = -math.inf
    for t in sorted(trials, key=lambda t: t["number"]):
        value = t["value"]
        if value is not None and t["state"] == "COMPLETE":
            running = max(running, value)
        cells = [str(t["number"]), t["state"], "-" if value is None else f"{100 * value:.2f}",
                 "-" if running == -math.inf else f"{100 * running:.2f}",
                 *[f"{t['params'][n]:.4g}" if n in t["params"] else "-" for n in names]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(trials: list[dict], folder: Path) -> list[Path]:
    """`study_value.png` (objective and best so far over trials) and `study_<param>.png` (objective
    against each searched parameter, log x-axis when the values span more than a decade)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = sorted((t for t in trials if t["state"] == "COMPLETE" and t["value"] is not None),
                  key=lambda t: t["number"])
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    numbers, values = [t["number"] for t in done], [100 * t["value"] for t in done]
    ax.plot(numbers, values, "o", label="trial")
    ax.plot(numbers, [max(values[: i + 1]) for i in range(len(values))], "k-", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("objective (%)")
    ax.legend()
    paths.append(_save(fig, folder / "study_value.png"))
    for name in sorted({k for t in done for k in t["params"]}):
        xs = [t["params"][name] for t in done if name in t["params"]]
        ys = [100 * t["value"] for t in done if name in t["params"]]
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.plot(xs, ys, "o")
        if xs and min(xs) > 0 and max(xs) / min(xs) > 10:
            ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel("objective (%)")
        paths.append(_save(fig, folder / f"study_{name.replace('/', '_')}.png"))
    return paths


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def log_study_to_wandb(config, sweep_dir: Path, trials: list[dict]) -> None:
    """One `study` run in the sweep's W&B group (the trials' group): the trials table and the best trial."""
    import wandb

    from lifelong.loggers import wandb_mode

    w = config.logger.wandb
    group = w.group or "/".join(Path(str(sweep_dir)).parts[-3:])
    names = sorted({k for t in trials for k in t["params"]})
    run = wandb.init(project=w.project, entity=w.entity, group=group, job_type="study", name=f"study {group}",
                     dir=str(sweep_dir), mode=wandb_mode(w.mode), settings=wandb.Settings(console="off", silent=True))
    table = wandb.Table(columns=["number", "state", "value", *names],
                        data=[[t["number"], t["state"], t["value"], *[t["params"].get(n) for n in names]]
                              for t in trials])
    run.log({"study/trials": table})
    top = best(trials)
    if top is not None:
        run.summary["best_value"] = top["value"]
        run.summary["best_trial"] = top["number"]
        for k, v in top["params"].items():
            run.summary[f"best/{k}"] = v
    run.finish()
