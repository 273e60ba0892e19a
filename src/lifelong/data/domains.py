"""Domain-incremental scenarios: every task has the same classes, seen through a different input domain.

Task t holds the whole dataset with its images transformed by domain t (a fixed pixel permutation, or a
rotation by a fixed angle; task 0 is the original images). The label space is shared: a task's labels
are the dataset's C classes. So that every method's per-task machinery (heads, sub-networks, masks)
works unchanged, task t still owns its own block of remapped ids `[t * C, (t + 1) * C)` (class c of
task t is `t * C + c`) and `Task.label_space = C` tells the metrics that these blocks name the same
classes: TAW predicts with task t's own head, TAG takes the argmax over every seen head and scores the
class it names (`id mod C`), whichever head wins (`lifelong.metrics.evaluate`).

`domain=sessions` (CORe50, `lifelong.data.core50`): task t is the t-th training session of
`dataset.train_sessions` (recorded in that order, the same 50 objects in each), and every task is
tested on the same images, the pooled test sessions (Lomonaco & Maltoni 2017, Sec. 4).
"""
from __future__ import annotations

import numpy as np
import torch

from lifelong.data.datasets import ImageSet, load_dataset
from lifelong.data.scenario import Scenario, Task, _split_val, with_dataset_augment
from lifelong.errors import ConfigError

DOMAINS = ("permuted", "rotated", "sessions")
SESSION_DATASETS = ("core50",)  # datasets recorded in sessions


def permutations(n_tasks: int, n_pixels: int, seed: int) -> list[torch.Tensor]:
    """One pixel permutation per task from `numpy.random.default_rng(seed)`; task 0's is the identity."""
    rng = np.random.default_rng(seed)
    return [torch.arange(n_pixels)] + [torch.as_tensor(rng.permutation(n_pixels)) for _ in range(n_tasks - 1)]


def angles(n_tasks: int, max_angle: float) -> list[float]:
    """Evenly spaced rotations 0 .. max_angle degrees: task 0 upright, the last rotated by `max_angle`."""
    if n_tasks == 1:
        return [0.0]
    return [max_angle * t / (n_tasks - 1) for t in range(n_tasks)]


def permute(split: ImageSet, permutation: torch.Tensor) -> ImageSet:
    n, c, h, w = split.x.shape
    return ImageSet(split.x.reshape(n, c, h * w)[:, :, permutation].reshape(n, c, h, w).contiguous(), split.y,
                    split.class_names)


def rotate(split: ImageSet, angle: float) -> ImageSet:
    """Rotation about the centre (bilinear, zero fill), computed once on the uint8 images."""
    from torchvision.transforms.functional import InterpolationMode
    from torchvision.transforms.functional import rotate as tv_rotate

    if angle == 0:
        return split
    return ImageSet(tv_rotate(split.x, angle, interpolation=InterpolationMode.BILINEAR), split.y, split.class_names)


def build_domain_scenario(train: ImageSet, test: ImageSet, domain: str, n_tasks: int, seed: int = 0,
                          max_angle: float = 180.0, val_fraction: float = 0.0, permutation_seed: int | None = None,
                          n_classes: int | None = None) -> Scenario:
    if domain not in DOMAINS[:2]:
        raise ConfigError(f"scenario.domain={domain!r} is unknown; valid choices: {list(DOMAINS)}")
    if n_tasks < 1:
        raise ConfigError(f"scenario.n_tasks={n_tasks} must be at least 1")
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"scenario.val_fraction={val_fraction} must be in [0, 1)")
    n_classes = n_classes or int(train.y.max()) + 1
    h, w = train.x.shape[2:]
    if domain == "permuted":
        perms = permutations(n_tasks, h * w, seed if permutation_seed is None else permutation_seed)
        shift = [lambda split, p=p: permute(split, p) for p in perms]
    else:
        shift = [lambda split, a=a: rotate(split, a) for a in angles(n_tasks, max_angle)]
    rng = np.random.default_rng(seed)
    tasks = []
    for t in range(n_tasks):
        offset = t * n_classes
        task_train, task_test = shift[t](train), shift[t](test)
        task_train = ImageSet(task_train.x, task_train.y + offset, train.class_names)
        task_test = ImageSet(task_test.x, task_test.y + offset, test.class_names)
        task_train, task_val = _split_val(task_train, val_fraction, rng)
        tasks.append(Task(t, list(range(n_classes)), offset, task_train, task_val, task_test,
                          label_space=n_classes))
    return Scenario(tasks, list(range(n_classes)))


