"""Training throughput: lifelong's training step against a bare PyTorch loop, method by method.

    python scripts/benchmark.py                                   # CPU, small sizes (minutes)
    python scripts/benchmark.py --device cuda                     # a GPU, paper-sized batches
    python scripts/benchmark.py --device cuda --precision bf16-mixed --channels-last --data-on-device
    python scripts/benchmark.py --augment-only                    # batch augmentation alone
    python scripts/benchmark.py --methods abd --shapes cifar --batch-cifar 128   # ABD's paper batch
    python scripts/benchmark.py --evaluation     # cached against uncached evaluation; MIND's in-place inference
    python scripts/benchmark.py --evaluation --methods mind_inference   # MIND's in-place inference alone
    python scripts/benchmark.py --shares         # checkpoint and evaluation shares of the paper-setting runs
    python scripts/benchmark.py --dry-run        # (with any mode) toy sizes: checks the script runs

For each method (finetune, LwF, ABD, MIND, CLR) and each data shape (CIFAR: 3x32x32, ResNet-32;
ImageNet: 3x224x224, ResNet-18), the same model, optimizer, data and batch go through

- lifelong: a Lightning fit of the method's phase, as the runner runs it (`TaskData` over uint8
  images in memory, `BatchAugment` on the device, `PhaseModes`, `self.log` of every loss term;
  no progress bar; the size and write time of the fit's checkpoint are measured after it);
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

`--shares` projects, for each paper-setting experiment file, the shares of a whole run that go
to checkpoints and to evaluation, from costs measured here (see `bench_shares`): a model of the run,
not a run. `--evaluation` also compares MIND's task-agnostic inference with its sub-networks swapped
in place against copying the network per sub-network (the official code).
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


@torch.no_grad()
def bench_mind_inference(n_tasks: int, batch: int, device) -> str:
    """MIND's task-agnostic inference with every sub-network of an `n_tasks`-task run allocated:
    gates and BatchNorm swapped in place (ours) against a copy of the network per sub-network and
    batch (the official code), images/s on one batch of random 32x32 images."""
    from lifelong.methods.mind import MIND
    from lifelong.models.gated import gated_resnet32, select
    from lifelong.selection import most_confident

    torch.manual_seed(0)
    method = MIND(gated_resnet32(), n_tasks=n_tasks, n_classes=n_tasks * 10)
    for task in tasks(10, n_tasks):
        method.begin_task(task)
        method.allocate(task)
        method.end_task(task, None)
    method.to(device).eval()
    x = torch.randn(batch, 3, 32, 32, device=device)

    def copied(x):
        logits = []
        for j in range(len(method.net.heads)):
            net = copy.deepcopy(method.net.backbone)
            select(net, j)
            method.snapshots.load(net, j)
            logits.append(method.net.heads[j](net(x)))
        return most_confident(logits, method.temperature)[0]

    rates = []
    for infer in (method.task_agnostic_logits, copied):
        infer(x)  # warm-up
        sync(device)
        start = time.perf_counter()
        infer(x)
        sync(device)
        rates.append(batch / (time.perf_counter() - start))
    return (f"MIND task-agnostic inference, {n_tasks} sub-networks, batch {batch}: in place {rates[0]:8.1f} images/s, "
            f"copying the network per sub-network {rates[1]:8.1f} images/s")


# --shares: what share of a paper-setting run its checkpoints and its evaluation take, projected
# from measured costs. Test-set and training-set sizes per task of each experiment's data:
SIZES = {  # dataset -> (train images, test images, classes): whole dataset, split over its tasks
    "cifar100": (50000, 10000, 100),
    "fashion_mnist": (60000, 10000, 10),
}
SEQUENCE_SIZES = {  # dataset-sequence entry -> (train, test, classes) of its task (the official splits)
    "flowers102": (1020, 6149, 102), "dtd": (1880, 1880, 47), "fgvc_aircraft": (3334, 3333, 100),
    "eurosat": (21600, 5400, 10),  # 27,000 images, our 80/20 split (scenario.test_fraction)
    "svhn": (73257, 26032, 10), "scenes": (5360, 1340, 67), "birds": (5994, 5794, 200),
}
SHARE_EXPERIMENTS = ("abd_cifar100", "mind_cifar100", "clr_dataset_sequence", "clr_skill",
                     "ebll_scenes_birds_flowers", "facil_cifar100_10x10", "fmnist_benchmark")


def experiment_config(name: str):
    """The composed config of `experiment=<name>`, with random backbones (no weights download)."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    overrides = [f"experiment={name}", "hardware=cpu", "logger=none", "trainer.enable_progress_bar=false"]
    if name.startswith(("clr", "ebll")):
        overrides.append("backbone.weights=null")
    if name.startswith("clr"):
        overrides.append("method.random_backbone=true")
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose("config", overrides=overrides)


