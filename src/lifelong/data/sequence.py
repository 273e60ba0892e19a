"""Dataset-sequence scenarios: every task is a whole dataset with its own classes.

CLR (Ge et al., ICCV 2023) learns 53 image datasets one after another; EBLL (Rannen Triki et al.,
ICCV 2017) learns MIT Scenes, CUB Birds and Flowers after ImageNet. A task here is one dataset:
its labels are remapped to the contiguous block `[offset, offset + n_classes)` after the tasks
before it (DESIGN.md, Conventions), exactly as in the class-incremental scenario.

Sources:
- torchvision datasets (`TORCHVISION`), read from (or downloaded into) `paths.data_root`, or from
  `scenario.roots.<name>` when that is set;
- image folders (torchvision `ImageFolder` layout: one sub-folder per class), either with `train/`,
  optional `val/` and `test/` sub-folders, or flat (then split once with `split_seed`). Their root
  is `scenario.roots.<name>`, an entry's own `root`, or `scenario.folders_root/<name>` (SKILL: one
  folder per dataset).

- the SKILL release (`source: skill`, `lifelong.data.skill`): a task is a `dataset_id` of the
  release's database, sampled per task as CLR's official code does (2,560 or 5,120 training and 256
  or 512 evaluation images); the release's root is `scenario.skill.root`.

Images are files, so they are decoded and transformed per image in DataLoader workers (DESIGN.md,
Conventions): RGB, resize to `image_size` x `image_size` (aspect ratio not kept), tensor,
normalisation; no augmentation (CLR official `dataset/dataloader_reader.py:38-42`). The batches
arrive normalised, so a task's `augment` is `Prepared`, which leaves them as they are.

Validation: a dataset's official validation split where torchvision has one (Flowers-102, DTD,
FGVC-Aircraft) or the image folder has `val/`; otherwise a stratified `val_fraction` of the
training split, drawn with the run's seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from lifelong.data.scenario import Scenario, Task
from lifelong.errors import ConfigError, DatasetNotFound

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TorchvisionSource:
    """How to open one torchvision dataset: `open(root, split, download)` -> dataset of (PIL, label)."""

    open: Callable[[Path, str, bool], Any]
    splits: tuple[str, ...]  # of "train", "val", "test" that the dataset ships
    expected: str  # what must exist under the root
    where: str  # where the files come from


def _tv(name: str):
    from torchvision import datasets

    return getattr(datasets, name)


def _split_kw(train: str, val: str | None, test: str):
    """torchvision's name for our train/val/test split of a dataset with a `split` argument."""
    return {"train": train, "val": val, "test": test}


def _by_split(cls_name: str, names: dict, **kwargs):
    def open_(root: Path, split: str, download: bool):
        return _tv(cls_name)(str(root), split=names[split], download=download, **kwargs)

    return open_


def _by_train_flag(cls_name: str):
    def open_(root: Path, split: str, download: bool):
        return _tv(cls_name)(str(root), train=split == "train", download=download)

    return open_


def _whole(cls_name: str):
    def open_(root: Path, split: str, download: bool):
        return _tv(cls_name)(str(root), download=download)

    return open_


def _svhn(root: Path, split: str, download: bool):
    return _tv("SVHN")(str(root / "svhn"), split=split, download=download)


