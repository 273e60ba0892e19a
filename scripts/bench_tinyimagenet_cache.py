"""TinyImageNet loading time: decoding the JPEGs (first run, writes the cache) against reading the cache.

    python scripts/bench_tinyimagenet_cache.py                  # 200 classes x 50 train + 1,000 val (1/10 size)
    python scripts/bench_tinyimagenet_cache.py --per-class 500  # the full 100,000 + 10,000

Writes a fake `tiny-imagenet-200/` in the distributed layout (random 64x64 JPEGs, which are larger and
slower to decode than natural ones) into a temporary folder, loads it twice through `load_dataset`, and
checks that both loads are equal.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lifelong.data.datasets import load_dataset


def write(root: Path, n_classes: int, per_class: int, val_per_class: int) -> None:
    rng = np.random.default_rng(0)
    folder = root / "tiny-imagenet-200"
    wnids = [f"n{i:08d}" for i in range(n_classes)]
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    lines = []
    for c, wnid in enumerate(wnids):
        images = folder / "train" / wnid / "images"
        images.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(images / f"{wnid}_{i}.JPEG")
        for i in range(val_per_class):
            name = f"val_{c * val_per_class + i}.JPEG"
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / "val" / "images" / name)
            lines.append(f"{name}\t{wnid}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--val-per-class", type=int, default=None, help="default: per-class / 10")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp), args.classes, args.per_class, args.val_per_class or max(1, args.per_class // 10))
        start = time.perf_counter()
        first = load_dataset("tinyimagenet", tmp)
        decoded = time.perf_counter() - start
        start = time.perf_counter()
        second = load_dataset("tinyimagenet", tmp)
        cached = time.perf_counter() - start
        assert all(torch.equal(a.x, b.x) and torch.equal(a.y, b.y) for a, b in zip(first, second))
        print(f"{len(first[0])} train + {len(first[1])} test images: decode + write cache {decoded:.1f} s, "
              f"from cache {cached:.1f} s")


if __name__ == "__main__":
    main()
