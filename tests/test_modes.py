"""Train/eval modes through the real runner, for every method in conf/method/.

`lifelong.callbacks.ModeAudit` records, at every training step of every phase, which submodules are
in train mode, and flags frozen modules in train mode and trained parameters in eval-mode modules.
Lightning 2.x sets no mode when a fit starts, so this is what catches a generator trained in eval
mode (ABD's bug before `PhaseModes`).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_smoke_loops import assert_short, counted_optimizer_steps, smoke_overrides

CONF = Path(__file__).resolve().parents[1] / "conf"
METHODS = sorted(p.stem for p in (CONF / "method").glob("*.yaml"))

AUDIT = ["+callbacks.modes._target_=lifelong.callbacks.ModeAudit", "scenario.n_tasks=2", "scenario.nc_first_task=5",
         "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "eval.limit_batches=1"]


def audit(run, method: str, *overrides: str) -> dict[tuple[int, str], dict]:
    """Under debug=smoke with every loop length of the method long (tests/test_smoke_loops.py)."""
    _, run_dir = run(f"method={method}", *AUDIT, *smoke_overrides(method), *overrides)
    records = [json.loads(line) for line in (run_dir / "mode_audit.jsonl").read_text().splitlines()]
    return {(r["task"], r["phase"]): r for r in records}


def trains(record: dict, prefix: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for name in record["train_mode"])


@pytest.mark.parametrize("method", METHODS)
def test_every_phase_trains_in_train_mode_and_freezes_in_eval_mode(run, method):
    with counted_optimizer_steps() as steps:
        records = audit(run, method)
    assert_short(method, steps)  # debug=smoke shortened every loop, the between-task ones too
    assert records, f"{method}: no training step was audited"
    for (task, phase), record in records.items():
        assert record["steps"] > 0
        assert record["violations"] == [], f"{method}, task {task}, phase {phase}: {record['violations']}"
        assert not trains(record, "old_net"), f"{method}: the frozen previous model is in train mode"
        assert not record["modes_vary"], f"{method}, task {task}, phase {phase}: modes change between steps"


@pytest.mark.parametrize("method", ["abd", "deepinversion"])
def test_the_generator_trains_in_train_mode_and_replays_in_eval_mode(run, method):
    records = audit(run, method)
    synthesis, train = records[(1, "synthesis")], records[(1, "train")]
    assert trains(synthesis, "synthesizer.generator")
    assert not trains(synthesis, "net"), "the classifier waits (eval) while the generator trains"
    assert trains(train, "net.backbone") and not trains(train, "synthesizer")


def test_mind_trains_the_teacher_then_the_subnetwork(run):
    records = audit(run, "mind")
    for task in (0, 1):
        assert trains(records[(task, "teacher")], "teacher.backbone")
        distill = records[(task, "distill")]
        assert trains(distill, "net.backbone")
        assert trains(distill, "teacher")  # the official teacher_bn_mode=train: batch statistics while distilling
    distill = audit(run, "mind", "method.teacher_bn_mode=eval")[(1, "distill")]
    assert not trains(distill, "teacher") and trains(distill, "net.backbone")


def test_ebll_warms_up_the_new_head_alone(run):
    records = audit(run, "ebll")
    warmup = records[(1, "warmup")]
    assert trains(warmup, "net.heads.1") and not trains(warmup, "net.backbone")
    assert not trains(records[(1, "train")], "encoders")
    assert trains(records[(1, "train")], "net.backbone")


def test_clr_trains_the_task_kernels_and_batchnorm_copy(run):
    record = audit(run, "clr")[(1, "train")]
    names = set(record["train_mode"])
    assert any(n.endswith("clr.1") for n in names), "task 1's CLR kernels are in train mode"
    assert any(n.endswith("per_task.1") for n in names), "task 1's BatchNorm copy is in train mode"
    assert not any(n.endswith(("clr.0", "per_task.0", "pretrained")) for n in names), "task 0 and the pretrained BN are frozen"
