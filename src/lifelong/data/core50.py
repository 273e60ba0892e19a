"""CORe50 (Lomonaco & Maltoni, "CORe50: a New Dataset and Benchmark for Continuous Object Recognition",
CoRL 2017): 50 household objects (10 categories of 5) filmed in 11 sessions (different backgrounds and
lighting, 8 indoor and 3 outdoor), about 300 frames per object and session, 164,866 images.

Files as distributed (`core50_128x128.zip`, the 128x128 crops): `core50_128x128/s<k>/o<j>/*.png`,
session k in 1..11, object j in 1..50 (`C_<kk>_<jj>_<fff>.png`). Object j is class j - 1.

The paper's protocol (Sec. 4): sessions 1, 2, 4, 5, 6, 8, 9, 11 are for training, sessions 3, 7 and
10 (one of them outdoor) are the fixed test set, in every scenario. Images are held in memory as uint8
`[N, 3, S, S]` (S = `dataset.image_size`, resized from 128 with PIL's bilinear filter when it differs),
like CIFAR: augmentation happens on whole batches (`lifelong.data.transforms`).

- Class-incremental (`scenario=class_incremental dataset=core50`): the 50 objects cut into tasks,
  trained on the training sessions, tested on the test sessions (`dataset.split=sessions`), or, as
  MIND's official code does, every session pooled and split 80/20 at random (`dataset.split=random`).
- Domain-incremental (`scenario=domain_incremental scenario.domain=sessions dataset=core50`): one task
  per training session, all 50 objects in each; every task is tested on the test sessions
  (`lifelong.data.domains.build_session_scenario`).

Decoding 165k PNGs takes minutes, so the decoded sessions are cached (`dataset.cache`) as one
`.pt` file per session and size under `<data_root>/.cache/core50/`, written atomically and keyed by
the list of files, so a changed folder is decoded again.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from lifelong.data.datasets import ImageSet
from lifelong.errors import ConfigError, DatasetNotFound

log = logging.getLogger(__name__)

FOLDER = "core50_128x128"
N_OBJECTS = 50
SESSIONS = tuple(range(1, 12))
TRAIN_SESSIONS = (1, 2, 4, 5, 6, 8, 9, 11)  # Lomonaco & Maltoni 2017, Sec. 4
TEST_SESSIONS = (3, 7, 10)
SPLITS = ("sessions", "random")
URL = "http://bias.csr.unibo.it/maltoni/download/core50/core50_128x128.zip"


def core50_root(data_root: Path) -> Path:
    """`<data_root>/core50_128x128`, or `data_root` itself when it holds the session folders."""
    for candidate in (data_root / FOLDER, data_root / "core50" / FOLDER, data_root):
        if (candidate / "s1").is_dir():
            return candidate
    raise DatasetNotFound(
        f"CORe50 is not in {data_root}: expected {data_root / FOLDER}/s1 .. s11/o1 .. o50/*.png. "
        f"Download {URL} (the 128x128 crops, about 2.6 GB), unzip it in {data_root} so that "
        f"{data_root / FOLDER / 's1' / 'o1'} holds PNGs, or point paths.data_root=<dir> (or LIFELONG_DATA) at the "
        f"folder that holds {FOLDER}/."
    )


def session_files(root: Path, session: int) -> list[tuple[Path, int]]:
    """(png, class) of one session, objects in order o1..o50, frames in file-name order."""
    folder = root / f"s{session}"
    if not folder.is_dir():
        raise DatasetNotFound(f"CORe50 session folder {folder} is missing: the archive {URL} unpacks s1 .. s11 "
                              f"into {root}")
    files = []
    for obj in range(1, N_OBJECTS + 1):
        files += [(png, obj - 1) for png in sorted((folder / f"o{obj}").glob("*.png"))]
    if not files:
        raise DatasetNotFound(f"CORe50 session folder {folder} holds no o<j>/*.png images ({URL})")
    return files


def _decode(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        if image.size != (size, size):
            image = image.resize((size, size), Image.BILINEAR)
        return np.asarray(image, dtype=np.uint8)


def _write_atomic(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_session(root: Path, session: int, image_size: int = 128, cache_dir: Path | None = None) -> ImageSet:
    """One session as an ImageSet (classes 0..49), from the cache when the same files were decoded before."""
    files = session_files(root, session)
    key = hashlib.sha1("\n".join(f"{p.relative_to(root)}" for p, _ in files).encode()).hexdigest()[:12]
    cached = None if cache_dir is None else cache_dir / f"s{session}_{image_size}px_{key}.pt"
    names = [f"o{j}" for j in range(1, N_OBJECTS + 1)]
    if cached is not None and cached.is_file():
        x, y = torch.load(cached)
        return ImageSet(x, y, names)
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:  # PIL decodes without the GIL
        images = list(pool.map(lambda f: _decode(f[0], image_size), files))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    y = torch.tensor([c for _, c in files], dtype=torch.long)
    if cached is not None:
        try:
            _write_atomic((x, y), cached)
        except OSError as error:  # a read-only data folder: decode again next time
            log.warning("could not cache CORe50 session %d in %s: %s", session, cached, error)
    return ImageSet(x, y, names)


def _concat(sets: Sequence[ImageSet]) -> ImageSet:
    return ImageSet(torch.cat([s.x for s in sets]), torch.cat([s.y for s in sets]), sets[0].class_names)


def _sessions(value, key: str) -> tuple[int, ...]:
    sessions = tuple(int(s) for s in value)
    bad = [s for s in sessions if s not in SESSIONS]
    if bad or not sessions or len(set(sessions)) != len(sessions):
        raise ConfigError(f"dataset.{key}={list(value)} must list distinct CORe50 sessions from 1..11 "
                          f"(standard: train {list(TRAIN_SESSIONS)}, test {list(TEST_SESSIONS)})")
    return sessions


def _cache_dir(data_root: Path, cache: bool) -> Path | None:
    return data_root / ".cache" / "core50" if cache else None


def load_core50_sessions(data_root: Path, image_size: int = 128, train_sessions=TRAIN_SESSIONS,
                         test_sessions=TEST_SESSIONS, cache: bool = True) -> tuple[dict[int, ImageSet], ImageSet]:
    """Each training session on its own (the domain-incremental tasks) and the pooled test sessions."""
    train_sessions, test_sessions = _sessions(train_sessions, "train_sessions"), _sessions(test_sessions, "test_sessions")
    if set(train_sessions) & set(test_sessions):
        raise ConfigError(f"dataset.train_sessions={list(train_sessions)} and dataset.test_sessions="
                          f"{list(test_sessions)} overlap; a session is either trained or tested on")
    root, cache_dir = core50_root(data_root), _cache_dir(data_root, cache)
    train = {s: read_session(root, s, image_size, cache_dir) for s in train_sessions}
    test = _concat([read_session(root, s, image_size, cache_dir) for s in test_sessions])
    return train, test


def load_core50(root: Path, download: bool = False, image_size: int = 128, split: str = "sessions",
                train_sessions=TRAIN_SESSIONS, test_sessions=TEST_SESSIONS, test_fraction: float = 0.2,
                split_seed: int = 0, cache: bool = True, **_) -> tuple[ImageSet, ImageSet]:
    """Train and test ImageSets for the class-incremental scenario (there is no download: see `core50_root`).

    split=sessions: the training sessions pooled / the test sessions pooled (the paper's protocol).
    split=random: every session in `train_sessions` + `test_sessions` pooled, then a random
    `test_fraction` of the images held out with `split_seed` (MIND's official CORe50-CI split: all 11
    sessions, 80/20).
    """
    if split not in SPLITS:
        raise ConfigError(f"dataset.split={split!r} is unknown; valid choices: {list(SPLITS)}")
    if int(image_size) < 1:
        raise ConfigError(f"dataset.image_size={image_size} must be a positive number of pixels (128: as distributed)")
    sessions, test = load_core50_sessions(root, int(image_size), train_sessions, test_sessions, cache)
    train = _concat(list(sessions.values()))
    if split == "sessions":
        return train, test
    if not 0 < test_fraction < 1:
        raise ConfigError(f"dataset.test_fraction={test_fraction} must be in (0, 1)")
    pooled = _concat([train, test])
    order = torch.as_tensor(np.random.default_rng(split_seed).permutation(len(pooled)))
    n_test = int(round(test_fraction * len(pooled)))
    return pooled.subset(order[n_test:].sort().values), pooled.subset(order[:n_test].sort().values)
