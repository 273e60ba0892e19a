"""The task loop: build everything, then train, evaluate and report one task at a time.

Knows no method by name: a method is whatever `cfg.method._target_` builds, driven through the
`ContinualMethod` hooks.
"""
from __future__ import annotations

import itertools
import logging
import os
import time
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lifelong import config as config_checks
from lifelong import continual_search
from lifelong import distributed
from lifelong import interrupt
from lifelong import progress
from lifelong import report
from lifelong import resume as checkpoints
from lifelong import search
from lifelong import speed
from lifelong.callbacks import Interruptions
from lifelong.data.datamodule import TaskData, batch_loader, concat
from lifelong.loggers import RunCSVLogger, RunWandbLogger, wandb_mode
from lifelong.methods.base import PhaseModes
from lifelong.metrics import Results, evaluate
from lifelong.paths import PathCache

log = logging.getLogger("lifelong")


def set_threads(threads) -> int:
    """`torch_threads`: an integer, "auto" (one per core this process may use) or None (torch's default)."""
    if threads == "auto":
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if threads is not None:
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def build(cfg: DictConfig):
    """Everything a run needs, built and checked before any training starts."""
    config_checks.check(cfg)
    set_threads(cfg.get("torch_threads"))
    scenario = instantiate(cfg.scenario, dataset=cfg.dataset, data_root=cfg.paths.data_root, seed=cfg.seed,
                           _convert_="object")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    backbone = instantiate(cfg.backbone)
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    # memory=none is an empty group option; a memory is passed only when there is one.
    memory = {"memory": instantiate(cfg.memory)} if cfg.get("memory") and cfg.memory.get("_target_") else {}
    method = instantiate(cfg.method, backbone=backbone, optimizer=instantiate(cfg.optimizer),
                         scheduler=scheduler, epochs=cfg.epochs, _convert_="object", **memory)
    method.loop_limit = cfg.get("loop_limit")  # debug=smoke: every loop of the method runs once
    method.check_scenario(scenario)
    return scenario, method


def make_loggers(cfg: DictConfig, run_dir: Path):
    loggers = []
    if not checkpoints.is_global_zero():  # under DDP only rank zero logs
        return loggers, None
    if cfg.logger.get("csv", False):
        loggers.append(RunCSVLogger(save_dir=str(run_dir), name="logs", version=""))
    wandb_logger = None
    if cfg.logger.get("wandb"):
        w = cfg.logger.wandb
        # The id of an earlier attempt (kept in the run dir): a resumed or requeued run continues that W&B run.
        run_id = w.get("id") or checkpoints.wandb_run_id(run_dir)
        wandb_logger = RunWandbLogger(
            project=w.project, entity=w.entity, group=w.group or sweep_group(), tags=list(w.tags or []),
            name=w.name, save_dir=str(run_dir), mode=wandb_mode(w.mode), id=run_id,
            resume="allow" if run_id else None,
            config=run_config(cfg),
            settings=_wandb_settings(),
        )
        checkpoints.keep_wandb_run_id(run_dir, wandb_logger.experiment.id)
        loggers.append(wandb_logger)
    return loggers, wandb_logger


def run_config(cfg: DictConfig) -> dict:
    """The composed config, resolved, without Hydra's own node (what W&B records)."""
    return {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
            for k, v in cfg.items() if k != "hydra"}


