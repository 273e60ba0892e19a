"""Config resolvers and the checks that run before any training starts."""
from __future__ import annotations

import os

from omegaconf import DictConfig, OmegaConf

from lifelong.errors import ConfigError


def job_id() -> str:
    """Unique per job: the Slurm array/job id on a cluster, the process id elsewhere.

    Run directories include it so that jobs starting in the same second never collide.
    """
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
    return os.environ.get("SLURM_JOB_ID") or str(os.getpid())


if not OmegaConf.has_resolver("job_id"):
    # Cached: Hydra copies resolver caches into every job of a sweep, so jobs that run elsewhere (a
    # submitit Slurm array) resolve hydra.sweep.dir to the launcher's directory, not one of their own.
    OmegaConf.register_new_resolver("job_id", job_id, use_cache=True)


def slurm_gpus(accelerator: str, devices) -> int:
    """GPUs per node a Slurm job asks for (conf/hydra/launcher/slurm.yaml): trainer.devices on GPUs, else 0."""
    if accelerator not in ("gpu", "cuda", "auto"):
        return 0
    return slurm_tasks(devices)


def slurm_tasks(devices) -> int:
    """Slurm tasks per node: one per device, the processes Lightning's DDP expects under Slurm."""
    if isinstance(devices, int) and devices >= 1:
        return devices
    raise ConfigError(f"trainer.devices={devices!r}: under a submitit launcher give the number of devices per "
                      f"node, e.g. trainer.devices=1 (one job per GPU) or trainer.devices=4 with hardware=ddp")


for _name, _resolver in (("slurm_gpus", slurm_gpus), ("slurm_tasks", slurm_tasks)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _resolver)


def _positive(cfg: DictConfig, key: str) -> None:
    value = OmegaConf.select(cfg, key)
    if not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key}={value!r} must be a positive integer")


def check(cfg: DictConfig) -> None:
    """Catch bad values early, with the key and the fix in the message.

    Scenario values (n_tasks, nc_first_task, class_order) are checked when the scenario is built,
    which also happens before training; Hydra itself rejects unknown config-group options and keys.
    """
    for key in ("epochs", "batch_size", "eval.batch_size"):
        _positive(cfg, key)
    if "_target_" not in cfg.method:
        raise ConfigError("method has no _target_; choose one with method=<name> (see conf/method/)")
    if "_target_" not in cfg.backbone:
        raise ConfigError("backbone has no _target_; choose one with backbone=<name> (see conf/backbone/)")
    if cfg.dataset.name == "digits" and cfg.backbone.get("_target_", "").endswith(("resnet32", "resnet18", "resnet50")):
        if not cfg.backbone.get("small_input", True):
            raise ConfigError("backbone=resnet18/50 on 8x8 digits needs backbone.small_input=true")
    threads = cfg.get("torch_threads")
    if threads not in (None, "auto") and (not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"torch_threads={threads!r} must be a positive integer, auto (one per core) or null")
    from lifelong import search

    search.check(cfg)
    if cfg.get("resume") and not os.path.isdir(str(cfg.resume)):
        raise ConfigError(f"resume={cfg.resume} is not a run directory")
