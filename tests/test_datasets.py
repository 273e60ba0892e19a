"""The real torchvision loaders on tiny files written here in the real on-disk formats."""
import pickle
import struct

import numpy as np
import pytest
import torch

from lifelong.data.datasets import load_dataset
from lifelong.errors import DatasetNotFound


def write_cifar100(root, n_train=30, n_test=10, seed=0):
    """The python-pickle layout of cifar-100-python: train, test and meta files.

    The real files are Python 2 pickles whose str keys torchvision reads back with
    encoding="latin1" as Python 3 str; plain str keys are what that decoding yields.
    """
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n in (("train", n_train), ("test", n_test)):
        fine = rng.integers(0, 100, n).tolist()
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        entry = {"filenames": [f"{i}.png" for i in range(n)], "batch_label": name,
                 "fine_labels": fine, "coarse_labels": [f // 5 for f in fine], "data": data}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"class{i}" for i in range(100)],
                     "coarse_label_names": [f"super{i}" for i in range(20)]}, f)
    return folder


def write_mnist(root, n_train=12, n_test=6, seed=0):
    """The idx format of the MNIST raw files (big-endian header, then uint8 pixels or labels)."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())
    return images, labels


def test_cifar100_loader_reads_the_real_format(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar

    # Our tiny files cannot match torchvision's md5 list of the real archive; the reading is real.
    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: __import__("os").path.isfile(path))
    folder = write_cifar100(tmp_path)
    train, test = load_dataset("cifar100", tmp_path, download=False)
    assert train.x.shape == (30, 3, 32, 32) and train.x.dtype == torch.uint8
    assert test.x.shape == (10, 3, 32, 32)
    entry = pickle.load(open(folder / "train", "rb"))
    first = torch.from_numpy(entry["data"][0].reshape(3, 32, 32))
    assert torch.equal(train.x[0], first)  # channels-first, same pixels
    assert train.y.tolist() == entry["fine_labels"]
    assert train.class_names[3] == "class3"


def test_mnist_loader_reads_the_idx_format(tmp_path):
    images, labels = write_mnist(tmp_path)
    train, test = load_dataset("mnist", tmp_path, download=False)
    assert train.x.shape == (12, 1, 28, 28) and test.x.shape == (6, 1, 28, 28)
    assert test.y.tolist() == labels.tolist()
    assert torch.equal(test.x[:, 0], torch.from_numpy(images))


def test_missing_files_offline_give_one_paragraph_saying_where_to_put_them(tmp_path):
    with pytest.raises(DatasetNotFound) as error:
        load_dataset("cifar100", tmp_path / "nowhere", download=False)
    message = str(error.value)
    assert "cifar-100-python" in message and str(tmp_path / "nowhere") in message
    assert "paths.data_root" in message and "\n" not in message


def test_digits_are_bundled_and_split_the_same_way_every_time():
    train, test = load_dataset("digits", "unused")
    again, _ = load_dataset("digits", "unused")
    assert train.x.shape[1:] == (1, 8, 8) and len(train) + len(test) == 1797
    assert torch.equal(train.x, again.x) and int(train.x.max()) == 255
    assert sorted(set(test.y.tolist())) == list(range(10))
