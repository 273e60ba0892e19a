"""Throughput of the runner's hot paths: batch augmentation and training steps.

    python scripts/benchmark.py                   # CPU, CIFAR-shaped data
    python scripts/benchmark.py --device cuda     # on a GPU

1. Augmentation: our device-side `BatchAugment` (random crop with padding, flip, normalise on a
   whole uint8 batch) against the per-image torchvision pipeline it replaces (PIL-free tensor
   transforms applied image by image, as a Dataset's __getitem__ would). On CPU both run on one
   thread, the budget of one DataLoader worker.
2. Training: images/s of Lightning fits of `finetune` with ResNet-32 on 32x32 images, the loop
   every method runs, measured after a warm-up fit.
"""
from __future__ import annotations

import argparse
import time
from functools import partial

import torch


def bench_augment(n: int, batch: int, device: str) -> tuple[float, float]:
    from torchvision.transforms import v2

    from lifelong.data.transforms import BatchAugment

    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    ours = BatchAugment([0.5, 0.5, 0.5], [0.25, 0.25, 0.25], crop_padding=4, flip=True).to(device)
    per_image = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize([0.5] * 3, [0.25] * 3)])
    threads = torch.get_num_threads()
    if device == "cpu":  # one core each, as a DataLoader worker would have; no thread contention
        torch.set_num_threads(1)
    ours(x[:batch].to(device), train=True)  # warm-up
    per_image(x[0])
    start = time.perf_counter()
    for i in range(0, n, batch):
        ours(x[i:i + batch].to(device), train=True)
    if device == "cuda":
        torch.cuda.synchronize()
    t_ours = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(n):
        per_image(x[i])
    t_per_image = time.perf_counter() - start
    torch.set_num_threads(threads)
    return n / t_ours, n / t_per_image


def bench_training(n: int, batch: int, device: str) -> float:
    import lightning as L

    from lifelong.data.datamodule import TaskData
    from lifelong.data.datasets import ImageSet
    from lifelong.data.scenario import Task
    from lifelong.data.transforms import BatchAugment
    from lifelong.methods.finetune import Finetune
    from lifelong.models.backbones import resnet32
    from lifelong.run import quiet_lightning

    quiet_lightning()
    data = ImageSet(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 10, (n,)))
    augment = BatchAugment([0.5] * 3, [0.25] * 3, crop_padding=4, flip=True)
    task = Task(0, list(range(10)), 0, data, data.subset(torch.arange(0)), data, augment)
    method = Finetune(resnet32(), optimizer=partial(torch.optim.SGD, lr=0.1, momentum=0.9))
    method.begin_task(task)
    accelerator = "gpu" if device == "cuda" else "cpu"

    def fit(epochs: int) -> float:
        trainer = L.Trainer(max_epochs=epochs, accelerator=accelerator, devices=1, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            limit_val_batches=0)
        start = time.perf_counter()
        trainer.fit(method, datamodule=TaskData(data, task.val, augment, batch_size=batch))
        return time.perf_counter() - start

    fit(1)  # warm-up: allocator, kernels, first-epoch overheads
    return 2 * n / fit(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=4096, help="images per measurement")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ours, per_image = bench_augment(args.images, args.batch_size, args.device)
    print(f"augmentation  batch on {args.device}: {ours:12,.0f} images/s   "
          f"per image (torchvision v2): {per_image:10,.0f} images/s   ({ours / per_image:.0f}x)")
    train = bench_training(args.images, args.batch_size, args.device)
    print(f"training      finetune + ResNet-32, 32x32, batch {args.batch_size} on {args.device}: {train:8,.0f} images/s")


if __name__ == "__main__":
    main()
