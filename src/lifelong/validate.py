"""Checks that run before anything heavy is imported or built: a bad input ends in a second or two.

Two stages, both raising `ConfigError` (one line: the key, the bad value, the fix):

- `check_command_line(args)`: before Hydra composes the config (train.py). Hydra's own messages
  for a misspelt key ("To append to your config use +epoch=3") would lead a user astray: here a
  key that is not in the config gets "did you mean `epochs`?", and `+key=...` for an unknown
  top-level key is refused (the run would ignore it silently).
- `check(cfg)`: on the composed config, before torch and Lightning are imported (the hardware
  check imports torch alone). Values of every run-wide key, the optimizer and scheduler, the
  logger, the class order, `resume=` and the output directory.
"""
from __future__ import annotations

import difflib
import errno
import os
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lifelong.errors import ConfigError

WANDB_MODES = ("auto", "online", "offline", "disabled")
CE_SCOPES = ("current", "seen")  # lifelong.methods.base.CE_SCOPES, checked here before torch is imported
WANDB_FORBIDDEN = "/\\#?%:"


def _wandb_name(value) -> str:
    name = "".join("-" if c in WANDB_FORBIDDEN else c for c in str(value))[:128].strip("-")
    return name or "lifelong"
ACCELERATORS = ("cpu", "gpu", "cuda", "auto", "mps")
PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "64", "transformer-engine")
# Hydra's own command-line flags that take a value: with these we leave the command line to Hydra.
_HYDRA_FLAGS = ("-m", "--multirun", "-h", "--help", "--hydra-help", "-c", "--cfg", "-p", "--package",
                "--resolve", "-i", "--info", "-cp", "--config-path", "-cn", "--config-name", "-cd",
                "--config-dir", "--version", "--shell-completion", "-sc", "--experimental-rerun")


# ------------------------------------------------------------------------------- command line
def _suggest(key: str, choices) -> str:
    close = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else f"valid keys here: {sorted(choices)[:12]}"


def check_command_line(args: list[str], conf_dir: Path) -> None:
    """Misspelt and unknown keys in `python train.py <args>`, checked by composing the config once."""
    if any(a.startswith("-") and a not in ("-m", "--multirun") for a in args):
        return  # --cfg, --info, -cn ...: Hydra's business
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    raw = [a for a in args if not a.startswith("-")]
    try:
        overrides = OverridesParser.create().parse_overrides(raw)
    except Exception:  # noqa: BLE001  (a syntax error: Hydra prints its own precise message)
        return
    plain = []
    for override, text in zip(overrides, raw):
        key = override.key_or_group
        if key in ("hydra.run.dir", "hydra.sweep.dir", "paths.output_dir") and not override.is_sweep_override():
            target = Path(text.split("=", 1)[1])
            ok, where = _writable(target)
            if not ok:
                raise ConfigError(f"{key}={target}: cannot create the run directory there ({where} is read-only or "
                                  f"not a directory); choose a writable place, e.g. {key}=$HOME/runs/<name>")
        if key.startswith("hydra") or override.package:
            continue
        if override.is_sweep_override():
            value = next(iter(override.sweep_string_iterator()), None)
            if value is None:
                continue
            prefix = {OverrideType.ADD: "+", OverrideType.FORCE_ADD: "++", OverrideType.DEL: "~"}.get(override.type, "")
            text = f"{prefix}{key}={value}"
        plain.append((override, text))
    groups = _groups(conf_dir)
    for override, text in plain:  # an unknown option of a config group (method=lwff)
        group = override.key_or_group
        if group in groups and override.type.name == "CHANGE":
            value = text.split("=", 1)[1]
            options = sorted(p.stem for p in (Path(conf_dir) / group).glob("*.yaml"))
            if value not in options and value != "null":
                raise ConfigError(f"{group}={value} is unknown; valid choices: {options} ({_suggest(value, options)})"
                                  if difflib.get_close_matches(value, options, n=1, cutoff=0.6)
                                  else f"{group}={value} is unknown; valid choices: {options}")
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(conf_dir), version_base="1.3"):
        base = compose("config", overrides=[t for o, t in plain if "." not in o.key_or_group and "/" not in o.key_or_group
                                            and not t.startswith(("+", "~"))
                                            and o.key_or_group in _groups(conf_dir)])
    GlobalHydra.instance().clear()
    top_level = set(base.keys()) | _groups(conf_dir)
    for override, text in plain:
        key = override.key_or_group
        if "/" in key:
            continue
        parts = key.split(".")
        if override.type.name in ("ADD", "FORCE_ADD") and len(parts) == 1 and key not in top_level:
            raise ConfigError(f"{text}: `{key}` is not a key of this project's config, and the run would ignore it; "
                              f"{_suggest(key, top_level)}")
        if override.type.name != "CHANGE":
            continue
        node = base
        for depth, part in enumerate(parts):
            if not OmegaConf.is_dict(node):
                break
            if part not in node:
                if depth == 0 and part in _groups(conf_dir):
                    break
                where = ".".join(parts[:depth]) or "the top level"
                if parts[0] == "trainer" and depth == 1 and part in RUNNER_TRAINER_KEYS:
                    raise ConfigError(trainer_key_problem(part, text.split("=", 1)[1]))
                extra = "; other Lightning Trainer arguments go in as +trainer.<name>=<value>" if parts[0] == "trainer" else ""
                raise ConfigError(f"{text}: there is no key `{key}` ({where} has no `{part}`); "
                                  f"{_suggest(part, node.keys())}{extra}")
            node = node[part]


