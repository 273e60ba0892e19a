"""A small exemplar buffer for the rehearsal methods of issue 12b (DER, DER++, BiC, E2E, LUCIR).

Stand-in until the shared `lifelong.memory.ExemplarMemory` (issue 12a) lands: uint8 images and labels
as buffers (batch augmentation applies when they are replayed), optional stored logits (DER), a
seeded generator whose state is in `state_dict()` (extra state), so a checkpoint restores the buffer
and its random stream bit-identically. Buffers change shape as the memory fills; loading resizes them.

Selections: `reservoir_add` (Mammoth `utils/buffer.py` reservoir) and `keep_class_balanced` (a fixed
total budget spread evenly over the seen classes, random samples per class: FACIL's default
`exemplar_selection=random`, `datasets/exemplars_selection.py`).
"""
from __future__ import annotations

import torch
from torch import nn

from lifelong.data.datamodule import batch_loader
from lifelong.data.datasets import ImageSet


class ExemplarBuffer(nn.Module):
    def __init__(self, size: int, seed: int = 0):
        super().__init__()
        self.size = size
        self.register_buffer("images", torch.zeros(0, 1, 1, 1, dtype=torch.uint8))
        self.register_buffer("labels", torch.zeros(0, dtype=torch.long))
        self.register_buffer("logits", torch.zeros(0, 0))          # DER: logits when stored, zero-padded
        self.register_buffer("widths", torch.zeros(0, dtype=torch.long))  # how many logits are real
        self.register_buffer("n_seen", torch.zeros((), dtype=torch.long))  # reservoir: samples offered so far
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.labels)

    # ------------------------------------------------------------------ state
    def get_extra_state(self):
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state) -> None:
        self.generator.set_state(state["generator"])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("images", "labels", "logits", "widths"):  # the saved buffer may be larger by now
            if prefix + name in state_dict:
                self._buffers[name] = torch.empty_like(state_dict[prefix + name], device=self._buffers[name].device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def set(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        device = self.labels.device
        self.images, self.labels = images.to(device), labels.to(device).long()
        self.logits = torch.zeros(len(labels), 0, device=device)
        self.widths = torch.zeros(len(labels), dtype=torch.long, device=device)

    def as_imageset(self) -> ImageSet:
        return ImageSet(self.images.cpu(), self.labels.cpu())

    def stats(self) -> dict:
        counts = torch.bincount(self.labels.cpu()).tolist() if len(self) else []
        return {"total": len(self), "per_class": counts,
                "bytes": self.images.numel() * self.images.element_size() + self.logits.numel() * 4}

    # ------------------------------------------------------------------ reservoir (Mammoth)
    @torch.no_grad()
    def reservoir_add(self, images: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor | None = None) -> None:
        """Vitter's reservoir: the i-th sample offered is kept with probability size / i."""
        if len(self) == 0:
            self.images = torch.zeros(0, *images.shape[1:], dtype=torch.uint8, device=images.device)
        if logits is not None and logits.shape[1] > self.logits.shape[1]:
            pad = torch.zeros(len(self), logits.shape[1] - self.logits.shape[1], device=self.logits.device)
            self.logits = torch.cat([self.logits, pad], dim=1)
        for i in range(len(labels)):
            n = int(self.n_seen)
            self.n_seen += 1
            if n < self.size:
                slot = len(self)
                self.images = torch.cat([self.images, images[i : i + 1]])
                self.labels = torch.cat([self.labels, labels[i : i + 1]])
                self.logits = torch.cat([self.logits, self.logits.new_zeros(1, self.logits.shape[1])])
                self.widths = torch.cat([self.widths, self.widths.new_zeros(1)])
            else:
                slot = int(torch.randint(0, n + 1, (), generator=self.generator))
                if slot >= self.size:
                    continue
                self.images[slot], self.labels[slot] = images[i], labels[i]
            if logits is not None:
                self.logits[slot].zero_()
                self.logits[slot, : logits.shape[1]] = logits[i]
                self.widths[slot] = logits.shape[1]

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """n distinct stored samples (or all), chosen with the buffer's own generator."""
        index = torch.randperm(len(self), generator=self.generator)[: min(n, len(self))].to(self.labels.device)
        return self.images[index], self.labels[index], self.logits[index], self.widths[index]

    # ------------------------------------------------------------------ class-balanced budget (FACIL)
    def keep_class_balanced(self, data: ImageSet, new_classes: range, n_seen_classes: int,
                            per_class: int | None = None) -> None:
        """After a task: `per_class` (default size // n_seen_classes) samples of each seen class; old
        classes keep the first ones they had, new classes get random ones of `data`."""
        m = self.size // n_seen_classes if per_class is None else per_class
        keep_x, keep_y = [], []
        for c in self.labels.unique().tolist():
            index = (self.labels == c).nonzero().flatten()[:m]
            keep_x.append(self.images[index].cpu())
            keep_y.append(self.labels[index].cpu())
        for c in new_classes:
            index = (data.y == c).nonzero().flatten()
            index = index[torch.randperm(len(index), generator=self.generator)[:m]]
            keep_x.append(data.x[index])
            keep_y.append(data.y[index])
        self.set(torch.cat(keep_x), torch.cat(keep_y))


def shuffled_batches(data: ImageSet, batch_size: int):
    """A phase's training batches: raw uint8 (the method augments them, see `augment_raw`), in an order
    seeded from torch's RNG (which the runner seeds per task)."""
    return batch_loader(data, batch_size, shuffle=True, seed=int(torch.randint(0, 2**31 - 1, ()).item()))


def augment_raw(task, x: torch.Tensor) -> torch.Tensor:
    """Training augmentation of a raw uint8 batch (batches of a `DataLoader` phase arrive untouched)."""
    return task.augment(x, train=True) if x.dtype == torch.uint8 else x


def adopt_shared_budget(method, memory_size: int) -> int:
    """These methods keep their own buffer until they are ported to the shared memory. A `memory=`
    option (e.g. an experiment's `memory=herding memory.size=2000`) gives its total size; the shared
    memory itself is dropped (not updated, not trained on). Its `per_class` and `selection` do not apply."""
    memory, method.memory = method.memory, None
    if memory is None:
        return memory_size
    if memory.per_class is not None:
        from lifelong.errors import ConfigError

        raise ConfigError(f"memory.per_class={memory.per_class} is not supported by method={type(method).__name__.lower()}, "
                          f"which keeps a total budget: set memory.size (or method.memory_size) instead")
    return memory.size
