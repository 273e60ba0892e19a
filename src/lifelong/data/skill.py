"""The SKILL release (Ge et al., TMLR 2023) and the per-task sampling CLR's official code applies to it.

Layout of the unzipped release (`skill-dataset.zip`, http://ilab.usc.edu/andy/skill-dataset/), as the
official CLR code reads it (gyhandy/Channel-wise-Lightweight-Reprogramming, `dataset/sample_dataset.py`):

    <root>/rolling_releases/database_2.sqlite    tables datasets(dataset_id, dataset_name) and
                                                 files(hash, path, filename, class_id, dataset_id, problem, "set")
    <root>/original_images/<dataset_name><path><filename>

`"set"` is 0 (train), 1 (validation) or 2 (test); rows with `problem != 0` are never used. A task is one
`dataset_id` (CLR's 53 tasks: the `newid` column of its `stat.csv`).

Sampling (`sample_dataset.py`, `ShellDataset.__init__` and `_random_value`), per dataset and set:
- the set's rows grouped by `class_id`, classes in the order they first appear, images in row order;
- at most `max_classes` (300) classes, the first ones in that order;
- `amount` images: `large` (5,120 train / 512 evaluation) when the set has at least `class_threshold`
  (60) classes, else `small` (2,560 / 256); `round(amount / n_classes)` per class;
- Python's `random` seeded with `seed` (27) afresh for each dataset and set, each class's images
  shuffled in class order and the first `round(amount / n_classes)` kept (fewer when the class has fewer).
Labels are the class's position in the training set's order. Given the same database, the same images
come out as in the official code; the sampling never depends on the run's seed.

The official code trains on the train sample and reports (and selects its best epoch on) the
validation sample. Here the test split is that validation sample, and early stopping uses a sample of
the release's test set drawn the same way (`val_set`), which the official code never reads.
"""
from __future__ import annotations

import random
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from torch.utils.data import Dataset

from lifelong.errors import ConfigError, DatasetNotFound

DATABASE = Path("rolling_releases") / "database_2.sqlite"
IMAGES = "original_images"
SET_IDS = {"train": 0, "validation": 1, "test": 2}
URL = "http://ilab.usc.edu/andy/skill-dataset/separate-v/ (skill-dataset.zip, .z01, .z02; unzip them together)"


@dataclass(frozen=True)
class Sampling:
    """CLR's per-task sample sizes (official `sample_dataset.py`: threshold 60, large 512, small 256,
    training sets ten times larger, at most 300 classes, `random.seed(27)`)."""

    train_sizes: tuple[int, int] = (2560, 5120)  # (fewer than class_threshold classes, at least that many)
    eval_sizes: tuple[int, int] = (256, 512)
    class_threshold: int = 60
    max_classes: int = 300
    seed: int = 27


def sample(rows: Sequence[tuple[str, int]], sizes: tuple[int, int], class_threshold: int = 60,
           max_classes: int = 300, seed: int = 27, class_order: Sequence[int] | None = None) -> list[tuple[str, int]]:
    """The (image, class_id) pairs CLR's code keeps of one set's `rows` (image, class_id), in database order.

    `class_order`: the training set's classes in order (for an evaluation set: which classes count when
    more than `max_classes` exist); by default the order of `rows`.
    """
    by_class: dict[int, list[str]] = {}
    for image, class_id in rows:
        by_class.setdefault(int(class_id), []).append(image)
    if not by_class:
        return []
    n_classes = min(max_classes, len(by_class))
    amount = sizes[1] if len(by_class) >= class_threshold else sizes[0]
    per_class = round(amount / n_classes)
    counted = set(list(class_order if class_order is not None else by_class)[:n_classes])
    rng = random.Random(seed)  # the official random.seed(seed) before sampling each set
    kept, done = [], 0
    for class_id, images in by_class.items():
        if class_id not in counted:
            continue
        images = list(images)
        rng.shuffle(images)
        kept += [(image, class_id) for image in images[:per_class]]
        done += 1
        if done >= n_classes:
            break
    return kept