TORCHVISION: dict[str, TorchvisionSource] = {
    "flowers102": TorchvisionSource(_by_split("Flowers102", _split_kw("train", "val", "test")),
                                    ("train", "val", "test"), "flowers-102/",
                                    "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"),
    "dtd": TorchvisionSource(_by_split("DTD", _split_kw("train", "val", "test")), ("train", "val", "test"),
                             "dtd/dtd/", "https://www.robots.ox.ac.uk/~vgg/data/dtd/"),
    "fgvc_aircraft": TorchvisionSource(_by_split("FGVCAircraft", _split_kw("train", "val", "test")),
                                       ("train", "val", "test"), "fgvc-aircraft-2013b/",
                                       "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/"),
    "oxford_iiit_pet": TorchvisionSource(_by_split("OxfordIIITPet", _split_kw("trainval", None, "test")),
                                         ("train", "test"), "oxford-iiit-pet/",
                                         "https://www.robots.ox.ac.uk/~vgg/data/pets/"),
    "eurosat": TorchvisionSource(_whole("EuroSAT"), (), "eurosat/2750/",
                                 "https://huggingface.co/datasets/torchgeo/eurosat (EuroSAT.zip)"),
    "svhn": TorchvisionSource(_svhn, ("train", "test"), "svhn/train_32x32.mat and svhn/test_32x32.mat",
                              "http://ufldl.stanford.edu/housenumbers/"),
    "gtsrb": TorchvisionSource(_by_split("GTSRB", _split_kw("train", None, "test")), ("train", "test"),
                               "gtsrb/", "https://benchmark.ini.rub.de/gtsrb_dataset.html"),
    "food101": TorchvisionSource(_by_split("Food101", _split_kw("train", None, "test")), ("train", "test"),
                                 "food-101/", "https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/"),
    "cifar10": TorchvisionSource(_by_train_flag("CIFAR10"), ("train", "test"), "cifar-10-batches-py/",
                                 "https://www.cs.toronto.edu/~kriz/cifar.html"),
    "cifar100": TorchvisionSource(_by_train_flag("CIFAR100"), ("train", "test"), "cifar-100-python/",
                                  "https://www.cs.toronto.edu/~kriz/cifar.html"),
    "mnist": TorchvisionSource(_by_train_flag("MNIST"), ("train", "test"), "MNIST/raw/",
                               "https://ossci-datasets.s3.amazonaws.com/mnist/"),
}
SOURCES = tuple(TORCHVISION) + ("image_folder", "skill")


class ToRGB:
    """PIL image -> 3-channel PIL image (MNIST is grayscale, some folders hold RGBA or palette PNGs)."""

    def __call__(self, image):
        return image.convert("RGB")


def image_transform(image_size: int, mean: Sequence[float], std: Sequence[float], resize: int | None = None,
                    train: bool = False, flip: bool = False):
    """Without `resize`: CLR official `dataset/dataloader_reader.py:38-42`, Resize((224, 224)), ToTensor,
    Normalize (no augmentation). With `resize`: the image is resized to `resize` x `resize`, then cut to
    an `image_size` crop, random (and flipped with `flip`) for training, central for evaluation: EBLL's
    random 227 crops of 256 with flips (official `getImageBatch.m:8-9`)."""
    from torchvision import transforms

    if resize is None:
        steps = [transforms.Resize((image_size, image_size))]
    elif train:
        steps = [transforms.Resize((resize, resize)), transforms.RandomCrop(image_size)]
        steps += [transforms.RandomHorizontalFlip()] if flip else []
    else:
        steps = [transforms.Resize((resize, resize)), transforms.CenterCrop(image_size)]
    return transforms.Compose([ToRGB(), *steps, transforms.ToTensor(), transforms.Normalize(list(mean), list(std))])


class Prepared(nn.Module):
    """The `augment` of file-dataset tasks: the workers already resized and normalised the batch."""

    def forward(self, x: torch.Tensor, train: bool = False) -> torch.Tensor:
        return x


