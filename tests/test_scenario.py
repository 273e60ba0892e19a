"""Class orders, task splits and label remapping."""
import random

import pytest
import torch

from lifelong.data.datasets import ImageSet
from lifelong.data.scenario import ICARL_1993, build_scenario, resolve_class_order, task_sizes
from lifelong.errors import ConfigError


def fake_dataset(n_classes=10, per_class=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n_classes).repeat_interleave(per_class)
    x = torch.randint(0, 256, (len(y), 1, 4, 4), dtype=torch.uint8, generator=g)
    x[:, 0, 0, 0] = y.to(torch.uint8)  # remember the original class inside the image
    return ImageSet(x, y)


def test_icarl1993_order_starts_with_the_published_first_task():
    order = resolve_class_order("icarl1993", 100, seed=5)
    assert set(order[:10]) == {68, 56, 78, 8, 23, 84, 90, 65, 74, 76}
    assert sorted(order) == list(range(100)) and order == ICARL_1993


def test_random_order_is_pythons_seeded_shuffle_as_in_abd():
    expected = list(range(100))
    random.seed(1)
    random.shuffle(expected)
    assert resolve_class_order("random", 100, seed=1) == expected
    assert resolve_class_order("random", 100, seed=0)[:6] == [23, 8, 11, 7, 48, 13]  # ABD seed 0
    assert resolve_class_order("random", 100, seed=0) != resolve_class_order("random", 100, seed=1)


def test_explicit_and_bad_orders():
    assert resolve_class_order([2, 0, 1], 3, seed=0) == [2, 0, 1]
    with pytest.raises(ConfigError, match="every class id"):
        resolve_class_order([0, 1, 1], 3, seed=0)
    with pytest.raises(ConfigError, match="valid choices"):
        resolve_class_order("sorted", 3, seed=0)
    with pytest.raises(ConfigError, match="CIFAR-100"):
        resolve_class_order("icarl1993", 10, seed=0)


def test_task_sizes_and_their_errors():
    assert task_sizes(100, 10, None) == [10] * 10
    assert task_sizes(100, 6, 50) == [50] + [10] * 5
    with pytest.raises(ConfigError, match=r"scenario.n_tasks=3 does not divide.*\[1, 2, 5, 10\]"):
        task_sizes(10, 3, None)
    with pytest.raises(ConfigError, match="scenario.nc_first_task=10 is too large"):
        task_sizes(10, 3, 10)
    with pytest.raises(ConfigError, match="equal tasks"):
        task_sizes(10, 3, 5)


def test_labels_are_remapped_to_contiguous_blocks_in_class_order():
    train, test = fake_dataset(), fake_dataset(per_class=5, seed=1)
    s = build_scenario(train, test, n_tasks=3, nc_first_task=4, class_order=[9, 8, 7, 6, 5, 4, 3, 2, 1, 0])
    assert s.task_sizes == [4, 3, 3]
    assert [t.offset for t in s] == [0, 4, 7]
    for task in s:
        for split in (task.train, task.test):
            assert set(split.y.tolist()) == set(task.class_range)
            original = split.x[:, 0, 0, 0].long()
            assert torch.equal(torch.tensor(s.class_order)[split.y], original)
    assert s[1].classes == [5, 4, 3]


def test_validation_split_is_stratified_disjoint_and_seeded():
    train, test = fake_dataset(), fake_dataset(per_class=5)
    a = build_scenario(train, test, 2, val_fraction=0.25, seed=3)
    b = build_scenario(train, test, 2, val_fraction=0.25, seed=3)
    for task in a:
        assert len(task.val) == 5 * 5 and len(task.train) == 15 * 5
        assert torch.bincount(task.val.y - task.offset).tolist() == [5] * 5
    assert torch.equal(a[0].val.x, b[0].val.x) and a.class_order == b.class_order
    train_rows = {tuple(r.flatten().tolist()) for r in a[0].train.x}
    assert not any(tuple(r.flatten().tolist()) in train_rows for r in a[0].val.x)
