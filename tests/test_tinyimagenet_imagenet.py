"""TinyImageNet (in memory, decoded once and cached) and ImageNet / ImageNet-100 (file-backed): the loaders on
tiny files written in the real on-disk layouts, the cache, the errors, and one run of each through the runner."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from lifelong.data import imagenet, tinyimagenet
from lifelong.data.datasets import load_dataset
from lifelong.errors import ConfigError, DatasetNotFound

# Not in sorted order: class ids must follow the sorted wnids, not wnids.txt's order.
TINY_WNIDS = ["n09999999", "n01443537", "n04067472", "n02124075"]


def _jpeg(path, rng, size=(64, 64), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path, "JPEG")


def write_tinyimagenet(root, n_train=3, n_val=2, seed=0):
    """tiny-imagenet-200/ as distributed: wnids.txt, train/<wnid>/images/, val/images/ + val_annotations.txt."""
    rng = np.random.default_rng(seed)
    folder = root / "tiny-imagenet-200"
    folder.mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    for wnid in TINY_WNIDS:
        (folder / "train" / wnid).mkdir(parents=True, exist_ok=True)
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("")  # shipped beside images/, not an image
        for i in range(n_train):  # one grayscale image per class, as some of the real ones are
            _jpeg(folder / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", rng, mode="L" if i == 0 else "RGB")
    lines = []
    for k in range(n_val * len(TINY_WNIDS)):
        wnid = TINY_WNIDS[k % len(TINY_WNIDS)]
        _jpeg(folder / "val" / "images" / f"val_{k}.JPEG", rng)
        lines.append(f"val_{k}.JPEG\t{wnid}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return folder


def test_tinyimagenet_is_read_as_uint8_with_sorted_wnid_labels(tmp_path):
    folder = write_tinyimagenet(tmp_path)
    train, test = load_dataset("tinyimagenet", tmp_path)
    assert train.x.shape == (12, 3, 64, 64) and train.x.dtype == torch.uint8 and test.x.shape == (8, 3, 64, 64)
    assert train.class_names == sorted(TINY_WNIDS) and train.y.bincount().tolist() == [3, 3, 3, 3]
    # val_0 is annotated with n09999999, the last wnid in sorted order
    assert test.y[0].item() == 3 and test.y.bincount().tolist() == [2, 2, 2, 2]
    expected = np.array(Image.open(folder / "val" / "images" / "val_0.JPEG").convert("RGB"))
    assert torch.equal(test.x[0].permute(1, 2, 0), torch.from_numpy(expected))
    gray = train.x[train.y == 1][0]  # n01443537_0 is grayscale: three equal channels
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])


def test_tinyimagenet_cache_is_written_once_and_loads_the_same(tmp_path, monkeypatch):
    folder = write_tinyimagenet(tmp_path)
    first = load_dataset("tinyimagenet", tmp_path)
    cache = folder / tinyimagenet.CACHE
    assert cache.is_file() and not list(folder.glob(".tmp-*"))  # renamed into place, no temporary left

    def no_decoding(*_, **__):
        raise AssertionError("decoded again although the cache is valid")

    monkeypatch.setattr(tinyimagenet, "decode_all", no_decoding)
    second = load_dataset("tinyimagenet", tmp_path)
    for a, b in zip(first, second):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and a.class_names == b.class_names
    # Another file list (an image added) invalidates the cache: it is decoded again.
    _jpeg(folder / "train" / TINY_WNIDS[0] / "images" / "extra.JPEG", np.random.default_rng(1))
    with pytest.raises(AssertionError, match="decoded again"):
        load_dataset("tinyimagenet", tmp_path)
    monkeypatch.undo()
    assert len(load_dataset("tinyimagenet", tmp_path)[0]) == 13
    # A truncated cache is ignored and rewritten.
    cache.write_bytes(cache.read_bytes()[:100])
    assert len(load_dataset("tinyimagenet", tmp_path)[0]) == 13 and len(np.load(cache)["train_y"]) == 13


def test_tinyimagenet_missing_says_where_and_the_url(tmp_path):
    with pytest.raises(DatasetNotFound) as error:
        load_dataset("tinyimagenet", tmp_path / "nowhere")
    message = str(error.value)
    assert tinyimagenet.URL in message and str(tmp_path / "nowhere" / "tiny-imagenet-200") in message
    folder = write_tinyimagenet(tmp_path / "partial")
    (folder / "val" / "val_annotations.txt").unlink()
    with pytest.raises(DatasetNotFound, match="val_annotations.txt"):
        load_dataset("tinyimagenet", tmp_path / "partial")


def test_mind_tinyimagenet_end_to_end(run, tmp_path):
    """experiment=mind_tinyimagenet on the fake folder: the 256-d gated ResNet-32, MIND's two phases per task."""
    write_tinyimagenet(tmp_path / "data")
    summary, _ = run("experiment=mind_tinyimagenet", f"paths.data_root={tmp_path / 'data'}", "scenario.n_tasks=2",
                     "dataset.n_classes=4", "epochs=1", "method.teacher_epochs=1", "method.distill_epochs=1",
                     "batch_size=6", "eval.batch_size=8", "logger=none", "trainer.enable_progress_bar=false",
                     "torch_threads=1", tiny=False)
    assert summary["tasks_done"] == 2 and summary["task_sizes"] == [2, 2]
    assert len(summary["acc_tag"][1]) == 2 and all(0 <= a <= 1 for a in summary["acc_tag"][1])
    # MIND's order: np.random.seed(seed); np.random.shuffle(arange(n)) (seed 0)
    assert summary["class_order"] == np.random.RandomState(0).permutation(4).tolist()


