"""MIND throughput on CIFAR-shaped data: training steps and task-agnostic inference, in images/s.

    python scripts/bench_mind.py                     # CPU
    python scripts/bench_mind.py --device cuda       # on a GPU

The network is the gated ResNet-32 of `experiment=mind_cifar100` with all N=10 sub-networks
allocated (the state after the last task), 10 classes per task, random 32x32 images. Measured
after warm-up steps, with the method's own code paths but without Lightning's loop:

1. teacher step: the fresh dense ResNet-32, forward + backward + AdamW step;
2. distillation step: the nested sub-network (forward + backward), the teacher's forward, the
   gradient masking and the copy-back of frozen weights, AdamW step;
3. task-agnostic inference: all 10 sub-networks per batch (eval mode), gates and BatchNorm swapped
   in place, against copying the network once per sub-network and batch (the official approach).
"""
from __future__ import annotations

import argparse
import copy
import time

import torch


def build(device: str, n_tasks: int = 10, classes: int = 10):
    from lifelong.data.scenario import Task
    from lifelong.methods.mind import MIND
    from lifelong.models.gated import gated_resnet32

    torch.manual_seed(0)
    method = MIND(gated_resnet32(), n_tasks=n_tasks, n_classes=n_tasks * classes)
    tasks = [Task(i, list(range(i * classes, (i + 1) * classes)), i * classes, None, None, None)
             for i in range(n_tasks)]
    for task in tasks:
        method.begin_task(task)
        method.allocate(task)
        if task.id < n_tasks - 1:
            method.end_task(task, None)
    return method.to(device), tasks[-1]


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bench_phase(method, name: str, batch: int, steps: int, device: str) -> float:
    phase = next(p for p in method.phases(method.task) if p.name == name)
    method.phase = phase
    if name == "distill":
        method.teacher.requires_grad_(False)
    method.on_train_start()
    optimizer = phase.optimizer(phase.parameters())
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(method.task.offset, method.task.offset + method.task.n_classes, (batch,), device=device)

    def step():
        loss = sum(method.loss_terms(x, y).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        method.on_before_optimizer_step(optimizer)
        optimizer.step()
        method.restore_frozen_weights()

    for _ in range(2):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * batch / (time.perf_counter() - start)


@torch.no_grad()
def bench_inference(method, batch: int, batches: int, device: str) -> tuple[float, float]:
    from lifelong.models.gated import select
    from lifelong.selection import most_confident

    method.end_task(method.task, None)
    method.eval()
    x = torch.randn(batch, 3, 32, 32, device=device)
    method.task_agnostic_logits(x)  # warm-up
    sync(device)
    start = time.perf_counter()
    for _ in range(batches):
        method.task_agnostic_logits(x)
    sync(device)
    in_place = batches * batch / (time.perf_counter() - start)

    def copied(x):  # one copy of the network per sub-network and batch
        logits = []
        for j in range(len(method.net.heads)):
            net = copy.deepcopy(method.net.backbone)
            select(net, j)
            method.snapshots.load(net, j)
            logits.append(method.net.heads[j](net(x)))
        return most_confident(logits, method.temperature)[0]

    copied(x)
    sync(device)
    start = time.perf_counter()
    for _ in range(batches):
        copied(x)
    sync(device)
    return in_place, batches * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=256, help="training batch (official: 256)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per phase")
    parser.add_argument("--eval-batch", type=int, default=1000, help="inference batch (official: 1000)")
    parser.add_argument("--eval-batches", type=int, default=2)
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = args.device == "cuda"
    method, _ = build(args.device)
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, gated ResNet-32, 10 sub-networks")
    teacher = bench_phase(method, "teacher", args.batch, args.steps, args.device)
    print(f"teacher training:        {teacher:8.1f} images/s  (batch {args.batch})")
    distill = bench_phase(method, "distill", args.batch, args.steps, args.device)
    print(f"distillation training:   {distill:8.1f} images/s  (batch {args.batch})")
    in_place, copied = bench_inference(method, args.eval_batch, args.eval_batches, args.device)
    print(f"task-agnostic inference: {in_place:8.1f} images/s  (batch {args.eval_batch}, 10 sub-networks, in place)")
    print(f"  copying the network per sub-network: {copied:8.1f} images/s")


if __name__ == "__main__":
    main()