def _groups(conf_dir: Path) -> set[str]:
    return {p.name for p in Path(conf_dir).iterdir() if p.is_dir()}


# ------------------------------------------------------------------------------- composed config
def _get(cfg: DictConfig, key: str):
    return OmegaConf.select(cfg, key, throw_on_missing=False)


def _integer(cfg: DictConfig, key: str, minimum: int | None = None, allow_none: bool = False) -> None:
    value = _get(cfg, key)
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}={value!r} must be an integer, e.g. {key}={max(minimum or 0, 1)}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{key}={value!r} must be at least {minimum}")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_optimizer(node, key: str) -> None:
    """lr > 0, momentum and betas in [0, 1), weight_decay >= 0 of one optimizer partial."""
    if not OmegaConf.is_dict(node):
        return
    checks = {"lr": (lambda v: _number(v) and v > 0, "a positive number, e.g. 0.01"),
              "weight_decay": (lambda v: _number(v) and v >= 0, "a number >= 0"),
              "momentum": (lambda v: _number(v) and 0 <= v < 1, "in [0, 1), e.g. 0.9"),
              "eps": (lambda v: _number(v) and v > 0, "a small positive number, e.g. 1e-8"),
              "rho": (lambda v: _number(v) and 0 <= v <= 1, "in [0, 1]"),
              "betas": (lambda v: OmegaConf.is_list(v) and len(v) == 2 and all(_number(b) and 0 <= b < 1 for b in v),
                        "two numbers in [0, 1), e.g. [0.9, 0.999]")}
    for name, (ok, fix) in checks.items():
        if name in node and not ok(node[name]):
            raise ConfigError(f"{key}.{name}={node[name]!r} must be {fix}")


def check_scheduler(node, key: str) -> None:
    if not OmegaConf.is_dict(node):
        return
    if "gamma" in node and not (_number(node.gamma) and 0 < node.gamma <= 1):
        raise ConfigError(f"{key}.gamma={node.gamma!r} must be in (0, 1], e.g. 0.1")
    if "milestones" in node:
        m = node.milestones
        if not (OmegaConf.is_list(m) and all(isinstance(v, int) and v > 0 for v in m) and list(m) == sorted(m)):
            raise ConfigError(f"{key}.milestones={m!r} must be increasing positive epochs, e.g. [30, 60]")
    if "T_max" in node and not (isinstance(node.T_max, int) and node.T_max >= 1):
        raise ConfigError(f"{key}.T_max={node.T_max!r} must be a positive number of epochs")


