"""CLR (Ge et al., ICCV 2023) and the linear-probe baseline: identity init, zero forgetting,
gradients only for the current task, parameter counts, and runs on tiny dataset sequences."""
from __future__ import annotations

import copy
import json
from functools import partial
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch import nn

from lifelong.data.datamodule import TaskData
from lifelong.data.datasets import ImageSet
from lifelong.data.scenario import Task
from lifelong.data.transforms import BatchAugment
from lifelong.errors import ConfigError
from lifelong.methods.clr import CLR, KeepBest
from lifelong.methods.linear import Linear
from lifelong.models.backbones import convnet, resnet18, resnet50
from lifelong.models.clr import ReprogrammedBackbone
from test_sequence import write_folder


@pytest.fixture(autouse=True)
def one_thread():
    """Small convolutions run faster on one thread, and much faster when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randomise_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial 'pretrained' BatchNorm statistics and affine parameters, so identity is not luck."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


def make_task(task_id: int, offset: int, n_classes: int, n: int = 24, size: int = 16, seed: int = 0) -> Task:
    g = torch.Generator().manual_seed(seed + task_id)
    def split():
        y = torch.arange(n) % n_classes
        x = (torch.randint(0, 100, (n, 3, size, size), generator=g) + 40 * y.view(-1, 1, 1, 1)).to(torch.uint8)
        return ImageSet(x, y + offset)
    return Task(task_id, list(range(n_classes)), offset, split(), split(), split(),
                BatchAugment([0.5] * 3, [0.25] * 3), f"t{task_id}")


def clr_method(backbone=None, **kwargs) -> CLR:
    backbone = backbone or randomise_batchnorm(convnet(3, (8, 16)))
    return CLR(backbone, optimizer=partial(torch.optim.Adam, lr=0.05), epochs=1, patience=0, random_backbone=True,
               **kwargs)


def fit_task(method, task: Task, batches: int = 3) -> None:
    """The runner's per-task sequence (lifelong.run), without the reports."""
    method.begin_task(task)
    data = TaskData(task.train, task.val, task.augment, batch_size=8, seed=task.id)

    def fit(phase):
        trainer = L.Trainer(max_epochs=phase.epochs, callbacks=list(phase.callbacks), logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            num_sanity_val_steps=0, accelerator="cpu", limit_train_batches=batches,
                            deterministic=True)
        trainer.fit(method, datamodule=data)

    method.fit_task(task, fit)
    method.end_task(task, data)


