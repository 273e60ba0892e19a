"""Class-incremental scenarios: a class order cut into tasks, labels remapped per task.

Labels are remapped so that task i owns the contiguous block of class ids
`[task.offset, task.offset + task.n_classes)`, in class-order order (DESIGN.md, Conventions).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from lifelong.data.datasets import ImageSet, load_dataset
from lifelong.data.transforms import BatchAugment
from lifelong.errors import ConfigError
# torch-free: the early checks (lifelong.validate) use them too
from lifelong.splits import NAMED_ORDERS, named_order_problem, task_sizes  # noqa: F401

# The fixed CIFAR-100 order of iCaRL (Rebuffi et al., CVPR 2017) that FACIL (`cifar100_icarl`) and
# PyCIL use: numpy.random.seed(1993); numpy.random.permutation(100).
ICARL_1993 = [
    68, 56, 78, 8, 23, 84, 90, 65, 74, 76, 40, 89, 3, 92, 55, 9, 26, 80, 43, 38, 58, 70, 77, 1, 85,
    19, 17, 50, 28, 53, 13, 81, 45, 82, 6, 59, 83, 16, 15, 44, 91, 41, 72, 60, 79, 52, 20, 10, 31,
    54, 37, 95, 14, 71, 96, 98, 97, 2, 64, 66, 42, 22, 35, 86, 24, 34, 87, 21, 99, 0, 88, 27, 18, 94,
    11, 12, 47, 25, 30, 46, 62, 69, 36, 61, 7, 63, 75, 5, 32, 4, 51, 48, 73, 93, 39, 67, 29, 49, 57,
    33,
]


@dataclass
class Task:
    """One task: its original class ids (in order) and its train/val/test splits, labels remapped.

    Splits are `ImageSet`s (uint8 tensors in memory) or any map-style `Dataset` of `(x, y)` pairs
    (file datasets, transformed in DataLoader workers). `augment` turns a batch on the device into
    the model's input: crop/flip/normalise for in-memory sets, identity-like for file datasets.
    """

    id: int
    classes: list[int]
    offset: int
    train: ImageSet
    val: ImageSet
    test: ImageSet
    augment: BatchAugment | None = None
    name: str = ""
    # Domain-incremental scenarios (`lifelong.data.domains`): every task's block names the same C classes
    # (block id mod C); None in class-incremental scenarios, where every block holds classes of its own.
    label_space: int | None = None

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def class_range(self) -> range:
        return range(self.offset, self.offset + self.n_classes)


@dataclass
class Scenario:
    tasks: list[Task]
    class_order: list[int]

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self):
        return iter(self.tasks)

    def __getitem__(self, i: int) -> Task:
        return self.tasks[i]

    @property
    def task_sizes(self) -> list[int]:
        return [t.n_classes for t in self.tasks]

    @property
    def n_classes(self) -> int:
        return sum(self.task_sizes)

    @property
    def domain_incremental(self) -> bool:
        return any(t.label_space is not None for t in self.tasks)


def resolve_class_order(order, n_classes: int, seed: int) -> list[int]:
    """An explicit list, or a named order.

    - "random": Python's `random.seed(seed); random.shuffle(list(range(n)))`, the order ABD's
      official code draws for seed r (`trainer.py`), so its paper orders come out by default.
    - "natural": 0, 1, ..., n-1.
    - "icarl1993": the fixed CIFAR-100 order of iCaRL, FACIL and PyCIL (also their ImageNet-100 order).
    - "numpy": `np.random.seed(seed); np.random.shuffle(np.arange(n))`, MIND's TinyImageNet order
      (`utils/tiny_imagenet_dset.py:94-98` per the MIND spec), assuming no numpy draw before it.
    """
    if order is None or order == "random":
        classes = list(range(n_classes))
        random.Random(seed).shuffle(classes)
        return classes
    if order == "natural":
        return list(range(n_classes))
    if isinstance(order, str) and named_order_problem(order, n_classes):
        raise ConfigError(named_order_problem(order, n_classes))
    if order == "numpy":
        return [int(c) for c in np.random.RandomState(seed).permutation(n_classes)]
    if order == "icarl1993":
        return list(ICARL_1993)
    from lifelong.validate import class_order_problem

    problem = class_order_problem(order, n_classes)
    if problem:
        raise ConfigError(f"scenario.class_order {problem}")
    order = [int(c) for c in order]
    return order


def _remap(split: ImageSet, lookup: torch.Tensor, classes: Sequence[int]) -> ImageSet:
    keep = torch.isin(split.y, torch.as_tensor(list(classes)))
    part = split.subset(keep.nonzero().squeeze(1))
    part.y = lookup[part.y]
    return part


def _split_val(train: ImageSet, fraction: float, rng: np.random.Generator) -> tuple[ImageSet, ImageSet]:
    """Stratified: `fraction` of each class's training images become validation images."""
    if fraction <= 0:
        return train, train.subset(torch.zeros(0, dtype=torch.long))
    val_idx = []
    labels = train.y.numpy()
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n_val = int(round(fraction * len(idx)))
        val_idx.extend(rng.choice(idx, size=n_val, replace=False).tolist())
    is_val = torch.zeros(len(train), dtype=torch.bool)
    is_val[val_idx] = True
    return train.subset((~is_val).nonzero().squeeze(1)), train.subset(is_val.nonzero().squeeze(1))


