"""Collectives for work between fits under DDP (`hardware=ddp`); every function is a no-op without it.

With DDP every rank runs the whole task loop (`lifelong.run`), so a method's `end_task` runs on every
rank. Whatever it computes from data must end identical on every rank:

- statistics summed over data (EWC's Fisher, feature means): each rank takes its `shard` of the
  batches, then `all_reduce_sum` the sums and the counts (or `all_reduce_mean` equal-sized parts);
- whole models trained between tasks (ABD's generator, EBLL's autoencoders, MIND's masks and
  BatchNorm snapshots): train on rank zero's random draws on every rank or on rank zero, then
  `broadcast` the module so that every rank holds rank zero's copy.
"""
from __future__ import annotations

from typing import Iterable, Iterator, TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def shard(items: Iterable[T]) -> Iterator[T]:
    """This rank's share of `items`: every world_size-th item, starting at its rank."""
    n, r = world_size(), rank()
    for i, item in enumerate(items):
        if i % n == r:
            yield item


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, in place; returns the tensor."""
    if active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean over ranks, in place; returns the tensor."""
    if active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor.div_(dist.get_world_size())
    return tensor


def broadcast(obj: nn.Module | torch.Tensor, src: int = 0) -> nn.Module | torch.Tensor:
    """Rank `src`'s values of a tensor, or of every parameter and buffer of a module, on every rank."""
    if not active():
        return obj
    tensors = [obj] if isinstance(obj, torch.Tensor) else [*obj.parameters(), *obj.buffers()]
    with torch.no_grad():
        for tensor in tensors:
            if tensor.dtype == torch.bool:  # gloo has no bool collectives
                as_int = tensor.data.to(torch.uint8)
                dist.broadcast(as_int, src=src)
                tensor.data.copy_(as_int.bool())
            else:
                dist.broadcast(tensor.data, src=src)
    return obj


class RankSlice(torch.utils.data.Sampler):
    """This rank's slice of every batch of `batches` (a sampler of index lists).

    Under DDP the runner splits each global batch of `batch_size` samples across the ranks, so that
    DDP steps on exactly the batches one process would (the gradients are averaged over ranks):
    `batch_size` keeps its single-process meaning and the same recipe gives the same results.
    A final batch with fewer samples than ranks is skipped, on every rank alike.
    """

    def __init__(self, batches, rank: int, world_size: int):
        self.sampler, self.rank, self.world_size = batches, rank, world_size

    def __iter__(self):
        for batch in self.sampler:
            batch = list(batch)
            if len(batch) < self.world_size:
                continue
            yield batch[self.rank * len(batch) // self.world_size: (self.rank + 1) * len(batch) // self.world_size]

    def __len__(self) -> int:
        return len(self.sampler)


def slice_batches(loader: torch.utils.data.DataLoader, rank: int, world_size: int) -> torch.utils.data.DataLoader:
    """`loader` with each batch cut to this rank's slice (see `RankSlice`); unchanged for one process."""
    if world_size == 1:
        return loader
    from torch.utils.data import DataLoader

    common = dict(num_workers=loader.num_workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                  persistent_workers=loader.persistent_workers)
    if loader.batch_sampler is not None:  # a standard DataLoader: batch_size + sampler
        return DataLoader(loader.dataset, batch_sampler=RankSlice(loader.batch_sampler, rank, world_size), **common)
    # whole-batch indexing (lifelong.data.datamodule.batch_loader): the sampler yields index lists
    return DataLoader(loader.dataset, sampler=RankSlice(loader.sampler, rank, world_size), batch_size=None, **common)


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's `tensor` (sizes may differ along dim 0), concatenated in rank order, on every rank."""
    if not active():
        return tensor
    n = torch.tensor([len(tensor)], device=tensor.device)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    longest = int(max(s.item() for s in sizes))
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: len(tensor)] = tensor
    parts = [torch.zeros_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)])


def union_of_names(names: Iterable[str]) -> list[str]:
    """The sorted union over ranks of each rank's `names`: a list every rank then walks in the same
    order (a metric created only on the ranks that saw a batch would sync on those ranks alone)."""
    names = sorted(set(names))
    if not active():
        return names
    every = [None] * world_size()
    dist.all_gather_object(every, names)
    return sorted(set().union(*every))


def broadcast_batchnorm_statistics(module: nn.Module) -> None:
    """Rank zero's BatchNorm running statistics on every rank (after a fit). DDP broadcasts buffers at
    the start of each forward, so after the last step each rank still holds its own batch's update."""
    if not active():
        return
    from torch.nn.modules.batchnorm import _BatchNorm

    for m in module.modules():
        if isinstance(m, _BatchNorm) and m.running_mean is not None:
            for tensor in (m.running_mean, m.running_var, m.num_batches_tracked):
                broadcast(tensor)
