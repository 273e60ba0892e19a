"""Loaders for one phase of one task, and the device-side augmentation hook.

In-memory datasets are served in whole batches: the sampler yields a list of indices and the
tensors are indexed once per batch (no per-sample collate), then `on_after_batch_transfer`
augments the batch on the device the model is on.
"""
from __future__ import annotations

import itertools

from typing import Iterator, Sequence

import lightning as L
import torch
from torch.utils.data import BatchSampler, ConcatDataset, DataLoader, Dataset, RandomSampler, SequentialSampler

from lifelong.data.datasets import ImageSet
from lifelong.data.transforms import BatchAugment


class TensorBatches(Dataset):
    """Indexable by a list of indices: returns the whole batch `(x, y)` at once."""

    def __init__(self, data: ImageSet):
        self.x, self.y = data.x, data.y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index):
        return self.x[index], self.y[index]


def concat(sets: Sequence[ImageSet | Dataset]) -> ImageSet | Dataset:
    if len(sets) == 1:
        return sets[0]
    if all(isinstance(s, ImageSet) for s in sets):
        return ImageSet(torch.cat([s.x for s in sets]), torch.cat([s.y for s in sets]))
    return ConcatDataset([TensorPairs(s) if isinstance(s, ImageSet) else s for s in sets])


class TensorPairs(Dataset):
    """An `ImageSet` seen as a per-sample dataset (to pool it with file datasets)."""

    def __init__(self, data: ImageSet):
        self.x, self.y = data.x, data.y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def batch_loader(data: ImageSet | Dataset, batch_size: int, shuffle: bool, seed: int | None = None,
                 drop_last: bool = False, num_workers: int = 0) -> DataLoader:
    """Whole-batch indexing for `ImageSet`s; a standard DataLoader (workers) for other datasets."""
    generator = None
    if shuffle:
        generator = torch.Generator()
        generator.manual_seed(seed if seed is not None else int(torch.randint(0, 2**31 - 1, ()).item()))
    drop_last = drop_last and len(data) > batch_size
    if not isinstance(data, ImageSet):
        return DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=generator, drop_last=drop_last,
                          num_workers=num_workers, persistent_workers=num_workers > 0)
    sampler = RandomSampler(range(len(data)), generator=generator) if shuffle else SequentialSampler(range(len(data)))
    return DataLoader(
        TensorBatches(data),
        sampler=BatchSampler(sampler, batch_size=batch_size, drop_last=drop_last),
        batch_size=None,
        num_workers=num_workers,
    )


class TaskData(L.LightningDataModule):
    """Train and validation data of one phase: the current task, or several tasks pooled."""

    def __init__(self, train: ImageSet, val: ImageSet, augment: BatchAugment, batch_size: int,
                 eval_batch_size: int = 512, num_workers: int = 0, seed: int = 0, drop_last: bool = False):
        super().__init__()
        self.train, self.val, self.augment = train, val, augment
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.seed, self.drop_last = num_workers, seed, drop_last

    def train_dataloader(self) -> DataLoader:
        return batch_loader(self.train, self.batch_size, shuffle=True, seed=self.seed,
                            drop_last=self.drop_last, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader | list:
        if len(self.val) == 0:
            return []
        return batch_loader(self.val, self.eval_batch_size, shuffle=False, num_workers=self.num_workers)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y = batch
        return self.augment(x, train=self.trainer is not None and self.trainer.training), y

    def batches(self, split: str = "train", device: torch.device | str = "cpu", augment: bool = False,
                batch_size: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Plain iteration for work between tasks (Fisher, feature caches): batches on `device`; at
        most `max_batches` of them (the runner sets it from `loop_limit`: debug=smoke)."""
        data = self.train if split == "train" else self.val
        loader = batch_loader(data, batch_size or self.eval_batch_size, shuffle=False)
        for x, y in itertools.islice(loader, getattr(self, "max_batches", None)):
            yield self.augment(x.to(device), train=augment), y.to(device)
