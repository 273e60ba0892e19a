"""Datasets held in memory as uint8 image tensors.

Every loader returns the train and test `ImageSet` of one dataset: images `x` as uint8
`[N, C, H, W]` and labels `y` as int64, in the dataset's own class ids. Augmentation happens later,
on whole batches on the device (`lifelong.data.transforms`), so nothing here is per-image PIL work.

The real files are read by torchvision's dataset classes (CIFAR-10/100, MNIST), which download
them when the network allows; scikit-learn's bundled handwritten digits need no download at all.
Fashion-MNIST's idx files are read directly wherever they are (data_root or Debian's package
`dataset-fashion-mnist`), since copies from elsewhere do not carry torchvision's MD5s.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from lifelong.errors import ConfigError, DatasetNotFound


@dataclass
class ImageSet:
    """Images as uint8 `[N, C, H, W]` and integer labels `[N]`."""

    x: torch.Tensor
    y: torch.Tensor
    class_names: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.x.dtype != torch.uint8 or self.x.dim() != 4:
            raise ValueError(f"ImageSet.x must be uint8 [N, C, H, W], got {self.x.dtype} {tuple(self.x.shape)}")
        if len(self.x) != len(self.y):
            raise ValueError(f"ImageSet has {len(self.x)} images but {len(self.y)} labels")
        self.y = self.y.long()

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: torch.Tensor) -> "ImageSet":
        return ImageSet(self.x[index], self.y[index], self.class_names)


def _hwc_to_chw(images: np.ndarray) -> torch.Tensor:
    images = torch.as_tensor(np.ascontiguousarray(images))
    if images.dim() == 3:  # grayscale [N, H, W]
        images = images.unsqueeze(1)
    else:  # [N, H, W, C]
        images = images.permute(0, 3, 1, 2)
    return images.contiguous().to(torch.uint8)


def _missing(name: str, root: Path, expected: str, url: str, reason: BaseException) -> DatasetNotFound:
    return DatasetNotFound(
        f"{name} is not in {root} and could not be downloaded ({type(reason).__name__}: {reason}). "
        f"On a machine with network access, `python train.py dataset={name.lower()}` downloads it there; "
        f"offline, fetch {url} and unpack it so that {root / expected} exists, or point "
        f"`paths.data_root=<dir>` (or the LIFELONG_DATA environment variable) at a folder that holds it."
    )


def _torchvision(cls, name: str, root: Path, download: bool, expected: str, url: str, **kwargs):
    try:
        train = cls(str(root), train=True, download=download, **kwargs)
        test = cls(str(root), train=False, download=download, **kwargs)
    except Exception as error:  # torchvision raises RuntimeError or URLError: both mean "no files"
        raise _missing(name, root, expected, url, error) from error
    return train, test


def load_cifar(root: Path, download: bool = True, n_classes: int = 100) -> tuple[ImageSet, ImageSet]:
    from torchvision import datasets

    if n_classes == 100:
        cls, name, folder = datasets.CIFAR100, "CIFAR100", "cifar-100-python"
        url = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    else:
        cls, name, folder = datasets.CIFAR10, "CIFAR10", "cifar-10-batches-py"
        url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    train, test = _torchvision(cls, name, root, download, folder, url)
    return tuple(
        ImageSet(_hwc_to_chw(split.data), torch.tensor(split.targets), list(split.classes))
        for split in (train, test)
    )


def load_cifar10(root: Path, download: bool = True) -> tuple[ImageSet, ImageSet]:
    return load_cifar(root, download, n_classes=10)


def load_mnist(root: Path, download: bool = True) -> tuple[ImageSet, ImageSet]:
    from torchvision import datasets

    train, test = _torchvision(
        datasets.MNIST, "MNIST", root, download, "MNIST/raw/train-images-idx3-ubyte",
        "https://ossci-datasets.s3.amazonaws.com/mnist/ (the four *-ubyte.gz files)",
    )
    return tuple(
        ImageSet(split.data.unsqueeze(1).to(torch.uint8), split.targets.clone(), list(split.classes))
        for split in (train, test)
    )


def load_svhn(root: Path, download: bool = True) -> tuple[ImageSet, ImageSet]:
    """SVHN cropped digits (Netzer et al., 2011) through torchvision: 73,257 train / 26,032 test, 32x32
    RGB, labels 0-9 (torchvision maps the files' label 10 to 0); the `extra` split is not used."""
    from torchvision import datasets

    try:
        splits = [datasets.SVHN(str(root), split=split, download=download) for split in ("train", "test")]
    except Exception as error:  # torchvision raises RuntimeError or URLError: both mean "no files"
        raise _missing("SVHN", root, "train_32x32.mat", "http://ufldl.stanford.edu/housenumbers/ "
                       "(train_32x32.mat and test_32x32.mat)", error) from error
    names = [str(c) for c in range(10)]
    return tuple(ImageSet(torch.as_tensor(s.data).contiguous(), torch.as_tensor(s.labels), names) for s in splits)


# `apt-get install dataset-fashion-mnist` (Debian/Ubuntu) puts the four idx .gz files here.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                       "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot"]


def read_idx(path: Path) -> np.ndarray:
    """One idx file (plain or .gz): a big-endian header (0, 0, dtype 0x08 = uint8, n dims, sizes), then data."""
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an idx file of uint8 values")
    n_dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(n_dims))
    values = np.frombuffer(bytearray(data), dtype=np.uint8, offset=4 + 4 * n_dims)  # writable
    if values.size != int(np.prod(shape)):
        raise ValueError(f"{path} holds {values.size} values but its header says {shape}")
    return values.reshape(shape)