def class_order_problem(order, n_classes: int) -> str | None:
    """What is wrong with an explicit class order (None: a permutation of 0..n_classes-1)."""
    try:
        ids = [int(c) for c in order]
    except (TypeError, ValueError):
        return f"must be a list of integer class ids, got {list(order)!r}"
    seen, duplicates = set(), []
    for c in ids:
        if c in seen and c not in duplicates:
            duplicates.append(c)
        seen.add(c)
    outside = [c for c in ids if not 0 <= c < n_classes]
    missing = sorted(set(range(n_classes)) - seen)
    problems = []
    if duplicates:
        problems.append(f"id {', '.join(map(str, duplicates[:10]))} appear{'s' if len(duplicates) == 1 else ''} twice")
    if outside:
        problems.append(f"id {', '.join(map(str, outside[:10]))} out of range 0..{n_classes - 1}")
    if missing:
        problems.append(f"missing {missing[:10]}{'...' if len(missing) > 10 else ''}")
    if not problems:
        return None
    return (f"must list every class id 0..{n_classes - 1} exactly once ({len(ids)} ids given; "
            + "; ".join(problems) + ")")


def is_run_dir(path: Path) -> bool:
    path = Path(path)
    return any((path / name).exists() for name in (".hydra", "results.json", "checkpoints", "train.log"))


def _writable(path: Path) -> tuple[bool, Path]:
    """Whether a run could create and write `path` (the nearest existing ancestor decides)."""
    probe = Path(path).absolute()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        return False, probe
    try:  # os.access says yes to root on a read-only mount: try a real file
        import tempfile

        with tempfile.NamedTemporaryFile(dir=probe, prefix=".lifelong-write-test-"):
            pass
    except OSError:
        return False, probe
    return True, probe


def check(cfg: DictConfig, run_dir: Path | None = None, gpus: int | None = None) -> None:
    """Every check of the composed config that needs no dataset or model (raises ConfigError).

    `gpus`: the GPUs this machine has (None: ask `gpu_count()`); a parameter so that the GPU-present
    path of the hardware check can be tested on a machine without one."""
    _integer(cfg, "seed")
    for key in ("epochs", "batch_size", "eval.batch_size"):
        _integer(cfg, key, minimum=1)
    _integer(cfg, "num_workers", minimum=0)
    _integer(cfg, "eval.limit_batches", minimum=1, allow_none=True)
    _integer(cfg, "loop_limit", minimum=1, allow_none=True)
    for key in ("trainer.limit_train_batches", "trainer.limit_val_batches"):
        value = _get(cfg, key)
        if value is not None and (not _number(value) or value <= 0):
            raise ConfigError(f"{key}={value!r} must be a positive number of batches (or a fraction in (0, 1])")
    if not OmegaConf.is_dict(cfg.get("method")) or "_target_" not in cfg.method:
        raise ConfigError("method has no _target_; choose one with method=<name> (see conf/method/)")
    scope = cfg.method.get("ce_scope")
    if scope is not None and scope not in CE_SCOPES:
        raise ConfigError(f"method.ce_scope={scope!r} is unknown; valid choices: {list(CE_SCOPES)}")
    if cfg.get("optimizer"):
        check_optimizer(cfg.optimizer, "optimizer")
    if cfg.get("scheduler"):
        check_scheduler(cfg.scheduler, "scheduler")
    for name, node in cfg.method.items():  # per-phase optimizers and schedulers of a method
        if OmegaConf.is_dict(node) and "_target_" in node:
            if "optim" in str(node._target_) and "lr_scheduler" not in str(node._target_):
                check_optimizer(node, f"method.{name}")
            elif "lr_scheduler" in str(node._target_):
                check_scheduler(node, f"method.{name}")
    check_logger(cfg)
    check_checkpoint(cfg)
    check_trainer(cfg, gpus)
    check_scenario(cfg)
    check_memory(cfg)
    threads = cfg.get("torch_threads")
    if threads not in (None, "auto") and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"torch_threads={threads!r} must be a positive integer, auto (one per core) or null")
    check_paths(cfg, run_dir)


