"""The exemplar memory every rehearsal method shares (config group `memory/`).

API (what methods code against):

    memory = ExemplarMemory(selection="herding", size=2000, per_class=None)
    memory.update(task_train, classes, features=f, logits=g)   # after a task (the base class does it)
    memory.add_batch(x_uint8, y, logits=...)                    # online (reservoir, greedy): one batch
    memory.sample(n, generator=None) -> MemorySample(x, y, payloads, index)   # random items (this rank's share)
    memory.as_imageset() -> ImageSet                            # every item, on the CPU
    memory.images, memory.labels, memory.payload(name)          # the stored tensors
    len(memory), memory.class_counts(), memory.stats()          # stats(): for results.json

- Items are uint8 images `[N, C, H, W]` (as in the in-memory datasets, so the task's batch
  augmentation applies to them) with global labels, plus optional named per-sample payloads
  (`add_batch(x, y, logits=...)`, e.g. DER's logits). A payload whose last dimension grows (logits of
  a growing head) widens the storage; older items are zero-padded on the right.
- Budget: `per_class` exemplars of every seen class, or else `size` in total spread evenly over the
  seen classes (`size // n_seen_classes` each, FACIL `exemplars_dataset.py` `_exemplars_per_class_num`).
  `reservoir` is not class-balanced: `size` items, Mammoth's `utils/buffer.py` reservoir.
- Selection (`update` after each task): new classes are picked from the task's training data by
  `random`, `herding` (iCaRL Alg. 4 on L2-normalised features, FACIL `HerdingExemplarsSelector`),
  `entropy` (highest softmax entropy first, FACIL `EntropyExemplarsSelector`) or `distance` (lowest
  true-class logit first, FACIL `DistanceExemplarsSelector`); each class's items are kept in
  priority order, so shrinking an old class keeps its first m (iCaRL Alg. 5, ReduceExemplarSet).
  Online selections stream the task's data (in a random order) through `add_batch` instead:
  `reservoir` (Vitter's algorithm R, Mammoth) and `greedy` (GDumb's greedy class-balanced sampler:
  a sample of a class below the largest class's count replaces a random item of the largest class).
- State: every tensor is a buffer (resized to the saved shapes when a state_dict is loaded), the
  memory's own random generator state included, and the per-task stats are extra state, so a
  checkpoint restores it bit-identically. Under DDP `update` broadcasts rank zero's result and
  `add_batch` gathers every rank's slice first, so every rank holds the same memory; `sample` draws
  the same items on every rank and returns this rank's slice of them (the ranks split a replay
  batch as they split the task's batches).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from lifelong import distributed
from lifelong.data.datasets import ImageSet
from lifelong.errors import ConfigError

SELECTIONS = ("random", "herding", "entropy", "distance", "reservoir", "greedy")
ONLINE = ("reservoir", "greedy")


@dataclass
class MemorySample:
    x: torch.Tensor               # uint8 images
    y: torch.Tensor               # labels
    payloads: dict[str, torch.Tensor]
    index: torch.Tensor           # positions in the memory


def herding(features: torch.Tensor, m: int) -> torch.Tensor:
    """Indices of `m` rows picked greedily so that their running mean stays closest to the mean of
    every row (iCaRL Alg. 4), on L2-normalised rows; each row is picked once (FACIL)."""
    f = nn.functional.normalize(features.double(), dim=1)
    mu = f.mean(0)
    chosen: list[int] = []
    total = torch.zeros_like(mu)
    available = torch.ones(len(f), dtype=torch.bool)
    for k in range(min(m, len(f))):
        dist = (mu - (total + f) / (k + 1)).norm(dim=1)
        dist[~available] = float("inf")
        i = int(dist.argmin())
        chosen.append(i)
        available[i] = False
        total += f[i]
    return torch.tensor(chosen, dtype=torch.long)


class ExemplarMemory(nn.Module):
    def __init__(self, selection: str = "herding", size: int = 2000, per_class: int | None = None,
                 batch_size: int = 256, seed: int | None = None):
        super().__init__()
        if selection not in SELECTIONS:
            raise ConfigError(f"memory.selection={selection!r} is unknown; valid choices: {list(SELECTIONS)}")
        if per_class is None and (not isinstance(size, int) or size < 1):
            raise ConfigError(f"memory.size={size!r} must be a positive integer (or set memory.per_class)")
        if per_class is not None and (selection == "reservoir" or per_class < 1):
            raise ConfigError(f"memory.per_class={per_class!r}: needs a positive integer and a class-balanced "
                              f"selection (not reservoir); or memory.per_class=null with memory.size")
        self.selection, self.size, self.per_class, self.batch_size = selection, size, per_class, batch_size
        self.generator = torch.Generator()
        self.generator.manual_seed(torch.initial_seed() if seed is None else seed)  # the run seed: same on every rank
        self.register_buffer("images", torch.zeros(0, 1, 1, 1, dtype=torch.uint8))
        self.register_buffer("labels", torch.zeros(0, dtype=torch.long))
        self.register_buffer("n_seen", torch.zeros((), dtype=torch.long))   # stream length (reservoir)
        self.register_buffer("n_classes", torch.zeros((), dtype=torch.long))  # seen classes
        self.register_buffer("rng_state", self.generator.get_state())
        self.payload_names: list[str] = []
        self.history: list[dict] = []

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return len(self.labels)

    def payload(self, name: str) -> torch.Tensor:
        return getattr(self, f"payload_{name}")

    def as_imageset(self) -> ImageSet:
        return ImageSet(self.images.cpu(), self.labels.cpu())

    def class_counts(self) -> dict[int, int]:
        classes, counts = torch.unique(self.labels.cpu(), return_counts=True)
        return {int(c): int(n) for c, n in zip(classes, counts)}

    def capacity_per_class(self, n_classes: int) -> int:
        return self.per_class if self.per_class is not None else self.size // max(n_classes, 1)

    def nbytes(self) -> int:
        tensors = [self.images, self.labels, *(self.payload(n) for n in self.payload_names)]
        return sum(t.numel() * t.element_size() for t in tensors)

    def stats(self) -> dict:
        counts = self.class_counts()
        return {"selection": self.selection, "total": len(self), "bytes": self.nbytes(),
                "per_class": {str(c): n for c, n in counts.items()},
                "min_per_class": min(counts.values(), default=0), "max_per_class": max(counts.values(), default=0)}

    def sample(self, n: int, generator: torch.Generator | None = None) -> MemorySample:
        """`min(n, len)` distinct random items (Mammoth `Buffer.get_data`), drawn with the memory's own
        generator by default, so every DDP rank draws the same items; each rank then keeps its slice
        of them (as the runner slices every global batch, `distributed.RankSlice`), so the ranks
        together replay the batch one process would."""
        gen = generator or self.generator
        index = torch.randperm(len(self), generator=gen)[: min(n, len(self))].to(self.labels.device)
        world, rank = distributed.world_size(), distributed.rank()
        if len(index) >= world > 1:
            index = index[rank * len(index) // world: (rank + 1) * len(index) // world]
        return MemorySample(self.images[index], self.labels[index],
                            {k: self.payload(k)[index] for k in self.payload_names}, index)

    # ------------------------------------------------------------------ writing
    def _set(self, images: torch.Tensor, labels: torch.Tensor, payloads: dict[str, torch.Tensor]) -> None:
        self.images, self.labels = images, labels
        for name, value in payloads.items():
            if name not in self.payload_names:
                self.payload_names.append(name)
            setattr(self, f"payload_{name}", value)
        for name in self.payload_names:
            if name not in payloads:
                setattr(self, f"payload_{name}", self.payload(name)[:0])

    def _payloads_like(self, payloads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Stored payloads widened to the incoming ones' last dimension (zero-padded)."""
        out = {}
        for name, new in payloads.items():
            if name in self.payload_names and len(self.payload(name)):
                old = self.payload(name).to(new.dtype)
                if old.shape[-1] < new.shape[-1]:
                    old = nn.functional.pad(old, (0, new.shape[-1] - old.shape[-1]))
                out[name] = old
            else:
                out[name] = new.new_zeros((len(self), *new.shape[1:]))
        return out

    @torch.no_grad()
    def update(self, task_train: ImageSet, classes: Sequence[int], features: Callable | None = None,
               logits: Callable | None = None, per_class: int | None = None) -> None:
        """After a task: add its classes' exemplars from `task_train` (uint8 images, global labels),
        shrink the old classes to the new per-class budget, record the stats.

        `features(x_uint8) -> [B, D]` (herding) and `logits(x_uint8) -> [B, n_seen]` (entropy,
        distance) run the model on a batch of raw images. `per_class` overrides the budget for this
        update (BiC keeps part of each class's share out of the training memory).
        """
        if not isinstance(task_train, ImageSet):
            raise ConfigError("memory= needs an in-memory dataset (uint8 ImageSet: digits, mnist, cifar); "
                              "use memory=none with file datasets")
        self.n_classes.fill_(int(self.n_classes) + len(classes))
        if self.selection in ONLINE:
            order = torch.randperm(len(task_train), generator=self.generator)
            for start in range(0, len(order), self.batch_size):
                i = order[start : start + self.batch_size]
                self.add_batch(task_train.x[i], task_train.y[i], gather=False)
        else:
            self._select(task_train, classes, features, logits, per_class)
        self.rng_state = self.generator.get_state().to(self.labels.device)
        distributed.broadcast(self._resize_like_rank0())
        self.generator.set_state(self.rng_state.cpu())
        self.record()

    def _select(self, data: ImageSet, classes, features, logits, per_class: int | None = None) -> None:
        m = self.capacity_per_class(int(self.n_classes)) if per_class is None else per_class
        device = self.labels.device
        keep = torch.cat([torch.nonzero(self.labels == c).flatten()[:m] for c in self.labels.unique()]
                         or [torch.zeros(0, dtype=torch.long, device=device)])
        scores = None
        if self.selection in ("herding", "entropy", "distance"):
            fn = features if self.selection == "herding" else logits
            if fn is None:
                raise ValueError(f"memory selection {self.selection!r} needs the model's "
                                 f"{'features' if self.selection == 'herding' else 'logits'}")
            scores = torch.cat([fn(data.x[i : i + self.batch_size]).float().cpu()
                                for i in range(0, len(data), self.batch_size)])
        picked = []
        for c in classes:
            idx = torch.nonzero(data.y == c).flatten()
            if self.selection == "random":
                order = torch.randperm(len(idx), generator=self.generator)
            elif self.selection == "herding":
                order = herding(scores[idx], m)
            elif self.selection == "entropy":  # FACIL: highest entropy first
                p = scores[idx].softmax(1)
                order = (p * p.clamp_min(1e-12).log()).sum(1).argsort(stable=True)
            else:  # distance: FACIL, smallest true-class logit (closest to the boundary) first
                order = scores[idx, c].argsort(stable=True)
            picked.append(idx[order[:m]])
        picked = torch.cat(picked) if picked else torch.zeros(0, dtype=torch.long)
        new_x, new_y = data.x[picked].to(device), data.y[picked].to(device)
        images = new_x if len(self) == 0 else torch.cat([self.images[keep], new_x])
        self._set(images, torch.cat([self.labels[keep], new_y]),
                  {k: torch.cat([self.payload(k)[keep], self.payload(k).new_zeros((len(new_y),
                                                                                   *self.payload(k).shape[1:]))])
                   for k in self.payload_names})

    @torch.no_grad()
    def add_batch(self, x: torch.Tensor, y: torch.Tensor, gather: bool = True, **payloads: torch.Tensor) -> None:
        """Online insertion of one batch of uint8 images (reservoir or greedy); under DDP (gather=True)
        every rank's slice is gathered first, in rank order, so every rank inserts the same batch."""
        if self.selection not in ONLINE:
            raise ValueError(f"add_batch needs an online selection ({ONLINE}), not {self.selection!r}")
        if gather:
            x, y = distributed.all_gather_cat(x), distributed.all_gather_cat(y)
            payloads = {k: distributed.all_gather_cat(v) for k, v in payloads.items()}
        device = self.labels.device
        x, y = x.to(device), y.to(device).long()
        payloads = {k: v.detach().to(device) for k, v in payloads.items()}
        if len(self) == 0 and self.images.shape[1:] != x.shape[1:]:
            self.images = x[:0].clone()
        stored = self._payloads_like(payloads)
        images, labels = self.images, self.labels
        room = self.size - len(labels)
        if room > 0:  # not full: append the first `room`
            images, labels = torch.cat([images, x[:room]]), torch.cat([labels, y[:room]])
            stored = {k: torch.cat([stored[k], v[:room]]) for k, v in payloads.items()}
        images, labels = images.clone(), labels.clone()
        for i in range(max(room, 0), len(y)):
            if self.selection == "reservoir":  # Mammoth buffer.py `reservoir`
                j = int(torch.randint(0, int(self.n_seen) + i + 1, (), generator=self.generator))
                if j >= self.size:
                    continue
            else:  # greedy class-balanced (GDumb): only a class below the largest one enters
                counts = torch.bincount(labels, minlength=int(max(labels.max(), y[i])) + 1)
                if counts[y[i]] >= counts.max():
                    continue
                largest = torch.nonzero(labels == counts.argmax()).flatten()
                j = int(largest[torch.randint(0, len(largest), (), generator=self.generator)])
            images[j], labels[j] = x[i], y[i]
            for k, v in payloads.items():
                stored[k][j] = v[i]
        self.n_seen += len(y)
        self._set(images, labels, stored)

    def record(self) -> None:
        """Append the current stats to the per-task history (results.json's `memory`)."""
        self.history.append(self.stats())

    def _resize_like_rank0(self) -> "ExemplarMemory":
        """Under DDP, make every buffer rank zero's size before a broadcast."""
        if not distributed.active():
            return self
        for name, buf in list(self._buffers.items()):
            n = torch.tensor([len(buf) if buf.dim() else 0], device=buf.device)
            distributed.broadcast(n)
            if buf.dim() and len(buf) != int(n):
                setattr(self, name, buf.new_zeros((int(n), *buf.shape[1:])))
        return self

    # ------------------------------------------------------------------ state
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        self.rng_state = self.generator.get_state().to(self.labels.device)
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        """Buffers take the saved shapes (the memory grows after tasks), payloads are recreated."""
        for key, value in state_dict.items():
            if not key.startswith(prefix) or "." in key[len(prefix):]:
                continue
            name = key[len(prefix):]
            if name.startswith("payload_") and name[len("payload_"):] not in self.payload_names:
                self.payload_names.append(name[len("payload_"):])
            if name.startswith("payload_") or name in self._buffers:
                setattr(self, name, torch.empty_like(value, device=self.labels.device))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        self.generator.set_state(self.rng_state.cpu())

    def __setattr__(self, name, value):
        if name.startswith("payload_") and isinstance(value, torch.Tensor) and name not in self._buffers:
            self.register_buffer(name, value)
        else:
            super().__setattr__(name, value)

    def get_extra_state(self):
        return {"history": self.history, "payload_names": self.payload_names}

    def set_extra_state(self, state) -> None:
        self.history, self.payload_names = list(state["history"]), list(state["payload_names"])


def require(memory: ExemplarMemory | None, method: str, selections: Sequence[str] | None = None,
            default: str = "random") -> ExemplarMemory:
    """A method's check, at construction, that it got a memory (of one of `selections`)."""
    if memory is None or (selections is not None and memory.selection not in selections):
        got = "memory=none" if memory is None else f"memory={memory.selection}"
        valid = f"one of {list(selections)}" if selections is not None else f"e.g. memory={default}"
        raise ConfigError(f"method={method} needs an exemplar memory ({valid}; its config selects "
                          f"memory={default}), got {got}")
    return memory