def _idx_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def fashion_mnist_folders(root: Path) -> list[Path]:
    """Where the idx files are looked for, in order: torchvision's layout and a `fashion-mnist/`
    folder under `root` (not `root` itself: MNIST's files have the same names), then Debian's."""
    return [root / "FashionMNIST" / "raw", root / "fashion-mnist", DEBIAN_FASHION_MNIST]


def load_fashion_mnist(root: Path, download: bool = True) -> tuple[ImageSet, ImageSet]:
    """Fashion-MNIST (Xiao et al., 2017): 60,000 + 10,000 grayscale 28x28 images, 10 classes.

    The idx files are read from the first folder of `fashion_mnist_folders(root)` that holds all
    four; without one, torchvision's `FashionMNIST` downloads them into `root` (MD5-checked) when
    `download` is on.
    """
    for folder in fashion_mnist_folders(root):
        files = {split: [_idx_file(folder, stem) for stem in stems] for split, stems in FASHION_MNIST_FILES.items()}
        if all(f is not None for pair in files.values() for f in pair):
            return tuple(
                ImageSet(_hwc_to_chw(read_idx(images)), torch.as_tensor(read_idx(labels).astype(np.int64)),
                         list(FASHION_MNIST_CLASSES))
                for images, labels in files.values()
            )
    from torchvision import datasets

    try:
        if not download:
            raise FileNotFoundError("download=false")
        splits = [datasets.FashionMNIST(str(root), train=train, download=True) for train in (True, False)]
    except Exception as error:
        raise DatasetNotFound(
            f"Fashion-MNIST is not in {root} nor in {DEBIAN_FASHION_MNIST} and could not be downloaded "
            f"({type(error).__name__}: {error}). Either install Debian's copy (`apt-get install dataset-fashion-mnist`, "
            f"found in {DEBIAN_FASHION_MNIST} automatically), or download it: with network access, "
            f"`python train.py dataset=fashion_mnist` fetches it into {root / 'FashionMNIST' / 'raw'}; offline, put "
            f"the four *-ubyte.gz files of https://github.com/zalandoresearch/fashion-mnist there, or point "
            f"`paths.data_root=<dir>` (or LIFELONG_DATA) at a folder that holds them."
        ) from error
    return tuple(ImageSet(s.data.unsqueeze(1).to(torch.uint8), s.targets.clone(), list(s.classes)) for s in splits)


