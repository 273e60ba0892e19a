"""Throughput of ABD's two loops: generator iterations per second and training images per second.

The setting of `experiment=abd_cifar100` (ResNet-32, CIFAR-sized 3x32x32 inputs, 100 classes in 5
tasks, batch 128 real + 128 synthetic, the CIFAR generator at batch 128), measured at the start of
task 2: the frozen model of task 1 is inverted (synthesis steps), then the model trains on real +
synthetic batches (training steps). Random tensors stand in for CIFAR images (throughput does not
depend on pixel values), and the loops call the method's own `loss_terms` with the optimizers it
builds, outside Lightning, so the numbers measure the method's compute alone.

    python scripts/bench_abd.py                      # CPU, about a minute
    python scripts/bench_abd.py --device cuda --gen-iters 200 --train-steps 200
"""
from __future__ import annotations

import argparse
import time
from functools import partial

import torch

from lifelong.data.scenario import Task
from lifelong.methods.abd import ABD
from lifelong.models.backbones import resnet32


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(step, n: int, warmup: int, device: torch.device) -> float:
    """Seconds per step over `n` steps after `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(n):
        step()
    sync(device)
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=128, help="real batch = synthetic batch = synthesis batch")
    parser.add_argument("--gen-iters", type=int, default=3, help="timed generator iterations")
    parser.add_argument("--train-steps", type=int, default=3, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before each measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)

    sgd = partial(torch.optim.SGD, lr=0.1, momentum=0.9, weight_decay=2e-4)
    method = ABD(resnet32(3), sgd, epochs=1, image_size=32, channels=3, synthesis_batch_size=args.batch_size)
    method.begin_task(Task(0, list(range(20)), 0, None, None, None))
    method.end_task(method.task, None)  # the frozen model of task 1 (untrained: same compute)
    method.begin_task(Task(1, list(range(20, 40)), 20, None, None, None))
    method.to(device)
    synthesis, train = method.phases(method.task)

    method.phase = synthesis
    adam = method.configure_optimizers()
    method.train()

    def generator_step() -> None:
        adam.zero_grad(set_to_none=True)
        sum(method.synthesizer.loss_terms(method.old_net).values()).backward()
        adam.step()

    gen_s = timed_steps(generator_step, args.gen_iters, args.warmup, device)

    method.phase = train
    optimizer = method.configure_optimizers()
    method.train()
    x = torch.randn(args.batch_size, 3, 32, 32, device=device)
    y = torch.randint(20, 40, (args.batch_size,), device=device)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        sum(method.loss_terms(x, y).values()).backward()
        optimizer.step()

    train_s = timed_steps(train_step, args.train_steps, args.warmup, device)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {name}, torch {torch.__version__}, batch {args.batch_size}")
    print(f"generator: {1 / gen_s:.2f} iterations/s ({gen_s * 1000:.0f} ms/iteration; "
          f"10,000 iterations = {10000 * gen_s / 60:.1f} min)")
    print(f"training:  {args.batch_size / train_s:.1f} real images/s ({2 * args.batch_size / train_s:.1f} real + "
          f"synthetic; {train_s * 1000:.0f} ms/step)")


if __name__ == "__main__":
    main()
