"""Summary of an Optuna study (hparams_search=...): `python scripts/study.py outputs/multirun/<date>/<time>`.

Reads `<sweep dir>/optuna.db` (or `trials.csv`), prints the best trial and a table of every trial's
objective with the best value so far, and writes `study.md`, `trials.csv`, `plots/study_value.png`
and one `plots/study_<param>.png` per searched parameter (objective against the parameter) there.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lifelong.aggregate import write_atomic
from lifelong.study import load_trials, plot, read_trials_csv, summary_markdown, write_trials_csv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--study", default=None, help="study name in optuna.db (default: the only one)")
    args = parser.parse_args(argv)
    db, table = args.sweep_dir / "optuna.db", args.sweep_dir / "trials.csv"
    if db.is_file():
        import optuna

        storage = f"sqlite:///{db.resolve()}"
        name = args.study or optuna.get_all_study_summaries(storage)[0].study_name
        trials = load_trials(storage, name)
        write_trials_csv(table, trials)
    elif table.is_file():
        trials = read_trials_csv(table)
    else:
        print(f"error: neither optuna.db nor trials.csv in {args.sweep_dir}", file=sys.stderr)
        return 2
    text = summary_markdown(trials)
    write_atomic(args.sweep_dir / "study.md", text)
    paths = plot(trials, args.sweep_dir / "plots")
    print(text)
    print("written:", args.sweep_dir / "study.md", *paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
