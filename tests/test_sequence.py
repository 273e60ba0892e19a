"""Dataset-sequence scenarios on tiny files written here: image folders and torchvision's formats."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import compose_config
from lifelong.data.sequence import TORCHVISION, Prepared, dataset_sequence
from lifelong.errors import ConfigError, DatasetNotFound


def _image(rng, c: int, size: int = 10) -> Image.Image:
    """Class c is brighter than class c - 1, so a model can learn the tiny tasks."""
    return Image.fromarray((rng.integers(0, 50, (size, size, 3)) + 50 * c).astype(np.uint8))


def write_folder(root: Path, n_classes: int, per_class: int, splits=("",), seed: int = 0, ext: str = "png") -> Path:
    rng = np.random.default_rng(seed)
    for split in splits:
        for c in range(n_classes):
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                _image(rng, c).save(folder / f"{i}.{ext}")
    return root


def write_svhn(root: Path, n: int = 12) -> None:
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    (root / "svhn").mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        labels = np.arange(n) % 3 + 1  # SVHN labels are 1..10; torchvision maps 10 to 0
        images = rng.integers(0, 255, (32, 32, 3, n)).astype(np.uint8)  # the .mat layout: H, W, C, N
        savemat(root / "svhn" / f"{split}_32x32.mat", {"X": images, "y": labels.reshape(-1, 1)})


def write_mnist(root: Path, n: int = 12) -> None:
    rng = np.random.default_rng(0)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix in ("train", "t10k"):
        images = rng.integers(0, 255, (n, 28, 28)).astype(np.uint8)
        labels = (np.arange(n) % 4).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())


def write_eurosat(root: Path) -> None:
    write_folder(root / "eurosat" / "2750", 2, 10, ext="jpg")


def write_dtd(root: Path) -> None:
    base = root / "dtd" / "dtd"
    write_folder(base / "images", 3, 6, ext="jpg")
    (base / "labels").mkdir(parents=True)
    for split, ids in (("train", range(0, 2)), ("val", range(2, 4)), ("test", range(4, 6))):
        lines = [f"class_{c}/{i}.jpg" for c in range(3) for i in ids]
        (base / "labels" / f"{split}1.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture
def svhn_no_md5(monkeypatch):
    """Our tiny .mat files cannot have the real files' md5."""
    from torchvision.datasets import SVHN

    monkeypatch.setattr(SVHN, "_check_integrity", lambda self: Path(self.root, self.filename).is_file())