class LabelledView(Dataset):
    """Some images of a dataset, with our labels: `(transform(image), labels[i])`."""

    def __init__(self, dataset, indices: np.ndarray, labels: np.ndarray, transform):
        self.dataset, self.transform = dataset, transform
        self.indices = np.asarray(indices, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        image, _ = self.dataset[int(self.indices[i])]
        return self.transform(image), int(self.labels[i])


def dataset_targets(dataset) -> np.ndarray:
    """The label of every sample, read from torchvision's attributes (no image is decoded)."""
    for attr in ("targets", "labels", "_labels"):
        if hasattr(dataset, attr):
            return np.asarray(getattr(dataset, attr), dtype=np.int64)  # list, numpy array or CPU tensor
    if hasattr(dataset, "_samples"):  # GTSRB: list of (path, label)
        return np.asarray([label for _, label in dataset._samples], dtype=np.int64)
    raise TypeError(f"cannot read the labels of {type(dataset).__name__}")


@dataclass
class Split:
    """One split of one dataset: the dataset object and which of its samples, with their labels."""

    dataset: Any
    indices: np.ndarray
    labels: np.ndarray


def stratified_split(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Positions of `labels` split into (rest, held out): `fraction` of each class held out, at least
    one image per class when the class has two or more."""
    held = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n = int(round(fraction * len(idx)))
        if fraction > 0 and n == 0 and len(idx) > 1:
            n = 1
        held.extend(rng.choice(idx, size=min(n, len(idx) - 1), replace=False).tolist())
    mask = np.zeros(len(labels), dtype=bool)
    mask[held] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def _whole_split(dataset) -> Split:
    labels = dataset_targets(dataset)
    return Split(dataset, np.arange(len(labels)), labels)


def _missing(name: str, where: Path, expected: str, source: str, reason: BaseException | str) -> DatasetNotFound:
    reason = reason if isinstance(reason, str) else f"{type(reason).__name__}: {reason}"
    return DatasetNotFound(
        f"dataset {name!r} of scenario.datasets is not in {where} and could not be loaded ({reason}). "
        f"Expected {expected} there. Get it from {source}, or point +scenario.roots.{name}=<dir> at where it is"
        f"{' (or paths.data_root for every torchvision dataset)' if name in TORCHVISION else ''}."
    )


def open_torchvision(name: str, root: Path, download: bool, test_fraction: float, split_seed: int) -> dict[str, Split]:
    """train / test (and val, if the dataset ships one) splits of a torchvision dataset."""
    source = TORCHVISION[name]
    try:
        if not source.splits:  # EuroSAT: one folder, split once with a fixed seed
            whole = _whole_split(source.open(root, "", download))
            rest, test = stratified_split(whole.labels, test_fraction, np.random.default_rng(split_seed))
            return {"train": Split(whole.dataset, rest, whole.labels[rest]),
                    "test": Split(whole.dataset, test, whole.labels[test])}
        return {split: _whole_split(source.open(root, split, download)) for split in source.splits}
    except Exception as error:  # torchvision raises RuntimeError / URLError / OSError: all mean "no files"
        raise _missing(name, root, source.expected, source.where, error) from error


def _image_folder(path: Path):
    from torchvision.datasets import ImageFolder

    return ImageFolder(str(path))


def open_image_folder(name: str, root: Path, test_fraction: float, split_seed: int) -> dict[str, Split]:
    """`root/{train,[val],test}/<class>/<image>`, or `root/<class>/<image>` split once by `split_seed`."""
    layout = "train/<class>/<image> and test/<class>/<image> (val/ optional), or <class>/<image>"
    if not root.is_dir():
        raise _missing(name, root, layout, "the dataset's publisher", "no such folder")
    try:
        if (root / "train").is_dir() and (root / "test").is_dir():
            splits = {s: _whole_split(_image_folder(root / s)) for s in ("train", "val", "test") if (root / s).is_dir()}
        else:
            whole = _whole_split(_image_folder(root))
    except FileNotFoundError as error:  # ImageFolder: no class folder or no image file
        raise _missing(name, root, layout, "the dataset's publisher", error) from error
    if (root / "train").is_dir() and (root / "test").is_dir():
        classes = {s: split.dataset.classes for s, split in splits.items()}
        if any(c != classes["train"] for c in classes.values()):
            raise DatasetNotFound(
                f"dataset {name!r} at {root}: the class folders of {sorted(classes)} differ; every split "
                f"needs the same class sub-folders ({', '.join(f'{s}: {len(c)}' for s, c in classes.items())})"
            )
        return splits
    rest, test = stratified_split(whole.labels, test_fraction, np.random.default_rng(split_seed))
    return {"train": Split(whole.dataset, rest, whole.labels[rest]), "test": Split(whole.dataset, test, whole.labels[test])}


def resolve_entries(datasets, roots: Mapping[str, str] | None, folders_root: str | None,
                    data_root: str, skill_root: str | None = None) -> list[dict]:
    """Each entry of `scenario.datasets` as `{name, source, root}`.

    An entry is a name (`flowers102`, or any name with a folder in `roots` or `folders_root`) or a
    mapping with `name`, optional `source` (a torchvision name or `image_folder`) and `root`.
    """
    if isinstance(datasets, str) or not datasets:
        raise ConfigError(f"scenario.datasets={datasets!r} must be a non-empty list of dataset names, "
                          f"e.g. [flowers102,dtd,eurosat]; torchvision names: {sorted(TORCHVISION)}")
    roots = dict(roots or {})
    entries, seen = [], set()
    for entry in datasets:
        entry = dict(entry) if isinstance(entry, Mapping) else {"name": str(entry)}
        name = entry.get("name")
        if not name:
            raise ConfigError(f"scenario.datasets entry {entry} has no name")
        # A torchvision name in `roots` is still that torchvision dataset, kept in another root.
        source = entry.get("source") or (name if name in TORCHVISION else "image_folder")
        if source not in SOURCES:
            raise ConfigError(f"scenario.datasets: source={source!r} of {name!r} is unknown; valid choices: "
                              f"{list(SOURCES)}")
        root = entry.get("root") or roots.get(name)
        if root is None and source == "skill":
            if skill_root is None:
                raise ConfigError(f"scenario.datasets: {name!r} comes from the SKILL release (source: skill), whose "
                                  f"folder is not set: paths.skill_root=<dir> (or scenario.skill.root=<dir>)")
            root = skill_root
        if root is None and source == "image_folder":
            if folders_root is None:
                raise ConfigError(
                    f"scenario.datasets: {name!r} is not a torchvision dataset ({sorted(TORCHVISION)}) and has "
                    f"no folder: set +scenario.roots.{name}=<image folder> or scenario.folders_root=<dir with "
                    f"one folder per dataset> (experiment=clr_skill: paths.skill_root=<dir>)"
                )
            root = Path(str(folders_root)) / name
        if name in seen:
            raise ConfigError(f"scenario.datasets lists {name!r} twice; every task needs its own dataset")
        seen.add(name)
        root = Path(str(root or data_root)).expanduser().absolute()  # errors then say exactly where
        entries.append({"name": name, "source": source, "root": root, "id": entry.get("id")})
    return entries


def build_sequence(entries: Sequence[Mapping], image_size: int = 224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                   val_fraction: float = 0.1, test_fraction: float = 0.2, split_seed: int = 0,
                   download: bool = True, seed: int = 0, train_resize: int | None = None,
                   flip: bool = False, skill: Mapping | None = None) -> Scenario:
    """One task per entry, in order; labels of task i are `offset_i + (index of the class in its dataset)`."""
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"scenario.val_fraction={val_fraction} must be in [0, 1)")
    if not 0 < test_fraction < 1:
        raise ConfigError(f"scenario.test_fraction={test_fraction} must be in (0, 1)")
    if int(image_size) < 1:
        raise ConfigError(f"scenario.image_size={image_size} must be a positive number of pixels")
    if train_resize is not None and int(train_resize) < int(image_size):
        raise ConfigError(f"scenario.train_resize={train_resize} is smaller than scenario.image_size={image_size}: "
                          f"the crop must fit in the resized image (e.g. train_resize=256 image_size=224), or null")
    resize = None if train_resize is None else int(train_resize)
    transforms_by_split = {split: image_transform(int(image_size), mean, std, resize, split == "train", flip)
                           for split in ("train", "val", "test")}
    augment = Prepared()
    rng = np.random.default_rng(seed)
    tasks, offset = [], 0
    for i, entry in enumerate(entries):
        name, root = entry["name"], Path(entry["root"])
        if entry["source"] == "image_folder":
            splits = open_image_folder(name, root, test_fraction, split_seed)
        elif entry["source"] == "skill":
            from lifelong.data.skill import open_skill

            splits = open_skill(name, root, entry.get("id"), *skill_settings(skill))
        else:
            splits = open_torchvision(name, root, download, test_fraction, split_seed)
        if "val" not in splits:
            train = splits["train"]
            rest, val = stratified_split(train.labels, val_fraction, rng) if val_fraction > 0 else (
                np.arange(len(train.labels)), np.zeros(0, dtype=np.int64))
            splits["train"] = Split(train.dataset, train.indices[rest], train.labels[rest])
            splits["val"] = Split(train.dataset, train.indices[val], train.labels[val])
        classes = np.unique(splits["train"].labels)
        lookup = {int(c): j for j, c in enumerate(classes)}
        for split_name in ("val", "test"):
            unknown = sorted(set(np.unique(splits[split_name].labels).tolist()) - set(lookup))
            if unknown:
                raise DatasetNotFound(f"dataset {name!r} at {root}: its {split_name} split has classes {unknown[:10]} "
                                      f"that the training split lacks")
        views = {
            s: LabelledView(sp.dataset, sp.indices, offset + np.asarray([lookup[int(c)] for c in sp.labels], dtype=np.int64),
                            transforms_by_split[s])
            for s, sp in splits.items()
        }
        tasks.append(Task(i, [int(c) for c in classes], offset, views["train"], views["val"], views["test"],
                          augment, name))
        offset += len(classes)
    return Scenario(tasks, list(range(offset)))


def skill_settings(skill: Mapping | None):
    """(Sampling, test_set, val_set) from the `scenario.skill` block."""
    from lifelong.data.skill import Sampling

    skill = dict(skill or {})
    defaults = Sampling()
    try:
        sampling = Sampling(tuple(int(v) for v in skill.get("train_sizes", defaults.train_sizes)),
                            tuple(int(v) for v in skill.get("eval_sizes", defaults.eval_sizes)),
                            int(skill.get("class_threshold", defaults.class_threshold)),
                            int(skill.get("max_classes", defaults.max_classes)), int(skill.get("seed", defaults.seed)))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"scenario.skill: {error}; sizes are integers, e.g. train_sizes=[2560,5120]") from error
    if len(sampling.train_sizes) != 2 or len(sampling.eval_sizes) != 2 or min(sampling.train_sizes + sampling.eval_sizes) < 1:
        raise ConfigError(f"scenario.skill.train_sizes={list(sampling.train_sizes)} and eval_sizes="
                          f"{list(sampling.eval_sizes)} must each be two positive sizes [below class_threshold, at or above]")
    return sampling, skill.get("test_set", "validation"), skill.get("val_set", "test")


def dataset_sequence(dataset=None, data_root: str = "data", seed: int = 0, datasets=(), roots=None,
                     folders_root: str | None = None, image_size: int = 224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                     val_fraction: float = 0.1, test_fraction: float = 0.2, split_seed: int = 0,
                     download: bool = True, train_resize: int | None = None, flip: bool = False,
                     skill: Mapping | None = None) -> Scenario:
    """The `scenario=dataset_sequence` builder. `dataset` (the config group) is not used: every task
    names its own dataset in `datasets`."""
    skill = dict(skill or {})
    entries = resolve_entries(list(datasets) if not isinstance(datasets, str) else datasets, roots, folders_root,
                              data_root, skill.get("root"))
    skill_settings(skill)  # bad sampling keys fail before any dataset is opened
    return build_sequence(entries, image_size, tuple(mean), tuple(std), val_fraction, test_fraction, split_seed,
                          download, seed, train_resize, flip, skill)
