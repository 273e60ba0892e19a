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

CONF = Path(__file__).resolve().parents[1] / "conf"
METHODS = sorted(p.stem for p in (CONF / "method").glob("*.yaml"))

AUDIT = ["+callbacks.modes._target_=lifelong.callbacks.ModeAudit", "scenario.n_tasks=2", "scenario.nc_first_task=5",
         "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "eval.limit_batches=1"]
# What each method needs to run at all on tiny digits; everything else is the method's own defaults.
NEEDS = {
    "abd": ["backbone=convnet", "method.synthesis_iters=2", "method.synthesis_batch_size=8"],
    "deepinversion": ["backbone=convnet", "method.synthesis_iters=2", "method.synthesis_batch_size=8"],
    "clr": ["backbone=convnet", "method.random_backbone=true", "scenario.val_fraction=0.2"],
    "linear": ["backbone=convnet", "method.random_backbone=true", "scenario.val_fraction=0.2"],
    "ebll": ["backbone=convnet", "method.ae_epochs=1", "method.warmup_epochs=1"],
    "mind": ["backbone=convnet"],
    "bic": ["method.bias_epochs=1"],
    "e2e": ["method.finetuning_epochs=1"],
    "packnet": ["backbone=convnet"],
}


def audit(run, method: str, *overrides: str) -> dict[tuple[int, str], dict]:
    _, run_dir = run(f"method={method}", *AUDIT, *NEEDS.get(method, []), *overrides)
    records = [json.loads(line) for line in (run_dir / "mode_audit.jsonl").read_text().splitlines()]
    return {(r["task"], r["phase"]): r for r in records}


def trains(record: dict, prefix: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for name in record["train_mode"])


@pytest.mark.parametrize("method", METHODS)
def test_every_phase_trains_in_train_mode_and_freezes_in_eval_mode(run, method):
    records = audit(run, method)
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