def check_logger(cfg: DictConfig) -> None:
    wandb = _get(cfg, "logger.wandb")
    if OmegaConf.is_dict(wandb):
        mode = wandb.get("mode", "auto")
        if mode not in WANDB_MODES:
            raise ConfigError(f"logger.wandb.mode={mode!r} is unknown; valid choices: {list(WANDB_MODES)}")
        for key in ("project", "entity", "id"):  # W&B refuses these characters (wandb_settings.validate_project)
            value = wandb.get(key)
            bad = sorted({c for c in str(value) if c in WANDB_FORBIDDEN}) if value is not None else []
            if bad or (value is not None and not 0 < len(str(value)) <= 128):
                what = (f"contains {' '.join(repr(c) for c in bad)}, which W&B refuses in names (any of "
                        f"{' '.join(WANDB_FORBIDDEN)})" if bad else "must have 1 to 128 characters")
                raise ConfigError(f"logger.wandb.{key}={value!r} {what}; e.g. logger.wandb.{key}={_wandb_name(value)}")


def check_checkpoint(cfg: DictConfig) -> None:
    _integer(cfg, "checkpoint.every_n_epochs", minimum=1, allow_none=True)
    for key, upper in (("checkpoint.every_s", None), ("checkpoint.max_fraction", 1)):
        value = _get(cfg, key)
        if value is not None and (not _number(value) or value < 0 or (upper is not None and value > upper)):
            raise ConfigError(f"{key}={value!r} must be null or a number in [0, {upper or 'inf'}]"
                              f"{', e.g. 0.02 (2 % of the training time)' if upper else ', e.g. 600 (seconds)'}")
    for key in ("eval.cache", "speed.channels_last", "speed.compile", "speed.data_on_device"):
        value = _get(cfg, key)
        if value is not None and not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} must be true or false")


def check_trainer(cfg: DictConfig, gpus: int | None = None) -> None:
    for name, value in (cfg.get("trainer") or {}).items():
        problem = trainer_key_problem(str(name), value)
        if problem:
            raise ConfigError(problem)
    clip = _get(cfg, "trainer.gradient_clip_val")
    if clip is not None and (not _number(clip) or clip < 0):  # Lightning skips clipping silently for values <= 0
        raise ConfigError(f"trainer.gradient_clip_val={clip!r} must be a number >= 0 (0 or null: no clipping), e.g. 1.0")
    accelerator = _get(cfg, "trainer.accelerator")
    if accelerator not in ACCELERATORS:
        raise ConfigError(f"trainer.accelerator={accelerator!r} is unknown; valid choices: {list(ACCELERATORS)}")
    precision = str(_get(cfg, "trainer.precision"))
    if precision not in PRECISIONS:
        raise ConfigError(f"trainer.precision={precision!r} is unknown; valid choices: {list(PRECISIONS)}")
    devices = _get(cfg, "trainer.devices")
    if not (devices == "auto" or (isinstance(devices, int) and devices >= 1) or OmegaConf.is_list(devices)):
        raise ConfigError(f"trainer.devices={devices!r} must be a positive integer, a list of device ids or auto")
    if accelerator in ("gpu", "cuda"):
        count = gpu_count() if gpus is None else gpus
        if count == 0:
            fix = ("run on CPU processes with trainer.accelerator=cpu" if _get(cfg, "trainer.strategy")
                   else "run on CPU with hardware=cpu")
            raise ConfigError(f"trainer.accelerator={accelerator} but this machine has no usable GPU; {fix}")
        wanted = len(devices) if OmegaConf.is_list(devices) else devices
        if isinstance(wanted, int) and wanted > count:
            raise ConfigError(f"trainer.devices={devices} but this machine has {count} GPU"
                              f"{'s' if count != 1 else ''}; use trainer.devices={count} or fewer")


# Lightning Trainer arguments that lifelong.run sets itself for every fit (a +trainer.<name> for one of
# them would be passed twice), with the key that sets each.
RUNNER_TRAINER_KEYS = {
    "max_epochs": "set epochs=<n> (each task's main phase; a method's other phases have their own method.*epochs keys)",
    "logger": "choose logger=csv, logger=wandb or logger=none",
    "callbacks": "add one with +callbacks.<name>._target_=<class>",
    "default_root_dir": "choose the run directory with hydra.run.dir=<dir>",
    "enable_checkpointing": "resume points are lifelong's own: see checkpoint.* in conf/config.yaml",
    "num_sanity_val_steps": "lifelong always sets 0",
    "plugins": "lifelong sets its own (under Slurm: SLURMEnvironment without Lightning's requeue, lifelong.run)",
}