def test_image_folders_become_tasks_with_contiguous_labels(tmp_path):
    write_folder(tmp_path / "alpha", 3, 10)  # flat: test split drawn with split_seed
    write_folder(tmp_path / "beta", 2, 6, splits=("train", "val", "test"), seed=1)
    scenario = dataset_sequence(datasets=["alpha", "beta"], folders_root=str(tmp_path), image_size=16, seed=0,
                                val_fraction=0.2, test_fraction=0.3)
    assert [t.name for t in scenario] == ["alpha", "beta"]
    assert scenario.task_sizes == [3, 2] and [t.offset for t in scenario] == [0, 3]
    alpha, beta = scenario.tasks
    # flat folder: 30 images -> 9 test (3 per class), then round(0.2 * 7) = 1 of each class's 7 for validation
    assert (len(alpha.train), len(alpha.val), len(alpha.test)) == (18, 3, 9)
    assert (len(beta.train), len(beta.val), len(beta.test)) == (12, 12, 12)  # the folder's own val/
    for task in scenario:
        for split in (task.train, task.val, task.test):
            labels = {int(split[i][1]) for i in range(len(split))}
            assert labels == set(task.class_range)
    x, y = beta.test[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and x.min() < 0  # resized and normalised
    assert isinstance(alpha.augment, Prepared) and torch.equal(alpha.augment(x, train=True), x)
    # no image is in two splits
    idx = {s: set(getattr(alpha, s).indices.tolist()) for s in ("train", "val", "test")}
    assert not (idx["train"] & idx["val"]) and not (idx["train"] & idx["test"]) and not (idx["val"] & idx["test"])


def test_same_seed_same_splits_and_split_seed_fixes_test(tmp_path):
    write_folder(tmp_path / "alpha", 2, 10)
    make = lambda seed: dataset_sequence(datasets=["alpha"], folders_root=str(tmp_path), image_size=8, seed=seed)
    a, b, c = make(0).tasks[0], make(0).tasks[0], make(5).tasks[0]
    assert np.array_equal(a.val.indices, b.val.indices) and np.array_equal(a.train.indices, b.train.indices)
    assert np.array_equal(a.test.indices, c.test.indices)  # the test split does not follow the run seed


def test_torchvision_formats(tmp_path, svhn_no_md5):
    write_svhn(tmp_path)
    write_mnist(tmp_path)
    write_eurosat(tmp_path)
    write_dtd(tmp_path)
    write_folder(tmp_path / "mine", 2, 5)
    scenario = dataset_sequence(data_root=str(tmp_path), datasets=["svhn", "mnist", "eurosat", "dtd", "mine"],
                                roots={"mine": str(tmp_path / "mine")}, image_size=12, download=False,
                                val_fraction=0.25, test_fraction=0.2)
    assert scenario.task_sizes == [3, 4, 2, 3, 2]
    assert [t.offset for t in scenario] == [0, 3, 7, 9, 12] and scenario.class_order == list(range(14))
    svhn, mnist, eurosat, dtd, _ = scenario.tasks
    assert svhn.classes == [1, 2, 3]  # labels 1..3 of the .mat file, remapped to 0..2
    assert {int(svhn.test[i][1]) for i in range(len(svhn.test))} == {0, 1, 2}
    assert (len(svhn.train) + len(svhn.val), len(svhn.test)) == (12, 12)
    x, y = mnist.train[0]
    assert x.shape == (3, 12, 12) and 3 <= y < 7  # grayscale made RGB
    assert (len(eurosat.train) + len(eurosat.val), len(eurosat.test)) == (16, 4)  # 20 images, 20 % test
    assert (len(dtd.train), len(dtd.val), len(dtd.test)) == (6, 6, 6)  # DTD's own val split
    assert {int(dtd.val[i][1]) for i in range(6)} == {9, 10, 11}


def test_missing_data_names_the_dataset_and_where(tmp_path):
    with pytest.raises(DatasetNotFound, match=r"'dtd'.*" + str(tmp_path)):
        dataset_sequence(data_root=str(tmp_path), datasets=["dtd"], download=False)
    with pytest.raises(DatasetNotFound, match=r"'cub200'.*birds"):
        dataset_sequence(datasets=["cub200"], roots={"cub200": str(tmp_path / "birds")})
    with pytest.raises(ConfigError, match="scenario.roots.cub200"):
        dataset_sequence(datasets=["cub200"])
    with pytest.raises(ConfigError, match="twice"):
        dataset_sequence(datasets=["mnist", "mnist"])
    with pytest.raises(ConfigError, match="source="):
        dataset_sequence(datasets=[{"name": "x", "source": "imagenet"}])


def test_split_folders_must_agree_on_classes(tmp_path):
    write_folder(tmp_path / "odd", 2, 3, splits=("train",))
    write_folder(tmp_path / "odd", 3, 3, splits=("test",))
    with pytest.raises(DatasetNotFound, match="class folders"):
        dataset_sequence(datasets=[{"name": "odd", "root": str(tmp_path / "odd")}])


def test_config_group_feeds_rgb_to_the_backbone(tmp_path):
    cfg = compose_config(tmp_path, "scenario=dataset_sequence", "backbone=resnet50")
    assert cfg.dataset.channels == 3 and cfg.backbone.in_channels == 3
    assert cfg.dataset.image_size == cfg.scenario.image_size == 224
    assert set(cfg.scenario.datasets) <= set(TORCHVISION)


def test_skill_experiment_lists_the_53_tasks_in_the_official_order(tmp_path):
    cfg = compose_config(tmp_path, "experiment=clr_skill", "paths.skill_root=/data/skill")
    entries = [dict(entry) for entry in cfg.scenario.datasets]
    names = [entry["name"] for entry in entries]
    assert len(names) == len(set(names)) == 53 and {entry["source"] for entry in entries} == {"skill"}
    assert names[:4] == ["scenes", "birds", "wikiart", "DescribableTextures"] and names[-1] == "deepvp_shell"
    assert [entry["id"] for entry in entries[:4]] == [1, 2, 17, 18] and entries[-1]["id"] == 107  # stat.csv newid
    assert cfg.scenario.skill.root == "/data/skill" and cfg.method._target_.endswith("CLR")
    assert (cfg.optimizer.lr, list(cfg.scheduler.milestones), cfg.epochs, cfg.batch_size) == (1e-3, [20, 40], 60, 32)
    cfg = compose_config(tmp_path, "experiment=clr_skill")
    with pytest.raises(ConfigError, match="paths.skill_root"):
        dataset_sequence(datasets=list(cfg.scenario.datasets), skill=cfg.scenario.skill)


def test_baselines_share_the_sequence_experiment(tmp_path):
    for method in ("clr", "linear", "finetune", "lwf", "ewc"):
        cfg = compose_config(tmp_path, "experiment=clr_dataset_sequence", f"method={method}")
        assert cfg.scenario._target_.endswith("dataset_sequence") and cfg.backbone.weights == "IMAGENET1K_V1"
        assert cfg.backbone.in_channels == 3 and cfg.epochs == 60