def task_sizes(cfg, name: str) -> list[tuple[int, int, int]]:
    """(train, test, classes) of every task of the experiment; train after its validation share."""
    from pathlib import Path
    import re

    val = float(cfg.scenario.get("val_fraction") or 0.0)
    if cfg.scenario.get("datasets") is None:
        train, test, classes = SIZES[cfg.dataset.name]
        n = int(cfg.scenario.n_tasks)
        sizes = [(train // n, test // n, classes // n)] * n
    elif name == "clr_skill":  # the experiment file lists "classes / train / test" of every SKILL task
        text = (Path(__file__).resolve().parents[1] / "conf" / "experiment" / f"{name}.yaml").read_text()
        sizes = [(int(t), int(e), int(c)) for c, t, e in re.findall(r"# (\d+) / (\d+) / (\d+)", text)]
    else:
        sizes = [SEQUENCE_SIZES[str(d)] for d in cfg.scenario.datasets]
    return [(int(train * (1 - val)), test, classes) for train, test, classes in sizes]


def build_from_config(cfg):
    from hydra.utils import instantiate

    memory = {"memory": instantiate(cfg.memory)} if cfg.get("memory") and cfg.memory.get("_target_") else {}
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    return instantiate(cfg.method, backbone=instantiate(cfg.backbone), optimizer=instantiate(cfg.optimizer),
                       scheduler=scheduler, epochs=cfg.epochs, _convert_="object", **memory)


def simulated_writes(policy, epochs: int, epoch_s: float, write_s: float) -> int:
    """How many mid-task resume points `policy` (`checkpoint.*`) writes in a phase of `epochs`
    epochs of `epoch_s` seconds each, when one write takes `write_s` (as `EpochCheckpoint` decides)."""
    writes, since, last = 0, 0.0, None
    for epoch in range(epochs):
        since += epoch_s
        if policy.due(epoch, since, last):
            writes, since, last = writes + 1, 0.0, write_s
    return writes


def duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def bench_shares(name: str, args) -> str:
    """One experiment's run, projected: training = sum over tasks and phases of epochs x steps per
    epoch x the measured seconds per step (a timed Lightning fit of that phase at the experiment's
    batch size); mid-task checkpoints = the writes `checkpoint.*` makes at that epoch length x the
    measured write time; last.pt after every task; evaluation = the test images each evaluation
    passes (every path of MIND/CLR on the new test set, the newest path on the old ones: the path
    cache) x the measured seconds per image. Synthetic images; 224-px datasets at 64 px (the same
    model, cheaper steps: the checkpoint share is then overstated)."""
    import os
    import tempfile

    from lifelong.data.datamodule import TaskData
    from lifelong.data.datasets import ImageSet
    from lifelong.data.scenario import Task
    from lifelong.data.transforms import BatchAugment
    from lifelong.metrics import evaluate
    from lifelong.paths import PathCache
    from lifelong.resume import CheckpointPolicy

    cfg = experiment_config(name)
    sizes = task_sizes(cfg, name)
    channels = int(cfg.dataset.get("channels", 3))
    size = min(int(cfg.scenario.get("image_size") or cfg.dataset.get("image_size") or 32), 64)
    batch, eval_batch = int(cfg.batch_size), min(int(cfg.eval.batch_size), args.eval_batch_cap)
    if args.dry_run:
        batch = eval_batch = 4
    device = torch.device(args.device)
    torch.manual_seed(0)
    method = build_from_config(cfg)
    method.loop_limit = 1 if args.dry_run else None  # dry run: EBLL's autoencoder fit runs one epoch
    offsets = [sum(c for _, _, c in sizes[:i]) for i in range(len(sizes))]

    def data(n: int, t: int) -> ImageSet:
        return ImageSet(torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8),
                        torch.randint(0, sizes[t][2], (n,)) + offsets[t])

    aug = BatchAugment([0.5] * channels, [0.25] * channels, crop_padding=int(cfg.dataset.get("crop_padding") or 0),
                       flip=bool(cfg.dataset.get("flip", False)))
    empty = data(0, 0)
    tasks = [Task(i, list(range(offsets[i], offsets[i] + sizes[i][2])), offsets[i],
                  data((args.warmup + args.steps + 1) * batch, i), empty, data(eval_batch, i), aug)
             for i in range(min(2, len(sizes)))]
    step_s, write = {}, {}  # (task index, phase) -> seconds per step / (MB, seconds) per mid-task write
    ran = {0: [], 1: []}  # task index -> the phases it ran
    for task in tasks:
        method.begin_task(task)
        method.to(device)
        train = task.train

        def fit(phase, task=task, train=train) -> None:
            phase_train = method.phase_data(phase, train)
            seconds, _, trainer = lifelong_fit(method, phase, phase_train, aug.to(device), batch, args.steps, device, args)
            step_s[task.id, phase.name] = seconds
            ran[task.id].append(phase)
            write[task.id, phase.name] = checkpoint_cost(trainer)

        method.fit_task(task, fit)
        method.end_task(task, TaskData(train, empty, aug, batch_size=batch))
    with tempfile.TemporaryDirectory() as folder:  # last.pt: the method's state after task 1
        path = os.path.join(folder, "last.pt")
        start = time.perf_counter()
        torch.save({"state_dict": method.state_dict()}, path)
        task_write_s, task_mb = time.perf_counter() - start, os.path.getsize(path) / 2**20

    def eval_seconds(cache) -> float:  # after task 1: both test sets, one batch each
        sync(device)
        start = time.perf_counter()
        evaluate(method, tasks, lambda t: iter([(aug(t.test.x.to(device), train=False), t.test.y.to(device))]),
                 cache=cache)
        sync(device)
        return time.perf_counter() - start

    eval_seconds(None)  # warm-up
    paths = hasattr(method, "path_logits") and cfg.eval.get("cache", True)
    # Path methods: a fresh cache runs both paths on both test sets (4 passes); others: 2 test sets.
    per_image = eval_seconds(PathCache() if paths else None) / ((4 if paths else 2) * eval_batch)

    policy = CheckpointPolicy(**(cfg.get("checkpoint") or {}))
    memory = int(cfg.memory.size) if cfg.get("memory") and cfg.memory.get("_target_") else 0  # exemplars per step
    train_s = ckpt_s = eval_s = writes = 0.0
    for t, (n_train, _, _) in enumerate(sizes):
        measured = min(t, 1)
        for phase in ran[measured]:
            if isinstance(phase.data, torch.utils.data.DataLoader):
                steps = len(phase.data)
            else:
                seen = sum(train for train, _, _ in sizes[: t + 1])
                n = seen if phase.data == "seen" else n_train + (min(memory, seen - n_train) if phase.data == "task" else 0)
                steps = n // batch if cfg.drop_last else -(-n // batch)
            epochs = phase.epochs
            epoch_s = steps * step_s[measured, phase.name]
            n_writes = simulated_writes(policy, epochs, epoch_s, write[measured, phase.name][1])
            train_s += epochs * epoch_s
            ckpt_s += n_writes * write[measured, phase.name][1]
            writes += n_writes
        ckpt_s += task_write_s
        tests = [test for _, test, _ in sizes[: t + 1]]
        images = (t + 1) * tests[-1] + sum(tests[:-1]) if paths else sum(tests)
        eval_s += images * per_image
    total = train_s + ckpt_s + eval_s
    mid = max(write.values(), key=lambda v: v[0])
    return (f"{name:26s} {type(method).__name__:9s} {len(sizes):2d} tasks  training {duration(train_s):>7s}  "
            f"checkpoints {100 * ckpt_s / total:5.2f} % ({writes:.0f} mid-task writes of up to {mid[0]:.0f} MB, "
            f"{mid[1]:.2f} s; last.pt {task_mb:.0f} MB, {task_write_s:.2f} s)  evaluation {100 * eval_s / total:5.2f} % "
            f"({per_image * 1e3:.2f} ms per test image{' and path' if paths else ''})")



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--methods", default=",".join(METHODS), help="with --evaluation: mind, clr, mind_inference")
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
    parser.add_argument("--shares", action="store_true",
                        help="checkpoint and evaluation shares of each paper-setting run, projected from measured costs")
    parser.add_argument("--experiments", default=",".join(SHARE_EXPERIMENTS), help="for --shares")
    parser.add_argument("--eval-batch-cap", type=int, default=256, help="--shares: at most this test batch (memory)")
    parser.add_argument("--dry-run", action="store_true", help="every mode once at toy sizes: checks the script runs")
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
        tiny, wanted = args.dry_run, set(args.methods.split(","))  # mind, clr, mind_inference
        for name in [n for n in ("mind", "clr") if n in wanted]:
            print(bench_evaluation(name, 2 if tiny else args.eval_tasks or (10 if gpu else 5), 8 if tiny else
                                   args.eval_test_size or (1000 if gpu else 200), 4 if tiny else 500 if gpu else 100,
                                   torch.device(args.device)), flush=True)
        if wanted & {"mind", "mind_inference"}:
            print(bench_mind_inference(2 if tiny else 10, 4 if tiny else 1000, torch.device(args.device)), flush=True)
        return
    args.steps = args.steps or (1 if args.dry_run else 30 if gpu else 3)
    args.warmup = args.warmup or (5 if gpu and not args.dry_run else 1)
    if args.shares:
        from lifelong.run import quiet_lightning

        quiet_lightning()
        print(f"shares of a paper-setting run, projected from costs measured on cpu, {torch.get_num_threads()} "
              f"threads, torch {torch.__version__} ({args.steps} timed steps per phase)", flush=True)
        for name in args.experiments.split(","):
            print(bench_shares(name, args), flush=True)
        return
    args.batch_size = {"cifar": args.batch_cifar or (128 if gpu else 32),
                       "imagenet": args.batch_imagenet or (64 if gpu else 8)}
    args.image_size = {"imagenet": args.imagenet_size or (224 if gpu else 64)}
    if args.dry_run:  # toy sizes: every method and shape, one timed step
        args.batch_size, args.image_size = {"cifar": 4, "imagenet": 2}, {"imagenet": 64}
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