def sweep_group() -> str | None:
    """In a multirun, the sweep directory (e.g. `multirun/2026-01-31/12-00-00_4242`): the W&B group."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    sweep_dir = Path(str(HydraConfig.get().sweep.dir))
    return "/".join(sweep_dir.parts[-3:])


def _wandb_settings():
    import wandb

    return wandb.Settings(console="off", silent=True)


class RankSlicedData(TaskData):
    """Under DDP each rank trains on its slice of every global batch (`distributed.RankSlice`), so
    `batch_size` is the global batch size and DDP sees the batches one process would."""

    rank, world_size = 0, 1

    def train_dataloader(self):
        return distributed.slice_batches(super().train_dataloader(), self.rank, self.world_size)


def restore(cfg: DictConfig, method, scenario, run_dir: Path) -> dict | None:
    """Bring `method` to its state after the last finished task of `run_dir` (None: no task finished).

    The contract with the methods (`ContinualMethod.on_load_state_dict_structure`): replaying
    `begin_task` for the finished tasks rebuilds what grows per task (heads, per-task layers, masks),
    the structure hook rebuilds what `end_task` creates, and `load_state_dict` fills in the values.
    """
    state = checkpoints.load_task_state(run_dir)
    if state is None:
        return None
    checkpoints.check_same_config(state["config"], cfg, run_dir)
    for task in scenario.tasks[: state["tasks_done"]]:
        L.seed_everything(cfg.seed * 1000 + task.id, workers=True, verbose=False)  # as the original run did
        method.begin_task(task)
    method.on_load_state_dict_structure(state["state_dict"])
    method.load_state_dict(state["state_dict"])
    log.info("resumed from %s after task %d of %d", run_dir / checkpoints.LAST, state["tasks_done"],
             len(scenario))  # tasks counted from 1, as the progress bar and the interruption line count them
    return state


def train_sequence(cfg: DictConfig, run_dir: Path) -> dict:
    quiet_lightning()
    started = time.monotonic()
    scenario, method = build(cfg)
    seconds = {"build": time.monotonic() - started, "fit": 0.0, "epoch_checkpoints": 0.0, "evaluate": 0.0,
               "task_checkpoints": 0.0, "report": 0.0}  # this attempt's time by part: results.json "seconds"
    checkpoint_policy = checkpoints.CheckpointPolicy(**(cfg.get("checkpoint") or {}))
    eval_cache = PathCache() if cfg.eval.get("cache", True) else None
    plot_schedule = report.Plots()
    if cfg.get("resume"):
        run_dir = Path(cfg.resume)  # a resumed run goes on writing into its own run dir
    elif checkpoints.has_state(run_dir):
        log.info("%s already holds a checkpoint (a requeued job): resuming from it", run_dir)
    tuner = continual_search.build(cfg)  # search=continual: per-task lr and stability weight (state: in results)
    tuner.check(method, scenario)
    state = restore(cfg, method, scenario, run_dir)
    tuner.restore(method, None if state is None else state["results"])
    loggers, wandb_logger = make_loggers(cfg, run_dir)
    results = Results(len(scenario)) if state is None else Results.from_dict(state["results"])
    step_offset = 0 if state is None else state["step_offset"]
    tasks_done = 0 if state is None else state["tasks_done"]
    validation = search.Validation(cfg, scenario, None if state is None else state["results"])
    log.info("run dir: %s", run_dir)
    log.info("class order: %s", scenario.class_order)
    log.info("tasks: %d, classes per task: %s", len(scenario), scenario.task_sizes)

    def task_data(task_ids: list[int], task_seed: int) -> TaskData:
        parts = [scenario[i] for i in task_ids]
        data = RankSlicedData(concat([p.train for p in parts]), concat([p.val for p in parts]), parts[-1].augment,
                              cfg.batch_size, cfg.eval.batch_size, cfg.num_workers, seed=task_seed,
                              drop_last=cfg.drop_last)
        data.max_batches = cfg.get("loop_limit")  # passes over the data between tasks (debug=smoke)
        return data

    summary = {} if state is None else state["results"]
    if summary and checkpoints.is_global_zero():
        # last.pt is written before results.json: after a kill between the two, catch up here.
        report.write_summary(run_dir, summary, plots=False)
    interrupt.where.update(run_dir=run_dir, task=None, n_tasks=len(scenario), done=tasks_done)  # for the line on Ctrl-C
    for task in scenario:
        if task.id < tasks_done:
            continue
        interrupt.where["task"] = task.id
        interrupt.check()  # a signal whose exception was lost (lifelong.interrupt): stop before the task
        start = time.time()
        task_seed = cfg.seed * 1000 + task.id  # every task starts from a known RNG state (resumable)
        L.seed_everything(task_seed, workers=True, verbose=False)
        method.begin_task(task)
        device = torch.device("cuda" if cfg.trainer.accelerator in ("gpu", "cuda") and torch.cuda.is_available()
                              else "cpu")
        phase_index = 0

        def fit(phase, module=None) -> None:
            """One phase's Lightning fit of the method (or of `module`: a search try, which neither logs
            nor leaves resume points)."""
            nonlocal step_offset, device, phase_index
            trial, module = module is not None, module or method
            for logger in loggers:
                logger.step_offset = step_offset
            options = OmegaConf.to_container(cfg.trainer, resolve=True)
            bars = progress.callbacks(options, task.id, len(scenario), f"{phase.name} (search)" if trial else phase.name)
            # Each epoch ends with a resume point; one left by an interrupted attempt is continued.
            ckpt = None if trial else checkpoints.phase_checkpoint(run_dir, task.id, phase_index, phase.name)
            phase_index += 0 if trial else 1
            trainer = L.Trainer(
                max_epochs=module.loop_length(phase.epochs), logger=False if trial else loggers or False,
                callbacks=[PhaseModes(), Interruptions(), *phase.callbacks,
                           *([] if trial else [checkpoints.EpochCheckpoint(ckpt, checkpoint_policy)]),
                           *bars, *extra_callbacks(cfg)], plugins=_cluster_plugins(),
                enable_checkpointing=not trial, num_sanity_val_steps=0, default_root_dir=str(run_dir),
                **{"use_distributed_sampler": False, **options},
            )
            ckpt_path = None if trial else checkpoints.usable_checkpoint(ckpt)
            speed_options = cfg.get("speed") or {}
            speed.prepare(module, speed_options.get("channels_last", False), speed_options.get("compile", False))
            if not isinstance(phase.data, torch.utils.data.DataLoader):
                ids = list(range(task.id + 1)) if phase.data == "seen" else [task.id]
                data = task_data(ids, task_seed)
                data.train = module.phase_data(phase, data.train if isinstance(phase.data, str) else phase.data)
                if speed_options.get("data_on_device", False):
                    data.train = speed.on_device(data.train, trainer.strategy.root_device)
                data.rank, data.world_size = trainer.global_rank, trainer.world_size
                if not phase.validate or len(data.val) == 0:
                    trainer.limit_val_batches = 0
                trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
            else:
                trainer.fit(module, train_dataloaders=phase.data, ckpt_path=ckpt_path)
            interrupt.check()
            step_offset += 0 if trial else trainer.global_step
            device = trainer.strategy.root_device  # under DDP: this rank's GPU
            distributed.broadcast_batchnorm_statistics(method)  # every rank evaluates rank zero's model

        def trial(lr: float, stability: float | None) -> float:
            """search=continual: a copy of the method trained on this task with (lr, stability weight),
            from the state and random state the method's own fit starts from; its accuracy on the task's
            validation split."""
            with continual_search.same_random_state():
                candidate = continual_search.detached_copy(method, shared=scenario.tasks)
                continual_search.apply(candidate, lr, stability)
                candidate.fit_task(task, lambda phase: fit(phase, candidate))
                candidate.to(device)
                candidate.end_task(task, task_data([task.id], task_seed))
                return validation.task_accuracy(candidate, task, device)

        tuner.before_task(method, task, trial)
        fit_start = time.monotonic()
        method.fit_task(task, fit)
        seconds["fit"] += time.monotonic() - fit_start
        method.to(device)
        method.end_task(task, task_data([task.id], task_seed))

        def test_batches(t):
            # Under DDP each rank evaluates its share of the batches and torchmetrics sums the counts
            # over ranks in compute(): every test sample is counted once, the result is on every rank.
            loader = batch_loader(t.test, cfg.eval.batch_size, shuffle=False, num_workers=cfg.num_workers)
            for x, y in distributed.shard(itertools.islice(loader, cfg.eval.limit_batches)):
                yield t.augment(x.to(device)), y.to(device)

        variants: dict[str, list[float]] = {}
        eval_start = time.monotonic()
        taw, tag, tag_all, task_id = evaluate(method, scenario.tasks[: task.id + 1], test_batches,
                                              cfg.eval.limit_batches, progress=cfg.trainer.enable_progress_bar,
                                              variants=variants, cache=eval_cache)
        seconds["evaluate"] += time.monotonic() - eval_start
        val_results = validation.after_task(method, task, device)  # val_* entries: what a search selects on
        if not checkpoints.is_global_zero():
            continue  # under DDP rank zero reports and checkpoints
        results.add(task.id, taw, tag, tag_all, task_id)
        results.add_variants(task.id, variants)
        summary = report.summarize(results, {**_meta(cfg, scenario), **method.extra_results(), **val_results,
                                             **tuner.results()})
        summary["title"] = _title(cfg, scenario, run_dir)
        seconds["epoch_checkpoints"] = checkpoint_policy.seconds
        summary["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
        interrupt.check()  # never write a task's results after a signal
        with interrupt.deferred():  # the checkpoint first, then the results it covers: never the reverse
            save_start = time.monotonic()
            checkpoints.save_task_state(run_dir, method, summary, cfg, step_offset,
                                        wandb_logger.version if wandb_logger is not None else None)
            seconds["task_checkpoints"] += time.monotonic() - save_start
            report_start = time.monotonic()
            report.write_summary(run_dir, summary, plots=plot_schedule.due(summary))
            seconds["report"] += time.monotonic() - report_start
            interrupt.where.update(task=None, done=task.id + 1)  # a signal held back here comes after the task
        log.info("%s\n  (task took %.1f s)", report.format_row(summary, task.id), time.time() - start)
        if wandb_logger is not None:
            report.wandb_task(wandb_logger, summary, task.id)

    if wandb_logger is not None:
        plots = {name: run_dir / "plots" / f"{name}.png" for name in
                 ("acc_taw_heatmap", "acc_tag_heatmap", "acc_taw_curves", "acc_tag_curves", "forgetting")}
        report.wandb_final(wandb_logger, summary, plots)
        run = wandb_logger.experiment
        offline = run.settings.mode == "offline" or getattr(run.settings, "_offline", False)
        run_path = Path(run.dir).parent
        wandb_logger.finalize("success")
        import wandb

        wandb.finish()
        if offline:
            log.info("W&B ran offline; upload with:\n  wandb sync %s", run_path)
    if not summary:  # a DDP rank other than zero
        return summary
    log.info("final: ACC_TAW %.2f  ACC_TAG %.2f  forgetting TAW %s  TAG %s",
             100 * summary["final_avg_acc_taw"], 100 * summary["final_avg_acc_tag"],
             _fmt(summary["final_avg_forg_taw"]), _fmt(summary["final_avg_forg_tag"]))
    return summary


def extra_callbacks(cfg: DictConfig) -> list:
    """`callbacks.<name>`: Lightning callbacks (Hydra `_target_` configs) added, fresh, to every fit."""
    return [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]


def quiet_lightning() -> None:
    """Keep the console for our per-task tables: Lightning's tips and expected warnings go."""
    import warnings

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    for message in (".*module\\(s\\) in eval mode.*",  # frozen teachers are in eval mode on purpose
                    ".*smaller than the logging interval.*", ".*LeafSpec.*", ".*does not have many workers.*",
                    ".*GPU available but not used.*", ".*srun. command is available.*",
                    ".*validation_step. but have no .val_dataloader.*",  # phases without validation
                    ".*overridden .on_before_batch_transfer.*"):  # the base class keeps the raw batch
        warnings.filterwarnings("ignore", message=message)


