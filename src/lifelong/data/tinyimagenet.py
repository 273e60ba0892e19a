"""TinyImageNet (Le & Yang, 2015; the CS231n release): 200 classes, 64x64 RGB, held in memory as uint8.

Read from `<data_root>/tiny-imagenet-200/` as distributed (http://cs231n.stanford.edu/tiny-imagenet-200.zip):

    wnids.txt                          the 200 class ids (WordNet ids), one a line
    train/<wnid>/images/*.JPEG         500 training images per class (100,000)
    val/images/*.JPEG                  10,000 validation images, labelled by
    val/val_annotations.txt            `<file>\\t<wnid>\\t<x0>\\t<y0>\\t<x1>\\t<y1>` lines

The labelled validation split is the test split (its `test/` images carry no labels), as in MIND's and
ABD's code (ABD `dataloaders/loader.py` iTinyIMNET). Class ids are the positions of the wnids in sorted
order (ABD: `sorted(os.listdir(train_dir))`; torchvision's ImageFolder order).

Decoding the 110,000 JPEGs is slow, so the decoded arrays are cached once next to the data, in
`tiny-imagenet-200/lifelong-uint8-cache.npz` (about 1.35 GB, uncompressed so that loading is a plain read),
written atomically (a temporary file renamed into place). The cache records the file list it was made
from; a folder whose listing changed is decoded again. Where the folder is read-only the images are
decoded every run (a warning says so).
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from lifelong.data.datasets import ImageSet
from lifelong.errors import DatasetNotFound

log = logging.getLogger("lifelong")

FOLDER = "tiny-imagenet-200"
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
CACHE = "lifelong-uint8-cache.npz"  # holds fingerprint, train_x/test_x [N, 3, 64, 64] uint8, train_y/test_y
SIZE = 64


def _missing(root: Path, what: str) -> DatasetNotFound:
    return DatasetNotFound(
        f"TinyImageNet is not in {root / FOLDER} ({what}). Download {URL} and unzip it in {root} so that "
        f"{root / FOLDER / 'wnids.txt'}, train/<wnid>/images/ and val/val_annotations.txt exist, or point "
        f"`paths.data_root=<dir>` (or the LIFELONG_DATA environment variable) at the folder that holds {FOLDER}/."
    )


def list_files(folder: Path) -> tuple[list[str], list[tuple[str, int]], list[tuple[str, int]]]:
    """The sorted wnids and the (relative path, class id) of every training and validation image."""
    root = folder.parent
    if not (folder / "wnids.txt").is_file():
        raise _missing(root, "no wnids.txt")
    wnids = sorted(w.strip() for w in (folder / "wnids.txt").read_text().split() if w.strip())
    index = {w: i for i, w in enumerate(wnids)}
    train = []
    for wnid in wnids:
        images = folder / "train" / wnid / "images"
        if not images.is_dir():
            raise _missing(root, f"no train/{wnid}/images/")
        names = sorted(n for n in os.listdir(images) if n.lower().endswith((".jpeg", ".jpg")))
        train += [(f"train/{wnid}/images/{n}", index[wnid]) for n in names]
    annotations = folder / "val" / "val_annotations.txt"
    if not annotations.is_file():
        raise _missing(root, "no val/val_annotations.txt")
    val = []
    for number, line in enumerate(annotations.read_text().splitlines(), 1):
        fields = line.strip().split("\t")
        if not fields[0]:
            continue
        if len(fields) < 2 or fields[1] not in index:
            raise DatasetNotFound(f"{annotations}:{number}: expected `<file>\\t<wnid>\\t...` with a wnid of "
                                  f"wnids.txt, got {line.strip()!r}")
        val.append((f"val/images/{fields[0]}", index[fields[1]]))
    return wnids, train, val


def _fingerprint(wnids, train, val) -> str:
    digest = hashlib.sha1()
    for path, label in [("wnids", 0), *((w, 0) for w in wnids), *train, *val]:
        digest.update(f"{path}\t{label}\n".encode())
    return digest.hexdigest()


def _decode(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")  # some TinyImageNet images are grayscale
        if image.size != (SIZE, SIZE):
            image = image.resize((SIZE, SIZE), Image.BILINEAR)
        return np.asarray(image, dtype=np.uint8)


def decode_all(folder: Path, files: list[tuple[str, int]], threads: int | None = None) -> np.ndarray:
    """`[N, 64, 64, 3]` uint8; PIL releases the GIL while decoding, so threads help."""
    out = np.empty((len(files), SIZE, SIZE, 3), dtype=np.uint8)
    threads = threads or min(16, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 4)

    def work(i: int) -> None:
        out[i] = _decode(folder / files[i][0])

    with ThreadPoolExecutor(max(1, threads)) as pool:
        list(pool.map(work, range(len(files)), chunksize=256))
    return out


def _save_atomically(path: Path, **arrays) -> bool:
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
    except OSError as error:
        log.warning("TinyImageNet: cannot write the decoded cache next to the data (%s); the JPEGs will be "
                    "decoded again next run", error)
        return False
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
        return True
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        log.warning("TinyImageNet: could not write %s (%s); the JPEGs will be decoded again next run", path, error)
        return False


def load_tinyimagenet(root: Path, download: bool = False) -> tuple[ImageSet, ImageSet]:
    """TinyImageNet's train and (labelled) val splits as uint8 `[N, 3, 64, 64]`; `download` is not used
    (the archive is not fetched automatically)."""
    folder = Path(root) / FOLDER
    if not folder.is_dir():
        raise _missing(Path(root), "no such folder")
    wnids, train, val = list_files(folder)
    if not train or not val:
        raise _missing(Path(root), "no training or no validation images")
    fingerprint = _fingerprint(wnids, train, val)
    cache = folder / CACHE
    arrays = None
    if cache.is_file():
        try:
            with np.load(cache) as stored:
                if str(stored["fingerprint"]) == fingerprint:
                    arrays = {k: stored[k] for k in ("train_x", "train_y", "test_x", "test_y")}
                else:
                    log.info("TinyImageNet: %s was made from other files; decoding again", cache)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:  # a truncated or foreign file: decode again
            log.warning("TinyImageNet: ignoring unreadable cache %s (%s)", cache, error)
    if arrays is None:
        log.info("TinyImageNet: decoding %d JPEGs once; the uint8 arrays are cached in %s", len(train) + len(val),
                 cache)
        # stored as [N, 3, 64, 64], the ImageSet layout, so that loading the cache copies nothing
        arrays = {"train_x": np.ascontiguousarray(decode_all(folder, train).transpose(0, 3, 1, 2)),
                  "train_y": np.array([y for _, y in train], dtype=np.int64),
                  "test_x": np.ascontiguousarray(decode_all(folder, val).transpose(0, 3, 1, 2)),
                  "test_y": np.array([y for _, y in val], dtype=np.int64)}
        _save_atomically(cache, fingerprint=np.array(fingerprint), **arrays)
    return tuple(
        ImageSet(torch.from_numpy(arrays[f"{s}_x"]), torch.from_numpy(arrays[f"{s}_y"]), list(wnids))
        for s in ("train", "test")
    )
