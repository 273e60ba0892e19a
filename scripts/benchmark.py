"""Training throughput: lifelong's training step against a bare PyTorch loop, method by method.

    python scripts/benchmark.py                                   # CPU, small sizes (minutes)
    python scripts/benchmark.py --device cuda                     # a GPU, paper-sized batches
    python scripts/benchmark.py --device cuda --precision bf16-mixed --channels-last --data-on-device
    python scripts/benchmark.py --augment-only                    # batch augmentation alone

For each method (finetune, LwF, ABD, MIND, CLR) and each data shape (CIFAR: 3x32x32, ResNet-32;
ImageNet: 3x224x224, ResNet-18), the same model, optimizer, data and batch go through

- lifelong: a Lightning fit of the method's phase, as the runner runs it (`TaskData` over uint8
  images in memory, `BatchAugment` on the device, `PhaseModes`, `self.log` of every loss term;
  no progress bar, no checkpoints: those are measured by `scripts/bench_fixed_cost.py`);
- bare: a loop written here: a random batch indexed from the same uint8 tensor already on the
  device, the same augmentation, `loss = sum(method.loss_terms(x, y).values())`, backward, the
  method's gradient hooks (MIND's masks), `optimizer.step()`. No Lightning, no DataLoader, no
  logging: the practical limit for the method's computation.

Both run the phase's real objective: finetune and CLR their CE (+ CLR's norm term), LwF CE + KD
against the frozen old model, ABD at task 2 (real + synthetic batch; its generator's synthesis
iterations are timed separately), MIND's teacher and distillation phases. Random images stand in
for the datasets (throughput does not depend on pixel values). The ratio lifelong/bare is the
figure to watch (target >= 0.9 on a GPU). Options: `--precision` (Lightning's `trainer.precision`;
the bare loop uses `torch.autocast`), `--channels-last` and `--compile` (`speed.*`, applied to both
loops by `lifelong.speed.prepare`), `--data-on-device` (`speed.data_on_device`: lifelong's loader
indexes device tensors too).
"""
from __future__ import annotations

import argparse
import copy
import time
from contextlib import nullcontext
from functools import partial

import torch

SHAPES = {  # name -> (image size, classes per task, backbone)
    "cifar": (32, 10, "resnet32"),
    "imagenet": (224, 100, "resnet18"),
}
METHODS = ("finetune", "lwf", "abd", "mind", "clr")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def backbone(name: str, gated: bool = False):
    from lifelong.models import backbones

    net = backbones.resnet32(3) if name == "resnet32" else backbones.resnet18(in_channels=3)
    if gated:
        from lifelong.models.gated import gate_layers

        net = gate_layers(net)
    return net


def tasks(classes: int, n: int = 2):
    from lifelong.data.datasets import ImageSet
    from lifelong.data.scenario import Task

    empty = ImageSet(torch.zeros(0, 3, 1, 1, dtype=torch.uint8), torch.zeros(0))  # no validation split
    return [Task(i, list(range(i * classes, (i + 1) * classes)), i * classes, empty, empty, empty) for i in range(n)]


def build(method: str, arch: str, classes: int, size: int, batch: int):
    """The method at the task it is measured on, and the phases measured: [(phase, label)]."""
    sgd = partial(torch.optim.SGD, lr=0.01, momentum=0.9)
    first, second = tasks(classes)
    if method == "finetune":
        from lifelong.methods.finetune import Finetune

        m = Finetune(backbone(arch), sgd)
        m.begin_task(first)
    elif method == "lwf":
        from lifelong.methods.lwf import LwF

        m = LwF(backbone(arch), sgd)
        m.begin_task(first)
        m.end_task(first, None)
        m.begin_task(second)
    elif method == "abd":
        from lifelong.methods.abd import ABD

        m = ABD(backbone(arch), sgd, image_size=size, channels=3, synthesis_batch_size=batch)
        m.begin_task(first)
        m.end_task(first, None)
        m.begin_task(second)
    elif method == "mind":
        from lifelong.methods.mind import MIND

        m = MIND(backbone(arch), n_tasks=2, n_classes=2 * classes)
        m.begin_task(first)
    elif method == "clr":
        from lifelong.methods.clr import CLR

        m = CLR(backbone(arch), sgd, random_backbone=True)
        m.begin_task(first)
    else:
        raise SystemExit(f"unknown method {method}; choose from {METHODS}")
    return m, m.phases(m.task)


def images(n: int, size: int, classes: int, offset: int):
    from lifelong.data.datasets import ImageSet

    return ImageSet(torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8), torch.randint(0, classes, (n,)) + offset)


def augment():
    from lifelong.data.transforms import BatchAugment

    return BatchAugment([0.5] * 3, [0.25] * 3, crop_padding=4, flip=True)


