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
# (MIND and PackNet once hung here: a rank whose test shard had no batch skipped the sync of the
# task-agnostic variants' accuracies; lifelong.metrics.evaluate now syncs the same metrics on every rank.)
METHODS = ["abd", "bic", "clr", "der", "ebll", "ewc", "fetril", "finetune", "gdumb", "hat", "icarl", "joint", "lwf",
           "mind", "packnet", "pass", "replay", "si", "dgr"]
# The rehearsal families: a memory chosen after the task (icarl: herding), filled online from every
# rank's slice (replay: reservoir; der: with logits payloads), before the task (gdumb: greedy), and
# two memories with a held-out phase (bic). Each rank's memories are dumped by tests/ddp_worker.py.
REHEARSAL = {"bic": "memory.size=40", "der": "memory.size=40", "gdumb": "memory.size=40", "icarl": "memory.size=40",
             "replay": "memory.size=40"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ddp(out: Path, specs: list[str], timeout: int = 900) -> str:
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
    specs += [",".join([f"{m}=method={m}", *NEEDS.get(m, []), *([REHEARSAL[m]] if m in REHEARSAL else [])])
              for m in METHODS if m not in ("finetune", "ewc")]
    log = run_ddp(out, specs)
    return out, log


def matrices(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


@pytest.mark.parametrize("method", ["finetune", "ewc", "replay"])
def test_two_processes_match_one(method, ddp_runs, run):
    out, log = ddp_runs
    assert f"done {method}" in log, log[-3000:]
    _, single_dir = run(f"method={method}", *([REHEARSAL[method]] if method in REHEARSAL else []))
    one, two = matrices(single_dir), matrices(out / method)
    assert two["tasks_done"] == one["tasks_done"] == 3
    # Each rank trains on its half of every global batch; only float summation order differs.
    for kind in ("acc_taw", "acc_tag"):
        for row_one, row_two in zip(one[kind], two[kind]):
            for a, b in zip(row_one, row_two):
                assert (a is None) == (b is None)
                if a is not None:
                    assert abs(a - b) <= 0.02, (kind, one[kind], two[kind])
    if method == "replay":
        # The stream batches of both ranks are gathered in rank order before they enter the reservoir,
        # and the memory's draws are shared: the same images as one process stored, exactly.
        import torch

        state = torch.load(single_dir / "checkpoints" / "last.pt", weights_only=False)["state_dict"]
        ddp = torch.load(out / method / "memory_rank0.pt", weights_only=False)
        for key in ("images", "labels", "n_seen"):
            assert torch.equal(state[f"memory.{key}"], ddp[f"memory.{key}"]), key


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_under_ddp(method, ddp_runs):
    out, log = ddp_runs
    assert f"done {method}" in log, log[-3000:]
    results = matrices(out / method)
    assert results["tasks_done"] == 3
    # Only rank zero writes: one results.json, one checkpoint, no second copy from rank 1.
    assert (out / method / "checkpoints" / "last.pt").is_file()
    # (tests/ddp_worker.py itself saves each rank's state as state_rank<r>.pt and exemplar memories as
    # memory_rank<r>.pt, for the tests below)
    assert not [p for p in (out / method).glob("*rank*") if not p.name.startswith(("memory_rank", "state_rank"))]


@pytest.mark.parametrize("method", METHODS)
def test_method_state_is_identical_on_every_rank(method, ddp_runs):
    """Whatever a method keeps (weights, importances, Fisher, masks, gates, BN snapshots, memories) ends
    bit-identical on both ranks after the last task."""
    import torch

    out, log = ddp_runs
    assert f"done {method}" in log, log[-3000:]
    ranks = [torch.load(out / method / f"state_rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0].keys() == ranks[1].keys()
    differ = [k for k in ranks[0] if not torch.equal(ranks[0][k], ranks[1][k])]
    assert not differ, differ


@pytest.mark.parametrize("method", sorted(REHEARSAL))
def test_memory_is_the_same_on_both_ranks(method, ddp_runs):
    import torch

    out, log = ddp_runs
    assert f"done {method}" in log, log[-3000:]
    ranks = [torch.load(out / method / f"memory_rank{r}.pt", weights_only=False) for r in range(2)]
    assert ranks[0].keys() == ranks[1].keys() and len(ranks[0]["memory.labels"]) > 0
    if method == "bic":
        assert len(ranks[0]["held_out.labels"]) > 0
    if method == "der":
        assert ranks[0]["memory.payload_logits"].shape == (40, 10)
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), (method, key)
    assert results_memory_total(out / method) == len(ranks[0]["memory.labels"])


def results_memory_total(run_dir: Path) -> int:
    return matrices(run_dir)["memory"][-1]["total"]
