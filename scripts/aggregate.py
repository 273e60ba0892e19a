"""Mean ± std over seeds of a sweep: `python scripts/aggregate.py outputs/multirun/<date>/<time>`.

Prints a markdown table (one row per configuration: final ACC_TAW, ACC_TAG and forgetting; and,
where the experiment file records the paper's numbers, ours beside the paper's with the difference)
and writes it as `aggregate.md` and `aggregate.csv` into the sweep directory (or `--out`), with
`aggregate_curves.png`: average TAG accuracy after each task, one line per configuration, a band of
± one std over seeds. Missing
seeds and unfinished runs are reported, never dropped silently; see `lifelong.aggregate`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lifelong.aggregate import aggregate, plot_curves, to_csv, to_markdown, write_atomic


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory (or any folder of run dirs)")
    parser.add_argument("--out", type=Path, default=None, help="where to write aggregate.md/.csv (default: sweep_dir)")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"error: {args.sweep_dir} is not a directory", file=sys.stderr)
        return 2
    rows = aggregate(args.sweep_dir)
    if not rows:
        print(f"error: no run directories (.hydra/ or results.json) under {args.sweep_dir}", file=sys.stderr)
        return 2
    out = args.out or args.sweep_dir
    markdown = to_markdown(rows)
    write_atomic(out / "aggregate.md", markdown)
    write_atomic(out / "aggregate.csv", to_csv(rows))
    figure = plot_curves(rows, out / "aggregate_curves.png")
    print(markdown)
    print(f"written: {out / 'aggregate.md'}, {out / 'aggregate.csv'}" + (f", {figure}" if figure else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