def build_scenario(
    train: ImageSet,
    test: ImageSet,
    n_tasks: int,
    nc_first_task: int | None = None,
    class_order="random",
    val_fraction: float = 0.0,
    seed: int = 0,
    n_classes: int | None = None,
) -> Scenario:
    """Cut a dataset into class-incremental tasks. The same seed gives the same order and splits."""
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"scenario.val_fraction={val_fraction} must be in [0, 1)")
    n_classes = n_classes or int(train.y.max()) + 1
    order = resolve_class_order(class_order, n_classes, seed)
    sizes = task_sizes(n_classes, n_tasks, nc_first_task)
    lookup = torch.empty(n_classes, dtype=torch.long)
    lookup[torch.as_tensor(order)] = torch.arange(n_classes)
    rng = np.random.default_rng(seed)
    tasks, offset = [], 0
    for i, size in enumerate(sizes):
        classes = order[offset : offset + size]
        task_train, task_val = _split_val(_remap(train, lookup, classes), val_fraction, rng)
        tasks.append(Task(i, classes, offset, task_train, task_val, _remap(test, lookup, classes)))
        offset += size
    return Scenario(tasks, order)


def class_incremental(dataset, data_root: str, seed: int, n_tasks: int, nc_first_task: int | None = None,
                      class_order="random", val_fraction: float = 0.0) -> Scenario:
    """The `scenario=class_incremental` builder: one dataset's classes cut into tasks."""
    train, test = load_dataset(dataset["name"], data_root, download=dataset.get("download", True), options=dataset)
    if not isinstance(class_order, str) and class_order is not None:
        class_order = list(class_order)
    scenario = build_scenario(train, test, n_tasks, nc_first_task, class_order, val_fraction, seed,
                              n_classes=dataset["n_classes"])
    if not isinstance(train, ImageSet):  # file-backed (ImageNet): workers transform, validation as the test split
        from lifelong.data.sequence import Prepared

        for task in scenario.tasks:
            task.val = task.val.with_transform(test.transform)
            task.augment, task.name = Prepared(), f"{dataset['name']}-{task.id}"
        return scenario
    return with_dataset_augment(scenario, dataset, dataset["name"])


def with_dataset_augment(scenario: Scenario, dataset, name: str) -> Scenario:
    """Every task gets the dataset config's batch augmentation and the name `<name>-<task id>`."""
    augment = BatchAugment(dataset["mean"], dataset["std"], dataset.get("crop_padding", 0), dataset.get("flip", False),
                           dataset.get("brightness", 0.0), dataset.get("contrast", 0.0), dataset.get("hue", 0.0))
    for task in scenario.tasks:
        task.augment = augment
        task.name = f"{name}-{task.id}"
    return scenario