def test_gated_resnet32_tinyimagenet_width_has_256_features():
    from lifelong.models.gated import gated_resnet32

    net = gated_resnet32(feature_grid=2)
    assert net.out_dim == 256 and net(torch.zeros(2, 3, 64, 64)).shape == (2, 256)
    assert gated_resnet32().out_dim == 64


# ------------------------------------------------------------------------------------------------ ImageNet
def write_imagenet(root, wnids, n_train=3, n_val=1, seed=0):
    """The ImageNet folder layout: train/<wnid>/*.JPEG, val/<wnid>/*.JPEG (images of various sizes)."""
    rng = np.random.default_rng(seed)
    for wnid in wnids:
        for i in range(n_train):
            _jpeg(root / "train" / wnid / f"{wnid}_{i}.JPEG", rng, size=(int(rng.integers(20, 48)), 24))
        for i in range(n_val):
            _jpeg(root / "val" / wnid / f"ILSVRC2012_val_{wnid}_{i}.JPEG", rng, size=(30, int(rng.integers(20, 48))))
    return root


def test_imagenet_files_are_listed_not_decoded_and_transformed_per_sample(tmp_path):
    wnids = ["n02000000", "n01000000", "n03000000"]
    write_imagenet(tmp_path / "imagenet", wnids)
    (tmp_path / "imagenet" / "train" / "README.txt").write_text("not a class")
    config = {"name": "imagenet", "n_classes": 3, "image_size": 32, "resize": 36}
    train, test = load_dataset("imagenet", tmp_path, options=config)
    assert isinstance(train, imagenet.ImageFiles) and (len(train), len(test)) == (9, 3)
    assert train.class_names == sorted(wnids) and train.y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    x, y = test[2]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 2
    # An explicit list keeps its order (class id = position) and may name a subset.
    train, _ = load_dataset("imagenet", tmp_path, options={**config, "n_classes": 2, "classes": ["n03000000", "n01000000"]})
    assert len(train) == 6 and "n03000000" in train.paths[0] and train.y.tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(ConfigError, match="dataset.n_classes=3"):
        load_dataset("imagenet", tmp_path, options={**config, "classes": ["n03000000"]})


