"""Every baseline method end to end on tiny data: 3 tasks of digits, 1 epoch each."""
import json

import pytest
import torch

BASELINES = ["finetune", "joint", "freezing", "lwf", "ewc"]


def check_matrices(summary, n_tasks=3, sizes=(4, 3, 3)):
    for name in ("acc_taw", "acc_tag", "forg_taw", "forg_tag"):
        matrix = summary[name]
        assert len(matrix) == n_tasks and all(len(row) == n_tasks for row in matrix)
        for t in range(n_tasks):
            assert all(v is None for v in matrix[t][t + 1:]), f"{name}[{t}] defined above the diagonal"
    for t in range(n_tasks):
        for u in range(t + 1):
            assert summary["acc_taw"][t][u] >= summary["acc_tag"][t][u] - 1e-9  # fewer classes to confuse
        assert summary["acc_taw"][t][t] > 1.0 / sizes[t], f"task {t} not above chance"


@pytest.mark.parametrize("method", BASELINES)
def test_baseline_end_to_end(run, method):
    summary, out = run(f"method={method}", "backbone=mlp", "trainer.limit_train_batches=8")
    check_matrices(summary)
    saved = json.loads((out / "results.json").read_text())
    assert saved["acc_tag"] == summary["acc_tag"] and saved["tasks_done"] == 3
    for key in ("avg_acc_taw", "avg_acc_tag", "avg_forg_taw", "avg_forg_tag", "acc_tag_all",
                "avg_inc_acc_tag", "bwt_taw", "bwt_tag"):
        assert key in saved
    assert (out / "metrics.csv").read_text().startswith("task,eval_task,acc_taw,acc_tag")
    assert {p.name for p in (out / "plots").iterdir()} >= {"acc_taw_heatmap.png", "acc_tag_heatmap.png",
                                                          "forgetting.png"}
    assert (out / "checkpoints" / "last.pt").is_file()


def test_convnet_and_resnet32_backbones_train(run):
    summary, _ = run("method=finetune", "backbone=convnet")
    check_matrices(summary)
    summary, _ = run("method=lwf", "backbone=resnet32", "backbone.shortcut=B")
    assert summary["tasks_done"] == 3


def test_freezing_keeps_old_task_aware_accuracy_exactly(run):
    summary, _ = run("method=freezing", "backbone=convnet")
    taw = summary["acc_taw"]
    assert taw[0][0] == taw[1][0] == taw[2][0]
    assert taw[1][1] == taw[2][1]


def test_same_seed_same_numbers_on_cpu(run):
    a, _ = run("method=ewc", "backbone=convnet", "seed=3")
    b, _ = run("method=ewc", "backbone=convnet", "seed=3")
    c, _ = run("method=ewc", "backbone=convnet", "seed=4")
    assert a["acc_tag"] == b["acc_tag"] and a["acc_taw"] == b["acc_taw"]
    assert a["class_order"] == b["class_order"] != c["class_order"]


def test_ewc_penalty_is_zero_at_the_anchor_and_grows_away_from_it():
    from lifelong.data.scenario import Task
    from lifelong.methods.ewc import EWC
    from lifelong.models.backbones import mlp
    from functools import partial

    torch.manual_seed(0)
    method = EWC(mlp(1, 8, (16,)), optimizer=partial(torch.optim.SGD, lr=0.1))
    x = torch.randn(32, 1, 8, 8)
    y = torch.randint(0, 3, (32,))
    from lifelong.data.datasets import ImageSet
    from lifelong.data.datamodule import TaskData
    from lifelong.data.transforms import BatchAugment

    data = ImageSet((x * 40 + 128).clamp(0, 255).to(torch.uint8), y)
    task = Task(0, [0, 1, 2], 0, data, data, data, BatchAugment([0.5], [0.25]))
    method.begin_task(task)
    method.end_task(task, TaskData(data, data, task.augment, batch_size=8))
    assert method.penalty().item() == 0.0
    assert sum(getattr(method.fisher, n).sum() for n, _ in method.fisher.named_buffers()) > 0
    with torch.no_grad():
        for p in method.net.backbone.parameters():
            p.add_(0.1)
    assert method.penalty().item() > 0
    assert "ewc" in method.loss_terms(x, y)


def test_pretrained_weights_refuse_a_replaced_stem():
    from lifelong.errors import ConfigError
    from lifelong.models.backbones import resnet18

    with pytest.raises(ConfigError, match="backbone.small_input=false"):
        resnet18(weights="IMAGENET1K_V1", small_input=True)


def test_multi_head_joint_softmaxes_each_sample_over_its_own_task(run):
    import torch
    from torch.nn import functional as F

    from lifelong.methods.joint import Joint
    from lifelong.models.backbones import mlp

    method = Joint(mlp(in_channels=1, image_size=2, hidden=(4,)), optimizer=None, multi_head=True)
    method.net.add_head(2)
    method.net.add_head(3)
    logits, y = torch.randn(2, 5), torch.tensor([1, 3])
    expected = (F.cross_entropy(logits[:1, :2], y[:1]) + F.cross_entropy(logits[1:, 2:], y[1:] - 2)) / 2
    assert method.cross_entropy(logits, y).item() == pytest.approx(expected.item())
    summary, _ = run("method=joint_multihead")
    assert summary["tasks_done"] == 3 and summary["final_avg_acc_taw"] > 0.5


def test_resnet32_initialises_as_its_source(run):
    import torch

    from lifelong.models.backbones import resnet32
    from lifelong.models.net import IncrementalNet

    torch.manual_seed(0)
    facil, abd = IncrementalNet(resnet32(init="facil")), IncrementalNet(resnet32(init="abd"))
    conv = abd.backbone.layer3[0].conv2  # 64 -> 64 channels, 3x3: fan_in = fan_out = 576
    stem_facil, stem_abd = facil.backbone.conv1.weight, abd.backbone.conv1.weight  # 3 -> 16: fan_in 27, fan_out 144
    assert stem_facil.std().item() == pytest.approx((2 / 144) ** 0.5, rel=0.15)
    assert stem_abd.std().item() == pytest.approx((2 / 27) ** 0.5, rel=0.15)
    assert conv.weight.std().item() == pytest.approx((2 / 576) ** 0.5, rel=0.05)
    head_facil, head_abd = facil.add_head(100), abd.add_head(100)  # 64 -> 100
    assert head_abd.weight.std().item() == pytest.approx((2 / 64) ** 0.5, rel=0.1)  # kaiming_normal_, fan-in
    assert head_facil.weight.abs().max().item() <= 1 / 64 ** 0.5  # PyTorch's default: U(-1/sqrt(64), 1/sqrt(64))
    summary, _ = run("method=joint_reinit", "backbone=resnet32", "backbone.init=abd")
    assert summary["tasks_done"] == 3


def test_cpu_runs_record_their_thread_count(run):
    summary, run_dir = run("method=finetune", "torch_threads=1")
    assert summary["torch_threads"] == 1