def build_session_scenario(sessions: dict[int, ImageSet], test: ImageSet, val_fraction: float = 0.0,
                           seed: int = 0, n_classes: int | None = None) -> Scenario:
    """One task per session, in the dict's order; every task's test split is `test` (in its own block)."""
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"scenario.val_fraction={val_fraction} must be in [0, 1)")
    n_classes = n_classes or int(max(int(s.y.max()) for s in sessions.values())) + 1
    rng = np.random.default_rng(seed)
    tasks = []
    for t, images in enumerate(sessions.values()):
        offset = t * n_classes
        task_train, task_val = _split_val(ImageSet(images.x, images.y + offset, images.class_names), val_fraction, rng)
        tasks.append(Task(t, list(range(n_classes)), offset, task_train, task_val,
                          ImageSet(test.x, test.y + offset, test.class_names), label_space=n_classes))  # x is shared
    return Scenario(tasks, list(range(n_classes)))


def _session_scenario(dataset, data_root: str, seed: int, n_tasks: int, val_fraction: float) -> Scenario:
    from pathlib import Path

    from lifelong.data.core50 import TEST_SESSIONS, TRAIN_SESSIONS, load_core50_sessions

    if dataset["name"] not in SESSION_DATASETS:
        raise ConfigError(f"scenario.domain=sessions needs a dataset recorded in sessions ({list(SESSION_DATASETS)}), "
                          f"not dataset={dataset['name']}; use scenario.domain=permuted or rotated")
    if dataset.get("split", "sessions") != "sessions":
        raise ConfigError(f"dataset.split={dataset.get('split')} pools the sessions, but scenario.domain=sessions "
                          f"trains on each session in turn: set dataset.split=sessions")
    train_sessions = list(dataset.get("train_sessions") or TRAIN_SESSIONS)
    if n_tasks != len(train_sessions):
        raise ConfigError(f"scenario.n_tasks={n_tasks} but scenario.domain=sessions makes one task per training "
                          f"session, {len(train_sessions)} here (dataset.train_sessions={train_sessions}): set "
                          f"scenario.n_tasks={len(train_sessions)}")
    sessions, test = load_core50_sessions(Path(data_root).expanduser().absolute(), int(dataset.get("image_size", 128)),
                                          train_sessions, list(dataset.get("test_sessions") or TEST_SESSIONS),
                                          bool(dataset.get("cache", True)))
    scenario = build_session_scenario(sessions, test, val_fraction, seed, n_classes=dataset["n_classes"])
    scenario = with_dataset_augment(scenario, dataset, f"{dataset['name']}-sessions")
    for task, session in zip(scenario.tasks, sessions):
        task.name = f"{dataset['name']}-s{session}"
    return scenario


def domain_incremental(dataset, data_root: str, seed: int, n_tasks: int, domain: str = "permuted",
                       max_angle: float = 180.0, val_fraction: float = 0.0,
                       permutation_seed: int | None = None) -> Scenario:
    """The `scenario=domain_incremental` builder: one dataset, one input domain per task."""
    if domain == "sessions":
        return _session_scenario(dataset, data_root, seed, n_tasks, val_fraction)
    if dataset["name"] in SESSION_DATASETS:
        raise ConfigError(f"dataset={dataset['name']} is domain-incremental by its recording sessions: "
                          f"use scenario.domain=sessions (not {domain})")
    train, test = load_dataset(dataset["name"], data_root, download=dataset.get("download", True), options=dataset)
    if not isinstance(train, ImageSet):
        raise ConfigError(f"scenario=domain_incremental permutes or rotates in-memory images; dataset="
                          f"{dataset['name']} is file-backed: use scenario=class_incremental")
    scenario = build_domain_scenario(train, test, domain, n_tasks, seed, max_angle, val_fraction, permutation_seed,
                                     n_classes=dataset["n_classes"])
    return with_dataset_augment(scenario, dataset, f"{dataset['name']}-{domain}")
