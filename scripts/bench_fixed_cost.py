"""Fixed cost of a run: how long a configuration error takes, and what a whole run spends beyond
training and evaluation (imports, data, model building, checkpoints, results, plots).

    python scripts/bench_fixed_cost.py                  # this checkout, 3 repetitions
    python scripts/bench_fixed_cost.py --repo ../other  # another checkout (e.g. before a change)

Each measurement is a fresh `python train.py ...` process: wall-clock seconds and the CPU seconds
of the process (user + system). The run is the quickstart (LwF, split digits, 5 tasks) cut to one
epoch per task, without W&B; its results.json splits the run's time by part (`seconds`: build,
fit, evaluate, checkpoints, report), so `fixed = wall - fit - evaluate`; the floor under it is a bare
`python -c "import torch, lightning"`, and what a run adds over that floor is printed in wall and CPU
seconds (CPU: the process's user + system time less the floor's and less fit + evaluate). Checkouts
without that split print the wall and CPU time only.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ERROR_RUN = ["optimizer.lr=-1", "logger=none"]
TINY_RUN = ["experiment=quickstart", "epochs=1", "logger=none", "torch_threads=1", "trainer.enable_progress_bar=false"]


def timed(repo: Path, args: list[str]) -> tuple[float, float, subprocess.CompletedProcess]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(repo / "src"), "WANDB_MODE": "disabled"}
    done = subprocess.run([sys.executable, str(repo / "train.py"), *args], cwd=tempfile.gettempdir(), env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done


def import_cost(module: str) -> tuple[float, float]:
    """Wall and CPU seconds of a fresh `python -c "import <module>"`: the floor under any run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter() - start, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", type=Path, default=ROOT, help="the checkout whose train.py runs")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    repo = args.repo.resolve()
    errors, runs = [], []
    for _ in range(args.repeat):
        wall, cpu, done = timed(repo, ERROR_RUN)
        if done.returncode != 2 or "error:" not in done.stderr:
            sys.exit(f"expected a config error, got exit {done.returncode}:\n{done.stderr[-2000:]}")
        errors.append((wall, cpu))
        with tempfile.TemporaryDirectory() as out:
            wall, cpu, done = timed(repo, [*TINY_RUN, f"paths.output_dir={out}"])
            if done.returncode != 0:
                sys.exit(f"the run failed:\n{done.stderr[-3000:]}")
            seconds = json.loads((Path(out) / "results.json").read_text()).get("seconds")
        runs.append((wall, cpu, seconds))

    med = statistics.median
    print(f"checkout: {repo}; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end")
    floor = (0.0, 0.0)
    for module in ("torch", "torch, lightning"):
        costs = [import_cost(module) for _ in range(args.repeat)]
        floor = (med(w for w, _ in costs), med(c for _, c in costs))
        print(f"python -c 'import {module}': wall {floor[0]:.2f} s, CPU {floor[1]:.2f} s")
    print(f"config error ({' '.join(ERROR_RUN)}): wall {med(w for w, _ in errors):.2f} s, "
          f"CPU {med(c for _, c in errors):.2f} s (median of {args.repeat})")
    print(f"tiny run ({' '.join(TINY_RUN)}): wall {med(w for w, _, _ in runs):.2f} s, "
          f"CPU {med(c for _, c, _ in runs):.2f} s")
    if all(s is not None for _, _, s in runs):
        fixed = [w - s["fit"] - s["evaluate"] for w, _, s in runs]
        parts = {k: med(s[k] for _, _, s in runs) for k in runs[0][2]}
        over = [c - s["fit"] - s["evaluate"] - floor[1] for _, c, s in runs]
        print(f"  fixed cost (wall - fit - evaluate): {med(fixed):.2f} s; over the floor of 'import torch, "
              f"lightning': wall {med(fixed) - floor[0]:.2f} s, CPU {med(over):.2f} s; by part (median): "
              + ", ".join(f"{k} {v:.2f}" for k, v in parts.items())
              + "  (the rest: Python, Hydra, torch and Lightning imports, the dataset's imports, the last plots)")


if __name__ == "__main__":
    main()
