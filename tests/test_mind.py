"""MIND and PackNet: allocation, frozen sub-networks, prediction by sub-network, end to end."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from torch.nn import functional as F

import lifelong.run as runner
from conftest import TINY, run_config
from lifelong.data.scenario import Task
from lifelong.errors import ConfigError
from lifelong.methods.mind import MIND, symmetric_kl
from lifelong.methods.packnet import PackNet
from lifelong.models.backbones import mlp
from lifelong.models.gated import FREE, allocate, gated_layers, gated_resnet32
from lifelong.selection import most_confident

SIZES = [4, 3, 3]  # the TINY scenario's classes per task


def tasks(sizes=SIZES) -> list[Task]:
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]
    return [Task(i, list(range(o, o + n)), o, None, None, None) for i, (o, n) in enumerate(zip(offsets, sizes))]


def grown_mind(**kwargs) -> MIND:
    """A MIND with 3 allocated sub-networks, random weights and a distinct BN snapshot per task."""
    torch.manual_seed(0)
    method = MIND(gated_resnet32(1), n_tasks=3, n_classes=10, **kwargs)
    for task in tasks():
        method.begin_task(task)
        method.allocate(task)
        with torch.no_grad():
            for _, layer in gated_layers(method.net.backbone):
                mine = layer.owner == task.id
                layer.weight.copy_(torch.where(mine, torch.randn_like(layer.weight) * 0.3, layer.weight))
            for m in method.net.backbone.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.normal_(0, 0.1)
                    m.running_mean.normal_(0, 0.1)
                    m.running_var.uniform_(0.5, 2.0)
        method.end_task(task, None)
    return method.eval()


def test_allocation_gives_each_task_one_nth_of_every_layer_and_never_reassigns():
    method = MIND(gated_resnet32(1), n_tasks=3, n_classes=10)
    layers = gated_layers(method.net.backbone)
    before = None
    for task in tasks():
        method.begin_task(task)
        method.allocate(task)
        for _, layer in layers:
            assert int((layer.owner == task.id).sum()) == layer.weight.numel() // 3
        owners = [layer.owner.clone() for _, layer in layers]
        if before is not None:
            for old, new in zip(before, owners):
                assert torch.equal(new[old != FREE], old[old != FREE])  # owned weights keep their owner
        before = owners
        method.end_task(task, None)
    for _, layer in layers:  # what is left free is the remainder of numel // N
        assert int((layer.owner == FREE).sum()) == layer.weight.numel() % 3
        free = layer.owner == FREE
        assert torch.all(layer.weight[free] == 0)
    assert method.extra_results()["weights_free"] < 0.01


def test_magnitude_allocation_takes_the_largest_free_weights():
    layer = gated_layers(gated_resnet32(1))[0][1]
    layer.owner.view(-1)[:10] = 0  # taken by task 0: never offered again
    scores = torch.arange(layer.weight.numel(), dtype=torch.float).view_as(layer.weight)
    scores.view(-1)[:10] = 1e9
    chosen = allocate(layer, 1, 3, scores)
    free_sorted = torch.arange(10, layer.weight.numel()).flip(0)
    assert sorted(chosen.tolist()) == sorted(free_sorted[: layer.weight.numel() // 3].tolist())


def test_task_agnostic_prediction_equals_a_direct_loop_over_subnetworks():
    method = grown_mind()
    x = torch.randn(16, 1, 8, 8)
    live = [layer.gate for _, layer in gated_layers(method.net.backbone)]
    live_bn = [b.clone() for b in method.net.backbone.buffers() if b.dtype == torch.float32]
    with torch.no_grad():
        scores = method.task_agnostic_logits(x)
        direct = []
        for j in range(3):  # a copy per sub-network: weights times its mask, its own BN snapshot
            net = copy.deepcopy(method.net.backbone)
            for _, layer in gated_layers(net):
                layer.gate = None
                layer.weight.mul_(((layer.owner >= 0) & (layer.owner <= j)).float())
            for name, m in net.named_modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    key = name.replace(".", "__")
                    for field in ("weight", "bias", "running_mean", "running_var"):
                        getattr(m, field).copy_(getattr(method.snapshots, f"{key}__{field}")[j])
            direct.append(method.net.heads[j](net(x)))
    expected, chosen = most_confident(direct, method.temperature)
    assert torch.allclose(scores, expected, atol=1e-5)
    assert torch.equal(scores.argmax(1), expected.argmax(1))
    # Predictions leave the live state (gates, BatchNorm) as they found it.
    assert all(a is b for a, b in zip(live, [layer.gate for _, layer in gated_layers(method.net.backbone)]))
    assert all(torch.equal(a, b) for a, b in
               zip(live_bn, [b for b in method.net.backbone.buffers() if b.dtype == torch.float32]))
    for j in range(3):  # task-aware = sub-network j on its own classes
        assert torch.allclose(method.task_aware_logits(x, j), direct[j], atol=1e-5)


def test_symmetric_kl_is_half_the_sum_of_both_kl_divergences():
    s, t = torch.randn(5, 7), torch.randn(5, 7)
    kl_ts = F.kl_div(F.log_softmax(s, 1), F.log_softmax(t, 1), reduction="batchmean", log_target=True)
    kl_st = F.kl_div(F.log_softmax(t, 1), F.log_softmax(s, 1), reduction="batchmean", log_target=True)
    assert torch.allclose(symmetric_kl(s, t), 0.5 * (kl_ts + kl_st))
    assert torch.allclose(symmetric_kl(s, t), symmetric_kl(t, s))
    assert symmetric_kl(s, s).abs() < 1e-6


def test_bad_configuration_is_refused_before_training():
    with pytest.raises(ConfigError, match="method.teacher"):
        MIND(gated_resnet32(1), n_tasks=3, teacher="oracle")
    with pytest.raises(ConfigError, match="bias"):  # biased layers cannot be split between tasks
        MIND(mlp(1, 8), n_tasks=3)
    with pytest.raises(ConfigError, match="method.n_tasks"):
        MIND(gated_resnet32(1), n_tasks=0)
    method = MIND(gated_resnet32(1), n_tasks=2, n_classes=10)
    with pytest.raises(ConfigError, match="method.n_tasks=2"):
        method.begin_task(tasks()[2])


def _record_tasks(monkeypatch, cls):
    """Keeps, after each task, the state that must never change again, and the scenario."""
    seen: dict = {"states": []}
    end_task = cls.end_task
    build = runner.build

    def recording_end_task(self, task, data):
        end_task(self, task, data)
        backbone = self.net.backbone
        seen["method"] = self
        seen["states"].append({
            "owner": [layer.owner.clone() for _, layer in gated_layers(backbone)],
            "weight": [layer.weight.detach().clone() for _, layer in gated_layers(backbone)],
            "head": self.net.heads[task.id].weight.detach().clone(),
            "snapshots": {k: v[task.id].clone() for k, v in self.snapshots.named_buffers() if k != "saved"},
        })

    def recording_build(cfg):
        scenario, method = build(cfg)
        seen["scenario"] = scenario
        return scenario, method

    monkeypatch.setattr(cls, "end_task", recording_end_task)
    monkeypatch.setattr(runner, "build", recording_build)
    return seen


def _assert_old_tasks_frozen(seen: dict, out) -> None:
    method, states = seen["method"], seen["states"]
    backbone = method.net.backbone
    for u, state in enumerate(states):
        for (_, layer), owner, weight in zip(gated_layers(backbone), state["owner"], state["weight"]):
            old = (owner >= 0) & (owner <= u)  # weights of tasks 0..u: sub-network u
            assert torch.equal(layer.owner[old], owner[old])
            assert torch.equal(layer.weight.detach()[old], weight[old])  # bit for bit
        assert torch.equal(method.net.heads[u].weight.detach(), state["head"])
        for key, value in state["snapshots"].items():
            assert torch.equal(getattr(method.snapshots, key)[u], value)
    results = json.loads((out / "results.json").read_text())
    acc = results["acc_taw"]
    for t in range(len(acc)):
        for u in range(t + 1):
            assert acc[t][u] == acc[u][u]  # TAW accuracy of an old task exactly as it was
    assert results["final_avg_forg_taw"] == 0.0


def test_mind_end_to_end_old_subnetworks_stay_bit_for_bit(run, monkeypatch):
    """Gated ResNet-32 on digits; weight decay on, so frozen weights only survive by being restored."""
    seen = _record_tasks(monkeypatch, MIND)
    summary, out = run("method=mind", "backbone=gated_resnet32", "trainer.limit_train_batches=2",
                       "method.distill_optimizer.weight_decay=0.1", "method.teacher_optimizer.weight_decay=0.1")
    assert summary["tasks_done"] == 3
    _assert_old_tasks_frozen(seen, out)
    method, scenario = seen["method"], seen["scenario"]
    assert method.teacher is None and len(method.net.heads) == 3
    # Task identification reported by the runner = the sub-network the selector picks.
    results = json.loads((out / "results.json").read_text())
    method.eval()
    with torch.no_grad():
        for task in scenario.tasks:
            x = task.augment(task.test.x)
            _, chosen = most_confident(method.subnetwork_logits(x), method.temperature)
            assert results["acc_task_id"][2][task.id] == pytest.approx((chosen == task.id).float().mean().item())


def test_packnet_end_to_end_prunes_to_one_nth_and_never_forgets(run, monkeypatch):
    seen = _record_tasks(monkeypatch, PackNet)
    summary, out = run("method=packnet", "backbone=resnet32", "trainer.limit_train_batches=2")
    assert summary["tasks_done"] == 3
    _assert_old_tasks_frozen(seen, out)
    for _, layer in gated_layers(seen["method"].net.backbone):
        for t in range(3):
            assert int((layer.owner == t).sum()) == layer.weight.numel() // 3


@pytest.mark.parametrize("variant", [
    ["method.teacher=self", "method.magnitude_source=teacher"],
    ["method.weight_sharing=false", "method.beta=0", "method.per_task_bn=false", "method.logit_masking=slice",
     "method.teacher_bn_mode=eval", "scenario.val_fraction=0.2"],
], ids=["self_distillation", "ablations"])
def test_mind_variants_keep_old_tasks_frozen(run, monkeypatch, variant):
    seen = _record_tasks(monkeypatch, MIND)
    summary, out = run("method=mind", "backbone=convnet", "trainer.limit_train_batches=1", *variant)
    _assert_old_tasks_frozen(seen, out)
    method = seen["method"]
    if "method.per_task_bn=false" in variant:  # one BatchNorm, trained on task 0 only
        for key, value in method.snapshots.named_buffers():
            if key != "saved":
                assert all(torch.equal(value[0], value[t]) for t in range(3))
    if "method.weight_sharing=false" in variant:  # disjoint: sub-network j is task j's weights alone
        layer = gated_layers(method.net.backbone)[0][1]
        with method._swapping() as live:
            method._use_subnetwork(1, live, bool(method.snapshots.saved[1]))
            assert torch.equal(layer.gate.bool(), layer.owner == 1)


def test_mind_resumes_after_a_preemption_with_the_same_results(tmp_path, monkeypatch):
    """Killed before task 2, rerun in the same run dir: heads, owner maps and BN snapshots come back."""
    overrides = (*TINY, "method=mind", "backbone=convnet", "trainer.limit_train_batches=1")
    full = run_config(tmp_path / "full", *overrides)
    begin_task = MIND.begin_task

    def preempted(self, task):
        if task.id == 2:
            raise KeyboardInterrupt("preempted")
        begin_task(self, task)

    monkeypatch.setattr(MIND, "begin_task", preempted)
    with pytest.raises(KeyboardInterrupt):
        run_config(tmp_path / "preempted", *overrides)
    monkeypatch.setattr(MIND, "begin_task", begin_task)
    resumed = run_config(tmp_path / "preempted", *overrides)  # a requeued job: resumes from its run dir
    assert resumed["acc_taw"] == full["acc_taw"] and resumed["acc_tag"] == full["acc_tag"]


def test_entropy_selector_picks_the_lower_entropy_of_the_two_most_confident():
    from lifelong.selection import lowest_entropy_of_top, most_confident

    # task 0: max prob 0.6 but flat elsewhere; task 1: max 0.55, the rest on one class (lower entropy);
    # task 2: max 0.5. max_prob picks task 0, entropy_top2 picks task 1 (between tasks 0 and 1).
    probs = [torch.tensor([[0.6, 0.2, 0.2]]), torch.tensor([[0.55, 0.45, 0.0]]), torch.tensor([[0.5, 0.5, 0.0]])]
    logits = [p.clamp_min(1e-12).log() for p in probs]
    assert most_confident(logits)[1].tolist() == [0]
    scores, chosen = lowest_entropy_of_top(logits)
    assert chosen.tolist() == [1] and scores.argmax(1).tolist() == [3]
    entropies = [-(p * p.clamp_min(1e-12).log()).sum().item() for p in probs[:2]]
    assert entropies[1] < entropies[0]


def test_mind_reports_both_task_agnostic_accuracies(run):
    summary, out = run("method=mind", "backbone=convnet", "trainer.limit_train_batches=1")
    results = json.loads((out / "results.json").read_text())
    assert set(results["tag_variants"]) == {"max_prob", "entropy_top2"}
    assert results["acc_tag_max_prob"] == results["acc_tag"]  # the default selector is max_prob
    assert all(v is not None for v in results["acc_tag_entropy_top2"][2][:3])
    summary, out = run("method=mind", "backbone=convnet", "trainer.limit_train_batches=1", "method.selector=entropy_top2")
    assert json.loads((out / "results.json").read_text())["acc_tag"] == \
        json.loads((out / "results.json").read_text())["acc_tag_entropy_top2"]
