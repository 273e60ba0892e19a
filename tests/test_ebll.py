"""EBLL (Rannen Triki et al., ICCV 2017): LwF + per-task autoencoders guarding the shared features."""
from __future__ import annotations

import copy
import functools
import json
from types import SimpleNamespace

import pytest
import torch

from lifelong.data.scenario import Task
from lifelong.errors import ConfigError
from lifelong.methods.base import freeze
from lifelong.methods.ebll import EBLL, fit_autoencoder, squared_distance
from lifelong.models.autoencoder import AutoEncoder, make_encoder
from lifelong.models.backbones import AlexNetFeatures, alexnet, mlp

FAST_AE = ("method.ae_epochs=3", "method.ae_batch_size=128")


class Interrupted(Exception):
    """Stands for a preemption hitting the run."""


def _task(i: int, offset: int, n: int) -> Task:
    return Task(i, list(range(offset, offset + n)), offset, None, None, None)


def _method(backbone=None, **kwargs) -> EBLL:
    backbone = backbone or mlp(in_channels=1, image_size=8, hidden=(32, 16))
    return EBLL(backbone=backbone, optimizer=functools.partial(torch.optim.SGD, lr=0.1), epochs=1, **kwargs)


class _Batches:
    """The `data.batches(...)` interface of `TaskData`, over fixed tensors."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def batches(self, split="train", device="cpu", **_):
        for i in range(0, len(self.y), 16):
            yield self.x[i : i + 16].to(device), self.y[i : i + 16].to(device)


def _results(run_dir):
    return json.loads((run_dir / "results.json").read_text())


def test_alpha_zero_without_warmup_is_exactly_lwf(run):
    _, lwf_dir = run("method=lwf")
    _, ebll_dir = run("method=ebll", "method.alpha=0", "method.warmup_epochs=0", *FAST_AE)
    lwf, ebll = _results(lwf_dir), _results(ebll_dir)
    for key in ("acc_taw", "acc_tag", "acc_tag_all"):
        assert ebll[key] == lwf[key], key
    assert len(ebll["ebll_autoencoders"]) == 3  # the autoencoders were trained all the same


def test_autoencoder_loss_decreases_on_fixed_features():
    adadelta = functools.partial(torch.optim.Adadelta, lr=1.0, rho=0.9, eps=1e-8)  # the default optimizer
    for rec_weight, term in ((1.0, "rec"), (1e-6, "ce")):  # reconstruction-led, then the paper's weight
        torch.manual_seed(0)
        features = torch.randn(256, 32)
        head = freeze(torch.nn.Linear(32, 5))
        labels = head(features).argmax(1)
        ae = AutoEncoder(32, code_size=8)
        history = fit_autoencoder(ae, features, labels, head, rec_weight=rec_weight, reduction="batchmean",
                                  optimizer=adadelta, epochs=30, batch_size=256)
        assert len(history) == 30
        assert history[-1][term] < 0.99 * history[0][term], (rec_weight, term)
        assert history[-1]["total"] < history[0]["total"]
        assert all(p.grad is None for p in head.parameters())  # the task's head stays as it was


def test_code_loss_is_zero_for_an_unchanged_model_and_grows_with_a_perturbation():
    torch.manual_seed(0)
    method = _method()
    method.begin_task(_task(0, 0, 4))
    method.old_net = freeze(copy.deepcopy(method.net))
    method.encoders.append(freeze(make_encoder(16, 8)))
    method.encoders.append(freeze(make_encoder(16, 8)))
    method.begin_task(_task(1, 4, 3))
    x, y = torch.randn(32, 1, 8, 8), torch.randint(4, 7, (32,))
    terms = method.loss_terms(x, y)
    assert set(terms) == {"ce", "kd", "code"}
    assert terms["code"].item() == 0.0

    f = method.net.features(x).detach()
    direction = torch.randn_like(f)
    distances = [method.code_distance(f + eps * direction, f).item() for eps in (1e-3, 1e-2, 1e-1, 1.0)]
    assert 0 < distances[0] < distances[1] < distances[2] < distances[3]
    with torch.no_grad():
        method.net.backbone.layers[1].weight.add_(0.5 * torch.randn_like(method.net.backbone.layers[1].weight))
    perturbed = method.loss_terms(x, y)["code"]
    assert perturbed.item() > 0
    perturbed.backward()  # the code loss reaches the backbone, not the frozen encoders
    assert method.net.backbone.layers[1].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in method.encoders.parameters())


def test_code_loss_weight_and_reductions():
    torch.manual_seed(0)
    a, b = torch.rand(4, 10), torch.rand(4, 10)
    assert squared_distance(a, b, "batchmean") == pytest.approx(((a - b) ** 2).sum().item() / 4)
    assert squared_distance(a, b, "mean") == pytest.approx(((a - b) ** 2).mean().item())
    assert squared_distance(a, b, "sum") == pytest.approx(((a - b) ** 2).sum().item())
    method = _method(alpha=0.3)
    method.begin_task(_task(0, 0, 4))
    method.old_net = freeze(copy.deepcopy(method.net))
    method.encoders.append(freeze(make_encoder(16, 8)))
    method.begin_task(_task(1, 4, 3))
    x, y = torch.randn(8, 1, 8, 8), torch.randint(4, 7, (8,))
    with torch.no_grad():
        method.net.backbone.layers[1].weight.mul_(1.5)
    f, old_f = method.net.features(x), method.old_net.features(x)
    expected = 0.3 / 2 * squared_distance(method.encoders[0](f), method.encoders[0](old_f), "batchmean")
    assert method.loss_terms(x, y)["code"].item() == pytest.approx(expected.item())


def test_per_head_distillation_sums_one_softmax_per_old_task():
    from lifelong.losses import distillation

    torch.manual_seed(0)
    method = _method(kd_scope="per_head")
    method.begin_task(_task(0, 0, 4))
    method.begin_task(_task(1, 4, 3))
    method.old_net = freeze(copy.deepcopy(method.net))
    logits, old_logits = torch.randn(5, 10), torch.randn(5, 7)
    expected = distillation(logits[:, :4], old_logits[:, :4]) + distillation(logits[:, 4:7], old_logits[:, 4:7])
    assert method.old_heads_kd(logits, old_logits).item() == pytest.approx(expected.item())
    method.kd_scope = "concat"
    assert method.old_heads_kd(logits, old_logits).item() == pytest.approx(
        distillation(logits[:, :7], old_logits).item())


def test_phases_warm_up_the_new_head_only_after_the_first_task():
    method = _method(warmup_epochs=2)
    method.begin_task(_task(0, 0, 4))
    assert [p.name for p in method.phases(method.task)] == ["train"]
    method.begin_task(_task(1, 4, 3))
    warmup, train = method.phases(method.task)
    assert (warmup.name, warmup.epochs, train.name) == ("warmup", 2, "train")
    assert {id(p) for p in warmup.parameters()} == {id(p) for p in method.net.heads[1].parameters()}
    assert _method(warmup_epochs=0).warmup_epochs == 0
    assert _method().warmup_epochs == 1  # None: the main phase's epochs


@pytest.mark.parametrize("key,value", [("kd_scope", "both"), ("code_reduction", "avg"), ("ae_reduction", "none"),
                                       ("alpha", -1.0), ("code_size", 0), ("ae_epochs", -1)])
def test_bad_options_raise_config_errors(key, value):
    with pytest.raises(ConfigError, match=key):
        _method(**{key: value})


def test_end_to_end_class_incremental(run, monkeypatch):
    """Tiny class-IL run: warm-up touches only the new head, old encoders never change, resume works."""
    phases, encoders = [], []
    fit_task, end_task = EBLL.fit_task, EBLL.end_task

    def recording_fit_task(self, task, fit):
        def fit_and_record(phase):
            before = copy.deepcopy(self.net.state_dict())
            fit(phase)
            phases.append((task.id, phase.name, before, copy.deepcopy(self.net.state_dict())))
        fit_task(self, task, fit_and_record)

    def recording_end_task(self, task, data):
        end_task(self, task, data)
        encoders.append(copy.deepcopy(self.encoders.state_dict()))

    monkeypatch.setattr(EBLL, "fit_task", recording_fit_task)
    monkeypatch.setattr(EBLL, "end_task", recording_end_task)
    summary, run_dir = run("method=ebll", "method.warmup_epochs=1", "logger=csv", "trainer.log_every_n_steps=1",
                           *FAST_AE)

    assert [(t, name) for t, name, _, _ in phases] == [(0, "train"), (1, "warmup"), (1, "train"),
                                                      (2, "warmup"), (2, "train")]
    for task_id, name, before, after in phases:
        changed = {k for k in before if not torch.equal(before[k], after[k])}
        if name == "warmup":
            assert changed == {f"heads.{task_id}.weight", f"heads.{task_id}.bias"}
        else:
            assert any(k.startswith("backbone.") for k in changed)

    assert [len(e) for e in encoders] == [2, 4, 6]  # one Linear (weight, bias) per finished task
    for k, state in encoders[0].items():
        assert torch.equal(state, encoders[1][k]) and torch.equal(state, encoders[2][k]), k
    for k, state in encoders[1].items():
        assert torch.equal(state, encoders[2][k]), k

    results = _results(run_dir)
    assert results["tasks_done"] == 3 and len(results["ebll_autoencoders"]) == 3
    assert all(0.0 <= a["reconstruction_accuracy"] <= 1.0 for a in results["ebll_autoencoders"])
    header = (run_dir / "logs" / "metrics.csv").read_text().splitlines()[0].split(",")
    for column in ("loss/ce", "loss/kd", "loss/code", "warmup/loss/ce"):
        assert column in header, column

    # Interrupted after task 1 and resumed: the encoders come back from the checkpoint alone, and the
    # run ends exactly as the uninterrupted one.
    from lifelong import resume as checkpoints

    monkeypatch.undo()
    save = checkpoints.save_task_state

    def stop_after_task_1(run_dir, method, summary, *args, **kwargs):
        save(run_dir, method, summary, *args, **kwargs)
        if summary["tasks_done"] == 2:
            raise Interrupted

    monkeypatch.setattr(checkpoints, "save_task_state", stop_after_task_1)
    overrides = ("method=ebll", "method.warmup_epochs=1", *FAST_AE)
    with pytest.raises(Interrupted):
        run(*overrides)
    monkeypatch.undo()
    stopped_dir = run_dir.parent / "run1"
    state = torch.load(stopped_dir / checkpoints.LAST, weights_only=False)["state_dict"]
    assert {k for k in state if k.startswith("encoders.")} == {f"encoders.{i}.0.{p}" for i in (0, 1)
                                                               for p in ("weight", "bias")}
    run(*overrides, f"resume={stopped_dir}")
    resumed = _results(stopped_dir)
    for key in ("acc_taw", "acc_tag", "acc_tag_all", "ebll_autoencoders"):
        assert resumed[key] == results[key], key


def test_alexnet_guards_pool5_and_heads_read_fc7():
    torch.manual_seed(0)
    backbone = alexnet(weights=None, code_layer="pool5").eval()
    # AlexNetFeatures only reads torchvision's `features`, `avgpool` and `classifier` (with fc8 last)
    torchvision_model = SimpleNamespace(features=backbone.features, avgpool=backbone.avgpool,
                                        classifier=torch.nn.Sequential(*backbone.after_code, torch.nn.Linear(4096, 10)))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        f = backbone.code_input(x)
        assert f.shape == (2, 256 * 6 * 6) and backbone.out_dim == 4096
        assert torch.equal(backbone.from_code_input(f), backbone(x))
        fc7 = AlexNetFeatures(torchvision_model, code_layer="fc7").eval()
        assert fc7.code_input(x).shape == (2, 4096) and torch.equal(fc7(x), backbone(x))
    with pytest.raises(ConfigError, match="code_layer"):
        AlexNetFeatures(torchvision_model, code_layer="conv5")

    method = _method(backbone=backbone, code_size=10, ae_epochs=2, progress_bar=False)
    method.begin_task(_task(0, 0, 3))
    data = _Batches(torch.randn(32, 3, 64, 64), torch.randint(0, 3, (32,)))
    method.end_task(method.task, data)
    assert method.encoders[0][0].in_features == 256 * 6 * 6  # the autoencoder sits on pool5
    method.begin_task(_task(1, 3, 2))
    terms = method.loss_terms(data.x[:4], torch.tensor([3, 4, 3, 4]))
    assert terms["code"].item() == 0.0 and set(terms) == {"ce", "kd", "code"}  # eval mode: no dropout yet


def _image_folder(root, n_classes: int, per_class: int = 8):
    """`root/<class>/<image>.png`; class c is brighter than class c - 1, so the tiny tasks are learnable."""
    from PIL import Image

    rng = torch.Generator().manual_seed(n_classes)
    for c in range(n_classes):
        (root / f"class_{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = torch.randint(0, 60, (12, 12, 3), generator=rng, dtype=torch.uint8) + 60 * c
            Image.fromarray(pixels.numpy()).save(root / f"class_{c}" / f"{i}.png")
    return root


def test_paper_experiment_composes_and_every_compared_method_builds(tmp_path):
    from hydra.utils import instantiate

    from conftest import compose_config

    cfg = compose_config(tmp_path, "experiment=ebll_scenes_birds_flowers", "paths.scenes_root=/s",
                         "paths.birds_root=/b")
    assert cfg.backbone._target_.endswith(".alexnet") and cfg.backbone.code_layer == "pool5"
    assert cfg.backbone.weights == "IMAGENET1K_V1" and cfg.method._target_.endswith(".EBLL")
    assert list(cfg.scenario.datasets) == ["scenes", "birds", "flowers102"]
    assert dict(cfg.scenario.roots) == {"scenes": "/s", "birds": "/b"}
    assert (cfg.scenario.train_resize, cfg.scenario.image_size, cfg.scenario.flip) == (256, 224, True)
    # the paper's comparison, one sweep: method name -> (module, what must hold of the built method)
    compared = {"ebll": ("ebll", lambda m: m.kd_scope == "per_head"), "lwf": ("lwf", lambda m: m.kd_scope == "per_head"),
                "finetune": ("finetune", lambda m: True),
                "feature_extraction": ("linear", lambda m: m.norm_weight == 0 and m.patience == 0 and not m.keep_best),
                "joint_multihead": ("joint", lambda m: m.multi_head and not m.reinit)}
    for name, (module, holds) in compared.items():
        cfg = compose_config(tmp_path, "experiment=ebll_scenes_birds_flowers", f"method={name}")
        backbone = mlp(in_channels=1, image_size=8)
        backbone.weights = "IMAGENET1K_V1"  # stands for the pretrained AlexNet the experiment loads
        method = instantiate(cfg.method, backbone=backbone, optimizer=instantiate(cfg.optimizer),
                             scheduler=instantiate(cfg.scheduler), epochs=cfg.epochs, _convert_="object")
        assert type(method).__module__ == f"lifelong.methods.{module}" and holds(method), name
    assert compose_config(tmp_path, "method=lwf").method.kd_scope == "concat"  # FACIL's form elsewhere


def test_end_to_end_dataset_sequence(run, tmp_path):
    """The paper's experiment file on three tiny image-folder datasets (a small convnet for speed)."""
    roots = {name: _image_folder(tmp_path / name, k) for name, k in (("scenes", 3), ("birds", 2), ("flowers", 2))}
    summary, run_dir = run(
        "experiment=ebll_scenes_birds_flowers", f"paths.scenes_root={roots['scenes']}",
        f"paths.birds_root={roots['birds']}", "scenario.datasets=[scenes,birds,flowers]",
        f"+scenario.roots.flowers={roots['flowers']}", "scenario.image_size=16", "scenario.train_resize=20",
        "backbone=convnet",
        "epochs=1", "method.warmup_epochs=0", "batch_size=8", "num_workers=0", "trainer.limit_train_batches=2",
        "logger=none", "trainer.enable_progress_bar=false", *FAST_AE, tiny=False)
    results = _results(run_dir)
    assert results["tasks_done"] == 3 and results["task_sizes"] == [3, 2, 2]
    assert [len(row) for row in results["acc_taw"]] == [3, 3, 3]
    assert [a["in_features"] for a in results["ebll_autoencoders"]] == [128, 128, 128]  # convnet's pooled feature
    assert 0.0 <= summary["final_avg_acc_taw"] <= 1.0