class ImageFiles(Dataset):
    """Image files with labels: `(PIL image, label)`; `targets` for `lifelong.data.sequence.dataset_targets`."""

    def __init__(self, paths: Sequence[Path], targets: Sequence[int]):
        self.paths, self.targets = list(paths), np.asarray(targets, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image

        with Image.open(self.paths[i]) as image:
            return image.convert("RGB"), int(self.targets[i])


def _query(database: Path, sql: str, args=()) -> list[tuple]:
    with closing(sqlite3.connect(database.absolute().as_uri() + "?mode=ro", uri=True)) as connection:
        return connection.execute(sql, args).fetchall()


def _missing(root: Path, what: str) -> DatasetNotFound:
    return DatasetNotFound(
        f"the SKILL release is not in {root} ({what}). Expected {root / DATABASE} and {root / IMAGES}/<dataset>/...: "
        f"download {URL} and unzip it, then point paths.skill_root=<the unzipped folder> "
        f"(or scenario.skill.root=<dir>) at it"
    )


def resolve_dataset(root: Path, name: str, dataset_id: int | None) -> tuple[int, str]:
    """(dataset_id, the database's dataset_name) of a task given by id (CLR's `newid`) or by name."""
    database = root / DATABASE
    if not database.is_file():
        raise _missing(root, f"no {DATABASE}")
    if dataset_id is not None:
        found = _query(database, "SELECT dataset_name FROM datasets WHERE dataset_id=?", (int(dataset_id),))
        if not found:
            raise ConfigError(f"scenario.datasets: {name!r} has id={dataset_id}, which {database} does not list")
        return int(dataset_id), str(found[0][0])
    found = _query(database, "SELECT dataset_id FROM datasets WHERE dataset_name=?", (name,))
    if not found:
        raise ConfigError(f"scenario.datasets: {name!r} is not a dataset_name in {database}; give its id "
                          f"({{name: {name}, source: skill, id: <dataset_id>}})")
    return int(found[0][0]), name


def set_rows(root: Path, dataset_id: int, set_name: str) -> list[tuple[str, int]]:
    """(relative image path, class_id) of one set, problem-free rows, in database (rowid) order."""
    rows = _query(root / DATABASE, 'SELECT path, filename, class_id FROM files WHERE dataset_id=? AND problem=0 '
                  'AND "set"=? ORDER BY rowid', (dataset_id, SET_IDS[set_name]))
    return [(f"{path}{filename}", int(class_id)) for path, filename, class_id in rows]


def open_skill(name: str, root: Path, dataset_id: int | None, sampling: Sampling = Sampling(),
               test_set: str = "validation", val_set: str | None = "test") -> dict:
    """train / test (/ val) `Split`s of one SKILL task, sampled as CLR's code does; labels 0..C-1."""
    from lifelong.data.sequence import Split

    for key, value in (("test_set", test_set), ("val_set", val_set)):
        if value is not None and value not in ("validation", "test"):
            raise ConfigError(f"scenario.skill.{key}={value!r} is unknown; valid choices: validation, test"
                              f"{', null' if key == 'val_set' else ''}")
    dataset_id, db_name = resolve_dataset(root, name, dataset_id)
    train_rows = set_rows(root, dataset_id, "train")
    if not train_rows:
        raise _missing(root, f"dataset_id {dataset_id} ({db_name}) has no training rows")
    class_order = list(dict.fromkeys(c for _, c in train_rows))
    label = {c: i for i, c in enumerate(class_order)}
    picks = {"train": sample(train_rows, tuple(sampling.train_sizes), sampling.class_threshold,
                             sampling.max_classes, sampling.seed)}
    for ours, theirs in (("test", test_set), ("val", val_set)):
        if theirs is None:
            continue
        rows = set_rows(root, dataset_id, theirs)
        if not rows and ours == "val":
            continue  # no such set: the validation split comes from scenario.val_fraction
        unknown = sorted({c for _, c in rows} - set(label))
        if unknown or not rows:
            raise DatasetNotFound(f"SKILL dataset_id {dataset_id} ({db_name}) in {root}: its {theirs} set "
                                  + (f"has classes {unknown[:10]} that its training set lacks" if rows else "is empty"))
        picks[ours] = sample(rows, tuple(sampling.eval_sizes), sampling.class_threshold, sampling.max_classes,
                             sampling.seed, class_order)
    splits = {}
    for split, pairs in picks.items():
        paths = [root / IMAGES / f"{db_name}{image}" for image, _ in pairs]
        absent = [p for p in paths if not p.is_file()]
        if absent:
            raise _missing(root, f"{len(absent)} of the {len(paths)} sampled {split} images of {db_name} are "
                                 f"missing, e.g. {absent[0]}")
        labels = np.asarray([label[c] for _, c in pairs], dtype=np.int64)
        splits[split] = Split(ImageFiles(paths, labels), np.arange(len(labels)), labels)
    return splits