def load_digits(root: Path | None = None, download: bool = False, test_fraction: float = 0.3):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images), split once with a fixed seed.

    The dataset has no official test split; a stratified 70/30 split with seed 0 makes it the same
    for every run, independent of the experiment seed.
    """
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)  # values 0..16 -> 0..255
    idx_train, idx_test = train_test_split(
        np.arange(len(images)), test_size=test_fraction, stratify=bunch.target, random_state=0
    )
    names = [str(c) for c in range(10)]
    return tuple(
        ImageSet(_hwc_to_chw(images[idx]), torch.as_tensor(bunch.target[idx]), names)
        for idx in (idx_train, idx_test)
    )


def load_tinyimagenet(root: Path, download: bool = False):
    from lifelong.data.tinyimagenet import load_tinyimagenet as load

    return load(root, download)


def load_imagenet(root: Path, download: bool = False, config=None):
    """ImageNet and its class subsets (ImageNet-100): file-backed `ImageFiles`, not in memory."""
    from lifelong.data.imagenet import load_imagenet as load

    return load(root, download, config)


load_imagenet.wants_config = True

# name -> loader(root, download) -> (train, test); a loader with `wants_config` also gets the dataset config
DATASETS: dict[str, Callable[..., tuple[ImageSet, ImageSet]]] = {
    "cifar100": load_cifar,
    "cifar10": load_cifar10,
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
    "svhn": load_svhn,
    "digits": load_digits,
    "tinyimagenet": load_tinyimagenet,
    "imagenet": load_imagenet,
    "imagenet100": load_imagenet,
}


def _load_core50(root: Path, download: bool = False, **options) -> tuple[ImageSet, ImageSet]:
    from lifelong.data.core50 import load_core50

    return load_core50(root, download, **options)


DATASETS["core50"] = _load_core50
# Loaders that read more of the dataset config than `download` (image size, split, sessions, ...).
CONFIGURED = {"core50": ("image_size", "split", "train_sessions", "test_sessions", "test_fraction", "split_seed",
                         "cache")}


def load_dataset(name: str, root: str | Path, download: bool = True, options=None) -> tuple[ImageSet, ImageSet]:
    """`options`: the dataset config. The keys in `CONFIGURED[name]` it holds go to the loader; a loader
    marked `wants_config` (the file-backed ImageNet ones) gets the whole config."""
    if name not in DATASETS:
        raise ConfigError(f"dataset.name={name!r} is unknown; valid choices: {sorted(DATASETS)}")
    loader = DATASETS[name]
    extra = {k: options[k] for k in CONFIGURED.get(name, ()) if options is not None and k in options}
    if getattr(loader, "wants_config", False):
        extra["config"] = options
    train, test = loader(Path(root).expanduser().absolute(), download=download, **extra)
    pad = int(options.get("pad", 0) or 0) if options is not None else 0
    if pad:
        train, test = padded(train, pad, options), padded(test, pad, options)
    return train, test


def padded(images: ImageSet, pad: int, options) -> ImageSet:
    """`dataset.pad`: a black border of `pad` pixels around every image, added once at load (van de Ven
    et al.'s MNIST is `transforms.Pad(2)`: 28x28 -> 32x32). `dataset.image_size` must name the result."""
    if pad < 0:
        raise ConfigError(f"dataset.pad={pad} must be >= 0 (a border in pixels)")
    if not isinstance(images, ImageSet):
        raise ConfigError(f"dataset.pad={pad} pads in-memory images; dataset={options.get('name')} is "
                          f"file-backed: set dataset.image_size instead")
    side = images.x.shape[-1] + 2 * pad
    if options.get("image_size") != side:
        raise ConfigError(f"dataset.pad={pad} makes {side}x{side} images but dataset.image_size="
                          f"{options.get('image_size')}: add dataset.image_size={side}")
    return ImageSet(torch.nn.functional.pad(images.x, (pad, pad, pad, pad)), images.y, images.class_names)
