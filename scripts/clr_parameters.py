"""Parameters CLR adds per task (CLR kernels | BatchNorm | head), as results.json reports them.

    python scripts/clr_parameters.py                       # ResNet-18 and ResNet-50, a 30-class head
    python scripts/clr_parameters.py --classes 47 --insert all

Random weights are enough for counting (the counts do not depend on the values).
"""
from __future__ import annotations

import argparse

import torch

from lifelong.data.datasets import ImageSet
from lifelong.data.scenario import Task
from lifelong.methods.clr import CLR
from lifelong.models import backbones

TORCHVISION_FC = {"resnet18": 512 * 1000 + 1000, "resnet50": 2048 * 1000 + 1000}  # ImageNet classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--classes", type=int, default=30, help="classes of the task's head (SKILL mean: 29.9)")
    parser.add_argument("--insert", default="k_gt_1", help="k_gt_1 (CLR) | all (CLR-Full) | v2")
    args = parser.parse_args()
    empty = ImageSet(torch.zeros(0, 3, 1, 1, dtype=torch.uint8), torch.zeros(0))
    print(f"insert={args.insert}, head of {args.classes} classes; % of the frozen feature extractor "
          f"(% of the torchvision model with its ImageNet classifier)")
    print(f"{'backbone':10} {'extractor':>11} {'CLR':>8} {'BN':>8} {'head':>8} {'total':>8} "
          f"{'CLR %':>15} {'CLR+BN %':>15} {'total %':>15}  BN statistics (buffers)")
    for name in args.backbones:
        method = CLR(getattr(backbones, name)(weights=None), optimizer=torch.optim.Adam, insert=args.insert)
        method.begin_task(Task(0, list(range(args.classes)), 0, empty, empty, empty))
        added = method.extra_results()["added_parameters"]
        row, n = added["per_task"][0], added["backbone"]
        full = n + TORCHVISION_FC[name]
        pct = lambda k: f"{100 * k / n:.3f} ({100 * k / full:.3f})"
        print(f"{name:10} {n:>11,} {row['clr_kernels']:>8,} {row['batchnorm']:>8,} {row['head']:>8,} "
              f"{row['total']:>8,} {pct(row['clr_kernels']):>15} {pct(row['clr_kernels'] + row['batchnorm']):>15} "
              f"{pct(row['total']):>15}  {row['batchnorm_statistics']:,}")


if __name__ == "__main__":
    main()
