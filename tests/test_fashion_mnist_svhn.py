"""Fashion-MNIST and SVHN: the loaders on tiny files in the real formats, where Fashion-MNIST is looked for,
the error without files, and one real end-to-end run on Debian's copy (`apt-get install dataset-fashion-mnist`)."""
import gzip
import struct

import numpy as np
import pytest
import torch

from lifelong.data import datasets
from lifelong.data.datasets import DEBIAN_FASHION_MNIST, load_dataset, read_idx
from lifelong.errors import ConfigError, DatasetNotFound


def write_fashion_mnist(folder, n_train=12, n_test=6, seed=0):
    """The four gzipped idx files as distributed (the same names and format as MNIST's)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    written = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes()))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(struct.pack(">II", 2049, n) + labels.tobytes()))
        written[prefix] = images, labels
    return written


@pytest.fixture
def no_debian_copy(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", tmp_path / "not-installed")


def test_gzipped_idx_files_in_data_root_are_read_as_uint8(tmp_path, no_debian_copy):
    written = write_fashion_mnist(tmp_path / "FashionMNIST" / "raw")
    train, test = load_dataset("fashion_mnist", tmp_path, download=False)
    assert train.x.shape == (12, 1, 28, 28) and train.x.dtype == torch.uint8 and test.x.shape == (6, 1, 28, 28)
    images, labels = written["t10k"]
    assert torch.equal(test.x[:, 0], torch.from_numpy(images)) and test.y.tolist() == labels.tolist()
    assert train.class_names[9] == "Ankle boot"


def test_debian_location_is_used_when_data_root_has_no_copy(tmp_path, monkeypatch):
    debian = tmp_path / "usr-share-datasets-fashion-mnist"
    written = write_fashion_mnist(debian, n_train=8, n_test=4)
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", debian)
    train, _ = load_dataset("fashion_mnist", tmp_path / "empty", download=False)
    assert train.y.tolist() == written["train"][1].tolist()
    # A copy under data_root wins over Debian's.
    write_fashion_mnist(tmp_path / "root" / "fashion-mnist", n_train=5, n_test=3)
    assert len(load_dataset("fashion_mnist", tmp_path / "root", download=False)[0]) == 5


def test_missing_offline_names_both_ways_to_get_it(tmp_path, no_debian_copy):
    with pytest.raises(DatasetNotFound) as error:
        load_dataset("fashion_mnist", tmp_path / "nowhere", download=False)
    message = str(error.value)
    assert "apt-get install dataset-fashion-mnist" in message and "paths.data_root" in message
    assert str(tmp_path / "nowhere" / "FashionMNIST" / "raw") in message and "\n" not in message


def test_a_file_that_is_not_idx_is_refused(tmp_path):
    (tmp_path / "x.gz").write_bytes(gzip.compress(b"not an idx file"))
    with pytest.raises(ValueError, match="not an idx file"):
        read_idx(tmp_path / "x.gz")


@pytest.mark.slow
@pytest.mark.skipif(not (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file(),
                    reason="needs `apt-get install dataset-fashion-mnist` (make test installs it when it can)")
def test_real_fashion_mnist_end_to_end(run, tmp_path):
    """The benchmark experiment on the real 70,000 images, cut to a few batches per task."""
    train, test = load_dataset("fashion_mnist", tmp_path / "empty", download=False)
    assert (len(train), len(test)) == (60000, 10000) and train.y.bincount().tolist() == [6000] * 10
    summary, _ = run("experiment=fmnist_benchmark", "method=finetune", "epochs=1", "trainer.limit_train_batches=15",
                     "logger=none", "trainer.enable_progress_bar=false", f"paths.data_root={tmp_path / 'empty'}",
                     tiny=False)
    assert summary["tasks_done"] == 5
    # Each task's own two classes are learnt (real images: far above the 50% of chance) ...
    assert min(summary["acc_taw"][u][u] for u in range(5)) > 0.8
    # ... and fine-tuning forgets them without a task id: the class-incremental signature.
    assert summary["acc_tag"][4][0] < 0.5 < summary["acc_tag"][0][0]


def test_svhn_loader_reads_the_mat_files(tmp_path, monkeypatch):
    """torchvision's SVHN on tiny train/test_32x32.mat files (X: [32, 32, 3, N], y: 1..10 with 10 for 0)."""
    import scipy.io
    import torchvision.datasets.svhn as svhn

    monkeypatch.setattr(svhn, "check_integrity", lambda path, md5=None: __import__("os").path.isfile(path))
    rng = np.random.default_rng(0)
    written = {}
    for split, n in (("train", 7), ("test", 3)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = rng.integers(1, 11, (n, 1)).astype(np.uint8)
        scipy.io.savemat(tmp_path / f"{split}_32x32.mat", {"X": x, "y": y})
        written[split] = x, y
    train, test = load_dataset("svhn", tmp_path, download=False)
    assert train.x.shape == (7, 3, 32, 32) and train.x.dtype == torch.uint8 and len(test) == 3
    x, y = written["test"]
    assert test.y.tolist() == [int(v) % 10 for v in y[:, 0]]
    assert torch.equal(test.x[1], torch.from_numpy(x[..., 1]).permute(2, 0, 1))  # channels first, same pixels


def test_pad_adds_a_black_border_and_names_the_image_size_to_set(tmp_path, no_debian_copy):
    """`dataset.pad=2` (van de Ven et al.'s MNIST32): 28x28 -> 32x32, pixels unchanged inside, zeros around."""
    written = write_fashion_mnist(tmp_path / "FashionMNIST" / "raw")
    options = {"name": "fashion_mnist", "pad": 2, "image_size": 32}
    train, test = load_dataset("fashion_mnist", tmp_path, download=False, options=options)
    assert train.x.shape == (12, 1, 32, 32) and test.x.shape == (6, 1, 32, 32) and train.x.dtype == torch.uint8
    images, labels = written["train"]
    assert torch.equal(train.x[:, 0, 2:30, 2:30], torch.from_numpy(images)) and train.y.tolist() == labels.tolist()
    border = train.x.clone()
    border[:, :, 2:30, 2:30] = 0
    assert border.sum() == 0
    with pytest.raises(ConfigError, match=r"dataset.pad=2 makes 32x32 images but dataset.image_size=28: "
                                          r"add dataset.image_size=32"):
        load_dataset("fashion_mnist", tmp_path, download=False, options=dict(options, image_size=28))


def test_dgr_runs_on_padded_fashion_mnist_through_the_runner(run, tmp_path, no_debian_copy):
    """DGR's VAE needs a side divisible by 8: 28 px is refused, `dataset.pad=2 dataset.image_size=32` runs."""
    write_fashion_mnist(tmp_path / "data" / "FashionMNIST" / "raw", n_train=40, n_test=20)
    common = ("dataset=fashion_mnist", f"paths.data_root={tmp_path / 'data'}", "method=dgr", "method.z_size=32",
              "scenario.n_tasks=2", "scenario.nc_first_task=null")
    with pytest.raises(Exception, match="dataset.pad=2 dataset.image_size=32"):  # Hydra wraps the ConfigError
        run(*common)
    summary, _ = run(*common, "dataset.pad=2", "dataset.image_size=32")
    assert summary["tasks_done"] == 2 and len(summary["acc_tag"][1]) == 2