def test_imagenet_missing_or_incomplete_names_the_layout(tmp_path):
    with pytest.raises(DatasetNotFound, match="train/<wnid>"):
        load_dataset("imagenet", tmp_path, options={"name": "imagenet"})
    write_imagenet(tmp_path / "imagenet", ["n01000000"])
    with pytest.raises(DatasetNotFound, match="n02000000"):
        load_dataset("imagenet", tmp_path, options={"name": "imagenet", "classes": ["n01000000", "n02000000"]})


def test_imagenet100_is_lucirs_seed_1993_draw():
    """The shipped list is np.random.seed(1993); np.random.choice(sorted wnids, 100, replace=False)
    (LUCIR gen_imagenet_subset.py); checked here on its invariants: 100 distinct sorted ImageNet wnids."""
    wnids = imagenet.named_subset("imagenet100")
    assert len(wnids) == len(set(wnids)) == 100 and wnids == sorted(wnids)
    assert all(w.startswith("n") and len(w) == 9 for w in wnids)
    assert wnids[:3] == ["n01514668", "n01531178", "n01537544"]
    assert len(set(wnids) & set(imagenet.named_subset("podnet100"))) == 9


def test_imagenet100_end_to_end_with_decoding_in_workers(run, tmp_path):
    """dataset=imagenet100 reads its 100 classes out of a full ImageNet folder (extra classes are ignored),
    in LUCIR/PODNet's icarl1993 class order, decoded in a DataLoader worker."""
    wnids = imagenet.named_subset("imagenet100")
    write_imagenet(tmp_path / "imagenet", wnids + ["n00000001"], n_train=2, n_val=1)
    summary, _ = run("dataset=imagenet100", f"paths.data_root={tmp_path}", "dataset.image_size=16", "dataset.resize=18",
                     "scenario.n_tasks=2", "scenario.class_order=icarl1993", "backbone=convnet", "method=finetune",
                     "num_workers=1", "batch_size=50", "eval.batch_size=100", "epochs=1", "logger=none",
                     "trainer.enable_progress_bar=false", "torch_threads=1", tiny=False)
    assert summary["tasks_done"] == 2 and summary["task_sizes"] == [50, 50]
    assert summary["task_classes"][0][:5] == [68, 56, 78, 8, 23]  # the iCaRL 1993 order over the sorted wnids


def test_abd_imagenet_end_to_end(run, tmp_path):
    """experiment=abd_imagenet on a fake ImageNet folder: ABD (generator for 32 px here) on file-backed data."""
    wnids = ["n01000000", "n02000000", "n03000000", "n04000000"]
    write_imagenet(tmp_path / "imagenet", wnids, n_train=4, n_val=2)
    summary, out = run("experiment=abd_imagenet", f"dataset.root={tmp_path / 'imagenet'}", "dataset.n_classes=4",
                       f"dataset.classes=[{','.join(wnids)}]", "dataset.image_size=32", "dataset.resize=36",
                       "scenario.n_tasks=2", "epochs=1", "batch_size=8", "eval.batch_size=8", "num_workers=0",
                       "method.synthesis_iters=2", "method.synthesis_batch_size=4", "logger=none",
                       "trainer.enable_progress_bar=false", "torch_threads=1", tiny=False)
    assert summary["tasks_done"] == 2 and summary["task_classes"] == [[0, 1], [2, 3]]
    results = json.loads((out / "results.json").read_text())
    assert len(results["acc_tag_all"]) == 2


def test_exemplar_memory_on_file_backed_data_is_refused_before_training(run, tmp_path, monkeypatch):
    from lifelong.methods.base import ContinualMethod

    write_imagenet(tmp_path / "imagenet", ["n01000000", "n02000000"], n_train=2)
    monkeypatch.setattr(ContinualMethod, "fit_task", lambda *a: pytest.fail("trained before refusing"))
    with pytest.raises(ConfigError, match="memory=none"):
        run("dataset=imagenet", f"paths.data_root={tmp_path}", "dataset.n_classes=2", "scenario.n_tasks=2",
            "backbone=convnet", "method=finetune", "memory=random", "logger=none", tiny=False)