def lifelong_fit(method, phase, data, aug, batch: int, steps: int, device, args):
    """(seconds per step in the steady state, seconds of the fit outside its steps, the trainer) of one
    Lightning fit of `phase` as the runner runs it: `warmup` untimed steps, then `steps` timed ones."""
    import lightning as L

    from lifelong import speed
    from lifelong.data.datamodule import TaskData
    from lifelong.methods.base import PhaseModes

    class StepClock(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
            if batch_idx == args.warmup:
                sync(device)
                self.start = time.perf_counter()

        def on_train_end(self, trainer, pl_module) -> None:
            sync(device)
            self.end = time.perf_counter()

    clock = StepClock()
    method.phase = phase
    speed.prepare(method, args.channels_last, args.compile)
    trainer = L.Trainer(max_epochs=1, accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                        precision=args.precision, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        limit_train_batches=args.warmup + steps, num_sanity_val_steps=0,
                        callbacks=[PhaseModes(), clock], log_every_n_steps=10, deterministic=False)
    sync(device)
    start = time.perf_counter()
    if isinstance(phase.data, torch.utils.data.DataLoader):  # ABD's synthesis: iteration indices
        trainer.fit(method, train_dataloaders=phase.data)
    else:
        train = speed.on_device(data, device) if args.data_on_device else data
        trainer.fit(method, datamodule=TaskData(train, train.subset(torch.arange(0)), aug, batch_size=batch,
                                                drop_last=True))
    sync(device)
    total = time.perf_counter() - start
    per_step = (clock.end - clock.start) / steps
    return per_step, total - (args.warmup + steps) * per_step, trainer


def checkpoint_cost(trainer) -> tuple[float, float]:
    """(MB, seconds) of one mid-task resume point of this fit, written the way `EpochCheckpoint` writes it."""
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "last.ckpt")
        start = time.perf_counter()
        trainer.save_checkpoint(path)
        seconds = time.perf_counter() - start
        return os.path.getsize(path) / 2**20, seconds


def bare_loop(method, phase, data, aug, batch: int, steps: int, device, args) -> float:
    """Seconds per step of a plain PyTorch loop over the same computation."""
    from lifelong import speed

    method.phase = phase
    speed.prepare(method, args.channels_last, args.compile)
    method.set_phase_modes()
    configured = method.configure_optimizers()
    optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
    method.on_train_start()  # a LightningModule hook: MIND's gates and weight masks of the phase
    x_all, y_all = data.x.to(device), data.y.to(device)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(args.precision)
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else nullcontext
    synthesis = isinstance(phase.data, torch.utils.data.DataLoader)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            if synthesis:
                loss = sum(method.loss_terms(None, None).values())
            else:
                index = torch.randint(0, len(y_all), (batch,), device=device)
                loss = sum(method.loss_terms(aug(x_all[index], train=True), y_all[index]).values())
        loss.backward()
        method.on_before_optimizer_step(optimizer)
        optimizer.step()
        if hasattr(method, "restore_frozen_weights"):
            method.restore_frozen_weights()

    for _ in range(args.warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - start) / steps


def bench_method(name: str, shape: str, args, device) -> list[str]:
    size, classes, arch = SHAPES[shape]
    size = args.image_size.get(shape, size)
    batch = args.batch_size.get(shape)
    method, phases = build(name, arch, classes, size, batch)
    if args.channels_last and not getattr(method, "supports_channels_last", True):
        print(f"{name:9s} {shape:9s} skipped: speed.channels_last is refused by {type(method).__name__}")
        return []
    method.to(device)
    aug = augment().to(device)
    lines = []
    for phase in phases:
        if name == "mind" and phase.name == "distill":
            method.phase = phase
            method.allocate(method.task)
            method.teacher.requires_grad_(False)
        # Enough images that the timed fit runs all its steps within one epoch (drop_last).
        data = images((max(args.steps, args.warmup) + 1) * batch, size, classes, method.task.offset)
        state = copy.deepcopy(method.state_dict())  # both loops start from the same weights
        t_lifelong, fit_overhead, trainer = lifelong_fit(method, phase, data, aug, batch, args.steps, device, args)
        megabytes, write_s = checkpoint_cost(trainer)
        method.load_state_dict(state)
        t_bare = bare_loop(method, phase, data, aug, batch, args.steps, device, args)
        method.load_state_dict(state)
        unit = "synthesis iterations/s" if phase.name == "synthesis" else "images/s"
        per = 1 if phase.name == "synthesis" else batch
        lines.append(f"{name:9s} {shape:9s} {phase.name:10s} batch {batch:4d}  lifelong {per / t_lifelong:9.2f}  "
                     f"bare {per / t_bare:9.2f} {unit:22s} ratio {t_bare / t_lifelong:5.2f}  "
                     f"fit setup {fit_overhead:5.2f} s  checkpoint {megabytes:6.1f} MB {write_s:5.2f} s")
        print(lines[-1], flush=True)
    return lines


def bench_augment(n: int, batch: int, device: str) -> tuple[float, float]:
    """Our whole-batch `BatchAugment` against the per-image torchvision pipeline it replaces."""
    from torchvision.transforms import v2

    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    ours = augment().to(device)
    per_image = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize([0.5] * 3, [0.25] * 3)])
    ours(x[:batch].to(device), train=True)
    per_image(x[0])
    start = time.perf_counter()
    for i in range(0, n, batch):
        ours(x[i:i + batch].to(device), train=True)
    sync(torch.device(device))
    t_ours = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(n):
        per_image(x[i])
    return n / t_ours, n / (time.perf_counter() - start)


