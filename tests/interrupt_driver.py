"""Run the real entry (`lifelong.cli.main`) in forked children and interrupt them with signals.

Used by tests/test_interrupt.py: `python tests/interrupt_driver.py <spec.json> <out.json>`. The
driver imports everything once and forks one child per run (so each run starts in well under a
second), sends a signal at a random moment and resumes the run until it finishes. It does no
torch work itself before forking.
"""
from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import TINY, compose_config  # noqa: E402

from lifelong import cli, validate  # noqa: E402
import lifelong.run  # noqa: E402,F401  (the heavy imports, once, before forking)


def start(run_dir: Path, overrides: list[str], log: Path) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 99
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 2)
        os.dup2(fd, 1)
        cfg = compose_config(run_dir, *TINY, *overrides)
        try:
            cli.main(cfg)
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
    except BaseException:  # noqa: BLE001
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def wait(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def matrices(run_dir: Path) -> dict | None:
    path = run_dir / "results.json"
    if not path.is_file():
        return None
    results = json.loads(path.read_text())
    return {k: results.get(k) for k in ("acc_taw", "acc_tag", "acc_tag_all", "acc_task_id", "tasks_done", "status")}


def leftovers(run_dir: Path) -> list[str]:
    """Half-written files: temporaries of atomic writes that survived."""
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*")
                  if p.is_file() and (p.name.endswith(".tmp") or p.name.startswith(".") and p.parent.name != ".hydra"))


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    base, overrides = Path(spec["dir"]), spec["overrides"]
    rng = random.Random(spec["seed"])
    report: dict = {"attempts": []}

    full = base / "full"
    began = time.time()
    report["full_status"] = wait(start(full, overrides, base / "full.log"))
    report["full_seconds"] = time.time() - began
    report["full"] = matrices(full)

    for i, name in enumerate(spec["signals"]):
        signum = getattr(signal, name)
        run_dir, log = base / f"cut{i}", base / f"cut{i}.log"
        delay = rng.uniform(0.05, 0.85) * report["full_seconds"]
        pid = start(run_dir, overrides, log)
        time.sleep(delay)
        os.kill(pid, signum)
        status = wait(pid)
        attempt = {"signal": name, "delay": round(delay, 2), "status": status, "after_cut": matrices(run_dir),
                   "leftovers": leftovers(run_dir) if run_dir.exists() else [],
                   "message": [line for line in log.read_text().splitlines() if line.startswith("interrupted ")]}
        resumes = 0
        while (matrices(run_dir) or {}).get("status") != "complete" and resumes < 3:
            resumes += 1
            resume = [f"resume={run_dir}"] if run_dir.exists() and validate.is_run_dir(run_dir) else []
            attempt[f"resume{resumes}_status"] = wait(start(run_dir, overrides + resume, log))
        attempt["resumes"] = resumes
        attempt["final"] = matrices(run_dir)
        report["attempts"].append(attempt)
    Path(sys.argv[2]).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