def test_identity_init_reproduces_the_frozen_backbone():
    backbone = randomise_batchnorm(resnet18(weights=None, small_input=False)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = backbone(x)
    reprogrammed = ReprogrammedBackbone(copy.deepcopy(backbone))
    reprogrammed.add_task()
    reprogrammed.eval()
    with torch.no_grad():
        out = reprogrammed(x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # and it is a reprogramming: other kernels change the output
    with torch.no_grad():
        reprogrammed.clr_layers(0)[3].weight.mul_(2.0)
        assert not torch.allclose(reprogrammed(x), expected, atol=1e-3)


def test_method_task_aware_logits_at_init_are_the_frozen_model_with_the_head():
    backbone = randomise_batchnorm(convnet(3, (8, 16)))
    frozen = copy.deepcopy(backbone).eval()
    method = clr_method(copy.deepcopy(backbone))
    method.begin_task(make_task(0, 0, 3))
    method.eval()
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(method.task_aware_logits(x, 0), method.net.heads[0](frozen(x)),
                                   rtol=1e-5, atol=1e-6)


def test_only_the_current_task_gets_gradients():
    method = clr_method()
    tasks = [make_task(0, 0, 3), make_task(1, 3, 2)]
    fit_task(method, tasks[0])
    method.begin_task(tasks[1])
    method.train()
    x, y = next(iter(TaskData(tasks[1].train, tasks[1].val, tasks[1].augment, 8).train_dataloader()))
    terms = method.loss_terms(tasks[1].augment(x), y)
    assert set(terms) == {"ce", "norm"}
    sum(terms.values()).backward()
    current = {id(p) for p in method.task_parameters(1)}
    for name, p in method.named_parameters():
        if id(p) in current:
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert not p.requires_grad and p.grad is None, name
    assert {id(p) for p in method.phases(tasks[1])[0].parameters()} == current
    # CLR kernels, BatchNorm copies and the head of task 1 are all among them
    kinds = {type(m).__name__ for m in method.task_modules(1)}
    assert kinds == {"Conv2d", "BatchNorm2d", "Linear"}


def test_earlier_tasks_logits_are_bit_identical_after_later_tasks():
    method = clr_method()
    tasks = [make_task(0, 0, 3), make_task(1, 3, 2), make_task(2, 5, 2)]
    x = tasks[0].augment(tasks[0].test.x[:8])
    pretrained = {k: v.clone() for k, v in method.reprogrammed.body.state_dict().items()
                  if ".per_task." not in k and ".clr." not in k}
    fit_task(method, tasks[0])
    method.eval()
    with torch.no_grad():
        before = method.task_aware_logits(x, 0)
        task1_init = method.task_aware_logits(x, 0)  # task 1 starts from the pretrained model, not task 0
    kernels0 = [k.weight.clone() for k in method.reprogrammed.clr_layers(0)]
    for task in tasks[1:]:
        fit_task(method, task)
    method.eval()
    with torch.no_grad():
        after = method.task_aware_logits(x, 0)
        agnostic = method.task_agnostic_logits(x)
    assert torch.equal(before, after) and torch.equal(task1_init, after)
    assert all(torch.equal(a, b.weight) for a, b in zip(kernels0, method.reprogrammed.clr_layers(0)))
    # the later tasks did learn something, and the pretrained backbone is untouched
    assert any(not torch.equal(a.weight, b.weight) for a, b in
               zip(method.reprogrammed.clr_layers(0), method.reprogrammed.clr_layers(2)))
    state = method.reprogrammed.body.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in pretrained.items())
    # task-agnostic: [B, all classes], each row's finite entries in exactly one task's block
    assert agnostic.shape == (8, 7)
    finite = torch.isfinite(agnostic)
    blocks = torch.stack([finite[:, 0:3].all(1), finite[:, 3:5].all(1), finite[:, 5:7].all(1)], 1)
    assert torch.equal(blocks.sum(1), torch.ones(8, dtype=torch.long)) and finite.sum(1).ge(2).all()


def test_resnet50_parameter_accounting():
    method = CLR(resnet50(weights=None), optimizer=torch.optim.Adam, random_backbone=True)
    method.begin_task(make_task(0, 0, 30))
    added = method.extra_results()["added_parameters"]
    row = added["per_task"][0]
    assert row["clr_kernels"] == 34_560  # 3,840 output channels of the stem and the 16 bottleneck 3x3 convs, x 9
    assert row["batchnorm"] == 53_120 and row["head"] == 2048 * 30 + 30
    assert added["backbone"] == 23_508_032  # torchvision ResNet-50 without its ImageNet classifier
    assert row["percent_of_backbone"] == pytest.approx(100 * (34_560 + 53_120 + 61_470) / 23_508_032)
    full = CLR(resnet50(weights=None), optimizer=torch.optim.Adam, insert="all", random_backbone=True)
    full.begin_task(make_task(0, 0, 30))
    assert full.extra_results()["added_parameters"]["per_task"][0]["clr_kernels"] == 239_040  # every conv


def test_bad_insert_rule_is_a_config_error():
    with pytest.raises(ConfigError, match="method.insert"):
        clr_method(insert="some")


def test_keep_best_restores_the_best_validation_epoch():
    layer = nn.Linear(2, 2)
    keep = KeepBest(lambda: layer, "val/acc_taw")
    trainer = SimpleNamespace(sanity_checking=False, callback_metrics={})
    for acc, value in ((0.5, 1.0), (0.7, 2.0), (0.6, 3.0)):
        layer.weight.data.fill_(value)
        trainer.callback_metrics["val/acc_taw"] = torch.tensor(acc)
        keep.on_validation_end(trainer, None)
    keep.on_fit_end(trainer, None)
    assert torch.all(layer.weight == 2.0)


def test_training_stops_early_on_validation_and_keeps_the_best_epoch():
    method = CLR(randomise_batchnorm(convnet(3, (8, 16))), optimizer=partial(torch.optim.SGD, lr=0.0), epochs=30,
                 random_backbone=True,
                 patience=2, task_bn=False)  # nothing changes between epochs, not even BatchNorm statistics
    task = make_task(0, 0, 3)
    epochs = []
    method.on_train_epoch_end = lambda: epochs.append(method.current_epoch)
    fit_task(method, task, batches=1)
    assert len(epochs) == 3  # lr 0: no epoch improves on the first, so two more and it stops


def test_resume_structure_recreates_every_task():
    method = clr_method()
    for task in (make_task(0, 0, 3), make_task(1, 3, 2)):
        method.begin_task(task)
    fresh = clr_method()
    state = method.state_dict()
    fresh.on_load_state_dict_structure(state)
    fresh.load_state_dict(state)
    assert fresh.net.task_sizes == [3, 2] and fresh.reprogrammed.n_tasks == 2


def test_linear_probe_trains_heads_only():
    backbone = randomise_batchnorm(convnet(3, (8, 16)))
    method = Linear(copy.deepcopy(backbone), optimizer=partial(torch.optim.Adam, lr=0.05), epochs=1,
                    random_backbone=True)
    tasks = [make_task(0, 0, 3), make_task(1, 3, 2)]
    fit_task(method, tasks[0])
    x = tasks[0].augment(tasks[0].test.x[:8])
    method.eval()
    with torch.no_grad():
        before = method.task_aware_logits(x, 0)
    fit_task(method, tasks[1])
    method.eval()
    with torch.no_grad():
        assert torch.equal(before, method.task_aware_logits(x, 0))
    assert all(torch.equal(a, b) for a, b in zip(backbone.state_dict().values(),
                                                 method.net.backbone.state_dict().values()))


# ------------------------------------------------------------------ end to end, real config and runner
SEQUENCE = ["scenario=dataset_sequence", "scenario.datasets=[alpha,beta]", "scenario.image_size=16",
            "scenario.val_fraction=0.25", "epochs=1", "batch_size=8", "logger=none",
            "trainer.enable_progress_bar=false", "optimizer=adam"]


@pytest.fixture
def folders(tmp_path):
    write_folder(tmp_path / "data" / "alpha", 3, 8)
    write_folder(tmp_path / "data" / "beta", 2, 6, splits=("train", "test"), seed=1)
    return f"scenario.folders_root={tmp_path / 'data'}"


@pytest.mark.parametrize("method", ["clr", "linear"])
def test_end_to_end_on_a_tiny_dataset_sequence(run, folders, method):
    summary, out = run(*SEQUENCE, folders, f"method={method}", "backbone=resnet18", "backbone.small_input=false",
                       "method.random_backbone=true",
                       tiny=False)
    results = json.loads((out / "results.json").read_text())
    assert summary["tasks_done"] == 2 and results["task_sizes"] == [3, 2]
    assert results["forg_taw"][1][0] == 0.0  # nothing task 0 owns changes while task 1 trains
    assert results["acc_taw"][1][0] == results["acc_taw"][0][0]
    rows = results["added_parameters"]["per_task"]
    assert [r["head"] for r in rows] == [512 * 3 + 3, 512 * 2 + 2]
    if method == "clr":
        assert all(r["clr_kernels"] == 35_136 for r in rows)  # ResNet-18: 3,904 channels after k > 1 convs


@pytest.mark.parametrize("method", ["lwf", "ewc"])
def test_other_methods_run_on_a_dataset_sequence(run, folders, method):
    summary, _ = run(*SEQUENCE, folders, f"method={method}", "backbone=convnet", tiny=False)
    assert summary["tasks_done"] == 2 and summary["task_sizes"] == [3, 2]
