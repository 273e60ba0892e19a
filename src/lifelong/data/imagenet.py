"""ImageNet (ILSVRC-2012) and its class subsets, file-backed: decoded and transformed in DataLoader workers.

Read from the ImageNet folder layout (what torchvision's `ImageFolder` and most continual-learning code
expect; the official validation archive sorted into class folders, e.g. with the common `valprep.sh`):

    <root>/train/<wnid>/*.JPEG         1,300 images per class
    <root>/val/<wnid>/*.JPEG           50 images per class (the test split)

`<root>` is `dataset.root`, by default `<paths.data_root>/imagenet`. `dataset.classes` picks the classes:
null (every class folder of train/), a subset shipped with the package (below), or an explicit list of
wnids. Class ids are positions in that list (null and the shipped subsets: sorted wnid order, ImageFolder's).

- `imagenet100` (ImageNet-subset): LUCIR's (Hou et al., CVPR 2019) 100 classes, official
  `imagenet-class-incremental/gen_imagenet_subset.py` (hshustc/CVPR19_Incremental_Learning):
  `np.random.seed(1993); np.random.choice(classes, 100, replace=False)` over ImageFolder's 1,000 sorted wnids.
  `imagenet100.txt` is that draw, computed once over the 1,000 ILSVRC-2012 wnids (as listed in PODNet's
  `imagenet_split/val_1000.txt`); it equals PyCIL's authors' list (G-U-N/ECCV22-FOSTER `imagenet-sub/`).
  The class order over it is the iCaRL seed-1993 permutation (`scenario.class_order=icarl1993`, as PODNet's
  `options/data/imagenet100_1order.yaml` and PyCIL).
- `podnet100`: the subset PODNet's repository actually ships (`imagenet_split/val_100.txt`, reused by DER):
  the first 100 wnids in sorted order, a different set (9 classes in common with `imagenet100`).

Images stay files: one sample is `(transform(image), label)`, decoded in the DataLoader workers
(`num_workers`). Training: RandomResizedCrop(224) + horizontal flip; evaluation: Resize(256) +
CenterCrop(224); both then ToTensor + Normalize with ImageNet statistics (ABD `dataloaders/utils.py`
L40-63, the torchvision reference recipe). Batches arrive normalised, so a task's `augment` is
`sequence.Prepared`, as for the dataset-sequence scenario's file datasets.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from lifelong.data.sequence import IMAGENET_MEAN, IMAGENET_STD, ToRGB
from lifelong.errors import ConfigError, DatasetNotFound

EXTENSIONS = (".jpeg", ".jpg", ".png")
NAMED_SUBSETS = ("imagenet100", "podnet100")


def named_subset(name: str) -> list[str]:
    """The wnids of a subset shipped with the package (`lifelong/data/<name>.txt`, one wnid a line)."""
    text = resources.files("lifelong.data").joinpath(f"{name}.txt").read_text()
    return [line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()]


def image_transform(train: bool, image_size: int = 224, resize: int = 256, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                    flip: bool = True):
    """Training: RandomResizedCrop(image_size) (+ flip); evaluation: Resize(resize) + CenterCrop(image_size)."""
    from torchvision import transforms

    if train:
        steps = [transforms.RandomResizedCrop(image_size)] + ([transforms.RandomHorizontalFlip()] if flip else [])
    else:
        steps = [transforms.Resize(resize), transforms.CenterCrop(image_size)]
    return transforms.Compose([ToRGB(), *steps, transforms.ToTensor(), transforms.Normalize(list(mean), list(std))])


def _open(path: str):
    from PIL import Image

    with open(path, "rb") as f:
        image = Image.open(f)
        image.load()
    return image


class ImageFiles(Dataset):
    """Image files with labels: `(transform(image), y[i])`, with the `ImageSet` interface the
    class-incremental scenario cuts (`y`, `subset`, `len`), so tasks, validation splits and label remapping
    work on it unchanged; the images are only opened by DataLoader workers."""

    def __init__(self, paths: Sequence[str], y: torch.Tensor, transform=None, class_names: Sequence[str] = ()):
        self.paths = np.asarray(paths, dtype=object)
        self.y = torch.as_tensor(y, dtype=torch.long)
        self.transform = transform
        self.class_names = list(class_names)
        if len(self.paths) != len(self.y):
            raise ValueError(f"ImageFiles has {len(self.paths)} files but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: torch.Tensor) -> "ImageFiles":
        index = torch.as_tensor(index, dtype=torch.long).numpy()
        return ImageFiles(self.paths[index], self.y[index], self.transform, self.class_names)

    def with_transform(self, transform) -> "ImageFiles":
        return ImageFiles(self.paths, self.y, transform, self.class_names)

    def __getitem__(self, i: int):
        image = _open(self.paths[int(i)])
        return (self.transform(image) if self.transform else image), int(self.y[int(i)])


def _missing(root: Path, what: str, name: str) -> DatasetNotFound:
    return DatasetNotFound(
        f"{name} is not in {root} ({what}). Expected the ImageNet folder layout {root}/train/<wnid>/*.JPEG and "
        f"{root}/val/<wnid>/*.JPEG (ILSVRC-2012 from https://image-net.org/download-images, the validation "
        f"images sorted into class folders). Point dataset.root=<dir> (or paths.data_root=<dir> holding "
        f"imagenet/) at it."
    )


def _list(split_dir: Path, wnids: Sequence[str]) -> tuple[list[str], list[int]]:
    paths, labels = [], []
    for label, wnid in enumerate(wnids):
        folder = split_dir / wnid
        names = sorted(n for n in os.listdir(folder) if n.lower().endswith(EXTENSIONS)) if folder.is_dir() else []
        paths += [str(folder / n) for n in names]
        labels += [label] * len(names)
    return paths, labels


def resolve_classes(classes, train_dir: Path) -> list[str]:
    if classes is None:
        return sorted(e.name for e in os.scandir(train_dir) if e.is_dir())
    if isinstance(classes, str):
        if classes not in NAMED_SUBSETS:
            raise ConfigError(f"dataset.classes={classes!r} is unknown; valid choices: null (every class folder), "
                              f"{list(NAMED_SUBSETS)} or a list of wnids")
        return named_subset(classes)
    wnids = [str(c) for c in classes]
    if len(set(wnids)) != len(wnids):
        raise ConfigError("dataset.classes lists a wnid twice")
    return wnids


def load_imagenet(root: Path, download: bool = False, config: Mapping | None = None):
    """(train, test) `ImageFiles` of the classes `config['classes']` under `config['root']` (or `root/imagenet`)."""
    config = dict(config or {})
    name = config.get("name", "imagenet")
    folder = Path(str(config.get("root") or Path(root) / "imagenet")).expanduser().absolute()
    train_dir, val_dir = folder / "train", folder / "val"
    if not train_dir.is_dir() or not val_dir.is_dir():
        raise _missing(folder, "no train/ or no val/ folder", name)
    wnids = resolve_classes(config.get("classes"), train_dir)
    expected = config.get("n_classes")
    if expected is not None and int(expected) != len(wnids):
        raise ConfigError(f"dataset.n_classes={expected} but dataset.classes names {len(wnids)} classes; "
                          f"set dataset.n_classes={len(wnids)}")
    size, resize = int(config.get("image_size", 224)), int(config.get("resize", 256))
    mean, std = tuple(config.get("mean", IMAGENET_MEAN)), tuple(config.get("std", IMAGENET_STD))
    splits = []
    for split_dir, train in ((train_dir, True), (val_dir, False)):
        paths, labels = _list(split_dir, wnids)
        present = set(labels)
        empty = [w for i, w in enumerate(wnids) if i not in present]
        if empty:
            raise _missing(folder, f"no images of {len(empty)} of the {len(wnids)} classes in {split_dir.name}/, "
                                   f"e.g. {split_dir.name}/{empty[0]}/", name)
        transform = image_transform(train, size, resize, mean, std, bool(config.get("flip", True)))
        splits.append(ImageFiles(paths, torch.tensor(labels), transform, wnids))
    return tuple(splits)