def _fmt(v):
    return "-" if v is None else f"{100 * v:.2f}"


def _meta(cfg: DictConfig, scenario) -> dict:
    return {
        "class_order": scenario.class_order,
        "task_sizes": scenario.task_sizes,
        "task_classes": [t.classes for t in scenario.tasks],
        "seed": cfg.seed,
        "torch_threads": torch.get_num_threads(),  # CPU numbers are reproducible at a fixed thread count
    }


def _title(cfg: DictConfig, scenario, run_dir: Path) -> str:
    """Plot titles: method, dataset, scenario and run name."""
    name = lambda node: str(node.get("_target_", "?")).rsplit(".", 1)[-1]  # noqa: E731
    return report.run_title(name(cfg.method), str(cfg.dataset.get("name", "?")), name(cfg.scenario), len(scenario),
                            run_dir)


def _cluster_plugins() -> list:
    """Under Slurm, Lightning's own requeue (SIGUSR1, hpc_ckpt files) is off: submitit requeues the
    job (hydra/launcher=slurm, `max_num_timeout`) and the run resumes from its own run dir."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def main(cfg: DictConfig) -> float | None:
    """Kept for callers of the old entry point: `lifelong.cli.main`."""
    from lifelong.cli import main as cli_main

    return cli_main(cfg)
