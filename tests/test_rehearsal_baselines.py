"""DER, DER++, BiC, E2E (EEIL) and LUCIR: end to end on tiny digits, hand computations, resume."""
from __future__ import annotations

import functools
import json

import pytest
import torch

from lifelong import resume as checkpoints
from lifelong.memory import ExemplarMemory
from lifelong.methods.bic import BiasLayer, BiC
from lifelong.methods.lucir import margin_ranking
from lifelong.models.backbones import mlp


def results(run_dir) -> dict:
    return json.loads((run_dir / "results.json").read_text())


@pytest.mark.parametrize("method, extra", [
    ("der", []), ("derpp", []), ("bic", ["method.bias_epochs=2"]), ("e2e", ["method.finetuning_epochs=1"]),
    ("lucir", []),
])
def test_method_runs_end_to_end_and_keeps_its_memory_budget(run, method, extra):
    summary, run_dir = run(f"method={method}", "memory.size=40", *extra)
    assert summary["tasks_done"] == 3 and 0 < summary["final_avg_acc_taw"] <= 1
    history = results(run_dir)["memory"]
    assert len(history) == 3  # the shared memory's stats after every task
    memory = history[-1]
    assert memory["total"] <= 40 and memory["bytes"] >= memory["total"] * 64  # 8x8 uint8 images
    counts = list(memory["per_class"].values())
    if method in ("der", "derpp"):  # reservoir: full, any mix of classes, logits stored beside the images
        assert memory["total"] == 40 and memory["bytes"] >= 40 * (64 + 8 + 4 * 10)
    elif method == "bic":  # 40 // 10 = 4 per class: 1 held out (ceil 10 %), 3 kept for training
        assert counts == [3] * 10 and list(results(run_dir)["held_out"][-1]["per_class"].values()) == [1] * 10
    else:  # class-balanced: 40 // 10 per class after the last task
        assert counts == [4] * 10


def test_rehearsal_methods_refuse_to_run_without_a_memory(run):
    for method in ("der", "bic", "e2e", "lucir"):  # a ConfigError (Hydra's instantiate wraps it; the CLI unwraps it)
        with pytest.raises(Exception, match=f"method={method} needs an exemplar memory"):
            run(f"method={method}", "memory=none")


def test_bic_bias_layers_correct_each_head_by_hand():
    method = BiC(backbone=mlp(1, 8, (16,)), optimizer=functools.partial(torch.optim.SGD, lr=0.1),
                 memory=ExemplarMemory("random", size=20))
    for sizes in (2, 3):
        method.net.add_head(sizes)
        method.bias_layers.append(BiasLayer())
    with torch.no_grad():
        method.bias_layers[1].alpha.fill_(0.5)
        method.bias_layers[1].beta.fill_(-1.0)
    z = torch.tensor([[1.0, 2.0, 4.0, 6.0, 8.0]])
    # head 0 (2 classes) unchanged, head 1: 0.5 * z - 1
    assert torch.equal(method.bias_forward(z), torch.tensor([[1.0, 2.0, 1.0, 2.0, 3.0]]))
    assert torch.equal(method.bias_forward(z[:, :2]), z[:, :2])  # the old model's logits: old heads only


def test_lucir_margin_ranking_by_hand():
    # 2 old classes, 3 new; sample 0 is old (class 1), sample 1 is new and does not count.
    cos = torch.tensor([[0.1, 0.6, 0.5, 0.2, 0.4],
                        [0.9, 0.9, 0.9, 0.9, 0.9]])
    y = torch.tensor([1, 3])
    # top-2 new scores of sample 0: 0.5, 0.4 -> max(0, 0.5 - 0.6 + 0.5) = 0.4, max(0, 0.5 - 0.6 + 0.4) = 0.3
    assert margin_ranking(cos, y, n_old=2, K=2, margin=0.5).item() == pytest.approx(0.35)
    assert margin_ranking(cos[1:], y[1:], n_old=2, K=2, margin=0.5).item() == 0.0



@pytest.mark.parametrize("method, overrides, mid_task", [
    ("bic", ("memory.size=40", "method.bias_epochs=2"), False),  # held-out memory, bias layers, exemplars
    ("der", ("memory.size=40", "epochs=2", "trainer.limit_train_batches=2"), True),  # a reservoir filled online, with its logits payloads
])
def test_resume_is_bit_identical(run, stopped_and_resumed, method, overrides, mid_task):
    overrides = (f"method={method}", *overrides)
    _, full_dir = run(*overrides)
    stopped = stopped_and_resumed(*overrides, mid_task=mid_task)
    keys = ("acc_taw", "acc_tag", "memory")
    assert {k: results(stopped)[k] for k in keys} == {k: results(full_dir)[k] for k in keys}
    a = torch.load(stopped / checkpoints.LAST, weights_only=False)["state_dict"]
    b = torch.load(full_dir / checkpoints.LAST, weights_only=False)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor))
    # BiC: 3 training exemplars per class (1 of its 4 is held out); DER: a full reservoir with logits
    assert len(a["memory.labels"]) == (30 if method == "bic" else 40)
    assert method != "der" or a["memory.payload_logits"].abs().sum() > 0


@pytest.mark.slow
def test_der_and_bic_beat_finetune_on_split_digits(run):
    # The README's measured setting: 5 tasks of 2 digits, MLP, 5 epochs, a 200-image memory.
    common = ("experiment=quickstart", "epochs=5", "logger=none", "trainer.enable_progress_bar=false")
    finetune, _ = run("method=finetune", *common, tiny=False)
    der, _ = run("method=der", "memory.size=200", *common, tiny=False)
    bic, _ = run("method=bic", "memory.size=200", "method.bias_epochs=50", *common, tiny=False)
    base = finetune["final_avg_acc_tag"]
    assert der["final_avg_acc_tag"] > base + 0.15, (der["final_avg_acc_tag"], base)
    assert bic["final_avg_acc_tag"] > base + 0.15, (bic["final_avg_acc_tag"], base)
