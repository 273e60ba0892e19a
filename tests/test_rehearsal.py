"""Rehearsal methods (icarl, replay, gdumb) and any method with memory=, through the real runner."""
from __future__ import annotations

import json

import pytest
import torch

from lifelong.methods.icarl import nme_scores


def results(run_dir):
    return json.loads((run_dir / "results.json").read_text())


def test_nme_prediction_equals_the_hand_computation():
    features = torch.tensor([[3.0, 4.0], [0.0, -2.0]])          # normalised: (0.6, 0.8), (0, -1)
    means = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, -0.8]])
    # |(0.6,0.8)-(1,0)| = sqrt(0.16+0.64) = 0.894; -(0,1): sqrt(0.36+0.04) = 0.632; -(0.6,-0.8): 1.6
    # |(0,-1)-(1,0)| = 1.414; -(0,1): 2; -(0.6,-0.8): sqrt(0.36+0.04) = 0.632
    expected = -torch.tensor([[0.8 ** 0.5, 0.4 ** 0.5, 1.6], [2 ** 0.5, 2.0, 0.4 ** 0.5]])
    assert torch.allclose(nme_scores(features, means), expected, atol=1e-6)
    assert nme_scores(features, means).argmax(1).tolist() == [1, 2]


@pytest.mark.parametrize("overrides", [
    ("method=icarl", "memory.size=40"),
    ("method=replay", "memory.size=40"),
    ("method=gdumb", "memory.size=40"),
    ("method=finetune", "memory=herding", "memory.size=40"),
    ("method=lwf", "memory=random", "memory.per_class=3"),
], ids=["icarl", "replay", "gdumb", "finetune+herding", "lwf+random"])
def test_rehearsal_runs_end_to_end_and_reports_its_memory(run, overrides):
    summary, run_dir = run(*overrides)
    r = results(run_dir)
    assert r["tasks_done"] == 3
    memory = r["memory"]
    assert len(memory) == 3 and all(m["total"] <= 40 and m["bytes"] > 0 for m in memory)
    assert sorted(int(c) for c in memory[-1]["per_class"]) == list(range(10))
    if "icarl" in overrides[0]:
        assert len(r["cnn_acc_tag"]) == 3 and len(r["cnn_acc_tag"][-1]) == 3


SPLIT = ("epochs=3", "trainer.limit_train_batches=null", "scenario.n_tasks=5", "scenario.nc_first_task=null")


@pytest.mark.slow
def test_rehearsal_beats_finetune_and_more_memory_is_not_worse(run):
    def acc(*overrides):
        return run(*SPLIT, *overrides)[0]["final_avg_acc_tag"]

    finetune = acc("method=finetune")
    replay = acc("method=replay", "memory.size=200")
    icarl_small, icarl_large = acc("method=icarl", "memory.size=50"), acc("method=icarl", "memory.size=200")
    assert replay > finetune + 0.15 and icarl_large > finetune + 0.15, (finetune, replay, icarl_large)
    assert icarl_large >= icarl_small - 0.02, (icarl_small, icarl_large)