def bench_evaluation(name: str, n_tasks: int, test_size: int, batch: int, device) -> str:
    """Seconds of every evaluation of a `n_tasks`-task run (after each task, every seen test set),
    with the path cache (`eval.cache=true`) and without: MIND (gated ResNet-32) or CLR (ResNet-32),
    10 classes per task, 32x32 images, every task's path in place from the start (same compute)."""
    from lifelong.metrics import evaluate
    from lifelong.paths import PathCache

    classes = 10
    all_tasks = tasks(classes, n_tasks)
    if name == "mind":
        from lifelong.methods.mind import MIND

        method = MIND(backbone("resnet32"), n_tasks=n_tasks, n_classes=n_tasks * classes)
        for task in all_tasks:
            method.begin_task(task)
            method.allocate(task)
            method.end_task(task, None)
    else:
        from lifelong.methods.clr import CLR

        method = CLR(backbone("resnet32"), partial(torch.optim.SGD, lr=0.1), random_backbone=True)
        for task in all_tasks:
            method.begin_task(task)
    method.to(device).eval()
    aug = augment().to(device)
    sets = {t.id: images(test_size, 32, classes, t.offset) for t in all_tasks}

    def batches(task):
        data = sets[task.id]
        for i in range(0, len(data), batch):
            yield aug(data.x[i:i + batch].to(device), train=False), data.y[i:i + batch].to(device)

    out = {}
    for cached in (False, True):
        cache = PathCache() if cached else None
        sync(device)
        start = time.perf_counter()
        for t in range(n_tasks):
            evaluate(method, all_tasks[: t + 1], batches, cache=cache)
        sync(device)
        out[cached] = time.perf_counter() - start
    return (f"evaluation {name:5s} {n_tasks} tasks x {test_size} test images, batch {batch}: uncached "
            f"{out[False]:7.2f} s, cached {out[True]:7.2f} s ({out[False] / out[True]:.1f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--shapes", default="cifar,imagenet")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 3 on CPU, 30 on a GPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 1 / 5)")
    parser.add_argument("--batch-cifar", type=int, default=None, help="default: 128 (GPU) / 32 (CPU)")
    parser.add_argument("--batch-imagenet", type=int, default=None, help="default: 64 (GPU) / 8 (CPU)")
    parser.add_argument("--imagenet-size", type=int, default=None, help="default: 224 (GPU) / 64 (CPU)")
    parser.add_argument("--precision", default="32-true", help="trainer.precision, e.g. bf16-mixed")
    parser.add_argument("--channels-last", action="store_true", help="speed.channels_last")
    parser.add_argument("--compile", action="store_true", help="speed.compile")
    parser.add_argument("--data-on-device", action="store_true", help="speed.data_on_device")
    parser.add_argument("--threads", type=int, default=None, help="torch threads on CPU (default: torch's)")
    parser.add_argument("--augment-only", action="store_true")
    parser.add_argument("--evaluation", action="store_true", help="cached against uncached evaluation only")
    parser.add_argument("--eval-tasks", type=int, default=None, help="default: 10 (GPU) / 5 (CPU)")
    parser.add_argument("--eval-test-size", type=int, default=None, help="default: 1000 (GPU) / 200 (CPU)")
    args = parser.parse_args()
    gpu = args.device == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.augment_only:
        ours, per_image = bench_augment(4096, 128, args.device)
        print(f"augmentation on {args.device}: batch {ours:,.0f} images/s, per image {per_image:,.0f} images/s "
              f"({ours / per_image:.0f}x)")
        return
    if args.evaluation:
        for name in ("mind", "clr"):
            print(bench_evaluation(name, args.eval_tasks or (10 if gpu else 5), args.eval_test_size or
                                   (1000 if gpu else 200), 500 if gpu else 100, torch.device(args.device)), flush=True)
        return
    args.steps = args.steps or (30 if gpu else 3)
    args.warmup = args.warmup or (5 if gpu else 1)
    args.batch_size = {"cifar": args.batch_cifar or (128 if gpu else 32),
                       "imagenet": args.batch_imagenet or (64 if gpu else 8)}
    args.image_size = {"imagenet": args.imagenet_size or (224 if gpu else 64)}
    device = torch.device(args.device)
    if gpu:
        torch.backends.cudnn.benchmark = True
    from lifelong.run import quiet_lightning

    quiet_lightning()
    name = torch.cuda.get_device_name(device) if gpu else f"cpu, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; precision {args.precision}, channels_last "
          f"{args.channels_last}, compile {args.compile}, data_on_device {args.data_on_device}; "
          f"{args.steps} timed steps after {args.warmup}")
    for shape in args.shapes.split(","):
        for method in args.methods.split(","):
            torch.manual_seed(0)
            bench_method(method, shape, args, device)


if __name__ == "__main__":
    main()