def trainer_arguments() -> set[str] | None:
    """The keyword arguments of `lightning.Trainer`, read from its source without importing Lightning
    (an import takes seconds); None where the source cannot be found or read."""
    import ast
    import importlib.util

    try:
        spec = importlib.util.find_spec("lightning")
        source = Path(spec.origin).parent / "pytorch" / "trainer" / "trainer.py"
        tree = ast.parse(source.read_text())
    except (AttributeError, OSError, SyntaxError, TypeError, ValueError, ImportError):
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Trainer":
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    return {a.arg for a in item.args.args + item.args.kwonlyargs} - {"self"}
    return None


def trainer_key_problem(name: str, value) -> str | None:
    """The error for `trainer.<name>=<value>` that lifelong sets itself or Lightning's Trainer does not take."""
    if name in RUNNER_TRAINER_KEYS:
        return (f"trainer.{name}={value}: lifelong sets this Lightning Trainer argument itself for every fit; "
                f"{RUNNER_TRAINER_KEYS[name]}")
    known = trainer_arguments()
    if known is not None and name not in known:
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        hint = f"did you mean `{close[0]}`?" if close else "its arguments: python -c 'import lightning; help(lightning.Trainer)'"
        return f"trainer.{name}={value}: Lightning's Trainer has no argument `{name}`; {hint}"
    return None


# Device nodes of a GPU driver (NVIDIA, AMD ROCm, WSL): without any of them torch sees no GPU either.
GPU_DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")


def gpu_count() -> int:
    """CUDA devices torch can use. On Linux without a GPU driver's device node the answer is 0
    without importing torch (seconds saved on an error); otherwise torch counts (no CUDA context)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return 0
    if sys.platform.startswith("linux") and not any(os.path.exists(p) for p in GPU_DEVICE_NODES):
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_scenario(cfg: DictConfig) -> None:
    order = _get(cfg, "scenario.class_order")
    n_classes = _get(cfg, "dataset.n_classes")
    n_tasks, first = _get(cfg, "scenario.n_tasks"), _get(cfg, "scenario.nc_first_task")
    cuts_classes = str(_get(cfg, "scenario._target_") or "").endswith(".class_incremental")
    if cuts_classes and isinstance(n_classes, int) and isinstance(n_tasks, int) and (first is None or isinstance(first, int)):
        from lifelong.splits import task_sizes

        task_sizes(n_classes, n_tasks, first)  # n_tasks / nc_first_task that do not split the classes
    if OmegaConf.is_list(order) and isinstance(n_classes, int):
        problem = class_order_problem(list(order), n_classes)
        if problem:
            raise ConfigError(f"scenario.class_order {problem}")
    if isinstance(order, str) and isinstance(n_classes, int):
        from lifelong.splits import named_order_problem

        problem = named_order_problem(order, n_classes)
        if problem:
            raise ConfigError(problem)
    fraction = _get(cfg, "scenario.val_fraction")
    if fraction is not None and not (_number(fraction) and 0 <= fraction < 1):
        raise ConfigError(f"scenario.val_fraction={fraction} must be in [0, 1)")


def check_memory(cfg: DictConfig) -> None:
    """The exemplar budget (the same checks as `ExemplarMemory`, before torch is imported)."""
    memory = cfg.get("memory")
    if not OmegaConf.is_dict(memory) or "_target_" not in memory:
        return
    size, per_class = memory.get("size"), memory.get("per_class")
    if per_class is None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ConfigError(f"memory.size={size!r} must be a positive integer (or set memory.per_class)")
    if per_class is not None and (isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1
                                  or memory.get("selection") == "reservoir"):
        raise ConfigError(f"memory.per_class={per_class!r}: needs a positive integer and a class-balanced "
                          f"selection (not reservoir); or memory.per_class=null with memory.size")


def check_paths(cfg: DictConfig, run_dir: Path | None) -> None:
    resume = cfg.get("resume")
    if resume:
        resume = Path(str(resume))
        if resume.exists() and not resume.is_dir():
            raise ConfigError(f"resume={resume} is a file, not a run directory; give the directory an earlier run "
                              f"printed as `run dir:`")
        if not resume.is_dir():
            raise ConfigError(f"resume={resume} does not exist; give the run directory of an earlier run "
                              f"(outputs/runs/<date>/<time>_<method>_<id>), or leave resume= out to start a new run")
        if not is_run_dir(resume):
            raise ConfigError(f"resume={resume} is not a run directory (no .hydra/, results.json or checkpoints/); "
                              f"give the directory an earlier run printed as `run dir:`")
        check_task_state(resume)
        check_same_as_original(cfg, resume)
    for target in filter(None, [resume or run_dir]):
        ok, where = _writable(target)
        if not ok:
            raise ConfigError(f"cannot write the run directory {target} ({where} is read-only or not a directory); "
                              f"choose a writable place with hydra.run.dir=<dir> (or paths.output_dir=<dir>)")


# Config sections that define what a run computes: a resumed run must use the same values.
IDENTITY_KEYS = ("seed", "epochs", "batch_size", "drop_last", "dataset", "scenario", "backbone", "method",
                 "optimizer", "scheduler", "loop_limit", "memory")


def identity(cfg: DictConfig) -> dict:
    def plain(value):
        return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value

    return {k: plain(cfg.get(k)) for k in IDENTITY_KEYS}


def check_same_config(saved: dict, cfg: DictConfig, run_dir: Path) -> None:
    """A resumed run must compute the same thing: the keys in IDENTITY_KEYS may not change."""
    current = identity(cfg)
    changed = [k for k in IDENTITY_KEYS if k in saved and saved[k] != current[k]]
    if changed:
        first = changed[0]
        raise ConfigError(
            f"resume={run_dir}: {first} differs from the run being resumed (was {saved[first]!r}, now "
            f"{current[first]!r}); resume with the same overrides as the original run (see "
            f"{run_dir}/.hydra/overrides.yaml), or start a new run without resume=")


def check_same_as_original(cfg: DictConfig, run_dir: Path) -> None:
    """Before the heavy imports: this config against the run's own composed config (`.hydra/config.yaml`,
    as Hydra wrote it when the run started). The copy in `checkpoints/last.pt` is checked again when the
    state is loaded; a saved config that does not resolve here is left to that check."""
    saved_file = Path(run_dir) / ".hydra" / "config.yaml"
    if not saved_file.is_file():
        return
    try:
        saved = identity(OmegaConf.load(saved_file))
    except Exception:  # noqa: BLE001  (an interpolation that resolves only in its own run)
        return
    check_same_config(saved, cfg, run_dir)


def unreadable_checkpoint(path: Path, error: BaseException) -> ConfigError:
    run_dir = Path(path).parent.parent
    return ConfigError(
        f"checkpoint {path} is unreadable (truncated or corrupt: {error}); restart this run from its beginning "
        f"with `rm -r {run_dir / 'checkpoints'}` and the same command, or start a fresh run without resume=")


def check_task_state(run_dir: Path) -> None:
    """A `checkpoints/last.pt` that is not a complete torch zip archive (truncated, overwritten)."""
    import zipfile

    path = Path(run_dir) / "checkpoints" / "last.pt"
    if path.is_file() and not zipfile.is_zipfile(path):
        raise unreadable_checkpoint(path, "not a complete zip archive")


def disk_error_message(error: OSError, run_dir: Path | str = "<run dir>") -> str | None:
    """One line for an OSError a user fixes on their side (full disk, read-only or missing folder)."""
    # A move or copy (an atomic save's last step) names its destination second: the file that could not be written.
    target = error.filename2 or error.filename
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return (f"no space left writing {target or 'into ' + str(run_dir)} ({os.strerror(error.errno)}); "
                f"free space and continue with resume={run_dir}")
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return (f"cannot write {target or 'a run file'} ({os.strerror(error.errno)}); choose a writable "
                f"place with hydra.run.dir=<dir>")
    return None
