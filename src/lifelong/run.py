"""The task loop: build everything, then train, evaluate and report one task at a time.

Knows no method by name: a method is whatever `cfg.method._target_` builds, driven through the
`ContinualMethod` hooks.
"""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lifelong import config as config_checks
from lifelong import report
from lifelong.data.datamodule import TaskData, batch_loader, concat
from lifelong.errors import ConfigError, DatasetNotFound
from lifelong.loggers import RunCSVLogger, RunWandbLogger, wandb_mode
from lifelong.metrics import Results, evaluate

log = logging.getLogger("lifelong")


def build(cfg: DictConfig):
    """Everything a run needs, built and checked before any training starts."""
    config_checks.check(cfg)
    scenario = instantiate(cfg.scenario, dataset=cfg.dataset, data_root=cfg.paths.data_root, seed=cfg.seed,
                           _convert_="object")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    backbone = instantiate(cfg.backbone)
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    method = instantiate(cfg.method, backbone=backbone, optimizer=instantiate(cfg.optimizer),
                         scheduler=scheduler, epochs=cfg.epochs, _convert_="object")
    return scenario, method


def make_loggers(cfg: DictConfig, run_dir: Path):
    loggers = []
    if cfg.logger.get("csv", False):
        loggers.append(RunCSVLogger(save_dir=str(run_dir), name="logs", version=""))
    wandb_logger = None
    if cfg.logger.get("wandb"):
        w = cfg.logger.wandb
        wandb_logger = RunWandbLogger(
            project=w.project, entity=w.entity, group=w.group, tags=list(w.tags or []), name=w.name,
            save_dir=str(run_dir), mode=wandb_mode(w.mode), id=w.get("id"), resume="allow" if w.get("id") else None,
            config=run_config(cfg),
            settings=_wandb_settings(),
        )
        loggers.append(wandb_logger)
    return loggers, wandb_logger


def run_config(cfg: DictConfig) -> dict:
    """The composed config, resolved, without Hydra's own node (what W&B records)."""
    return {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
            for k, v in cfg.items() if k != "hydra"}


def _wandb_settings():
    import wandb

    return wandb.Settings(console="off", silent=True)


def train_sequence(cfg: DictConfig, run_dir: Path) -> dict:
    quiet_lightning()
    scenario, method = build(cfg)
    loggers, wandb_logger = make_loggers(cfg, run_dir)
    results = Results(len(scenario))
    step_offset = 0
    log.info("run dir: %s", run_dir)
    log.info("class order: %s", scenario.class_order)
    log.info("tasks: %d, classes per task: %s", len(scenario), scenario.task_sizes)

    def task_data(task_ids: list[int], task_seed: int) -> TaskData:
        parts = [scenario[i] for i in task_ids]
        return TaskData(concat([p.train for p in parts]), concat([p.val for p in parts]), parts[-1].augment,
                        cfg.batch_size, cfg.eval.batch_size, cfg.num_workers, seed=task_seed,
                        drop_last=cfg.drop_last)

    summary = {}
    for task in scenario:
        start = time.time()
        task_seed = cfg.seed * 1000 + task.id  # every task starts from a known RNG state (resumable)
        L.seed_everything(task_seed, workers=True, verbose=False)
        method.begin_task(task)

        def fit(phase) -> None:
            nonlocal step_offset
            for logger in loggers:
                logger.step_offset = step_offset
            trainer = L.Trainer(
                max_epochs=phase.epochs, logger=loggers or False, callbacks=list(phase.callbacks),
                enable_checkpointing=False, num_sanity_val_steps=0, default_root_dir=str(run_dir),
                **OmegaConf.to_container(cfg.trainer, resolve=True),
            )
            if isinstance(phase.data, str):
                ids = list(range(task.id + 1)) if phase.data == "seen" else [task.id]
                data = task_data(ids, task_seed)
                if not phase.validate or len(data.val) == 0:
                    trainer.limit_val_batches = 0
                trainer.fit(method, datamodule=data)
            else:
                trainer.fit(method, train_dataloaders=phase.data)
            step_offset += trainer.global_step

        method.fit_task(task, fit)
        device = torch.device("cuda" if cfg.trainer.accelerator in ("gpu", "cuda") and torch.cuda.is_available()
                              else "cpu")
        method.to(device)
        method.end_task(task, task_data([task.id], task_seed))

        def test_batches(t):
            for x, y in batch_loader(t.test, cfg.eval.batch_size, shuffle=False, num_workers=cfg.num_workers):
                yield t.augment(x.to(device)), y.to(device)

        taw, tag, tag_all, task_id = evaluate(method, scenario.tasks[: task.id + 1], test_batches,
                                              cfg.eval.limit_batches, progress=cfg.trainer.enable_progress_bar)
        results.add(task.id, taw, tag, tag_all, task_id)
        summary = report.write_all(run_dir, results, {**_meta(cfg, scenario), **method.extra_results()})
        log.info("%s\n  (task took %.1f s)", report.format_row(summary, task.id), time.time() - start)
        if wandb_logger is not None:
            report.wandb_task(wandb_logger, summary, task.id)
        _checkpoint(run_dir, method, summary)

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
    log.info("final: ACC_TAW %.2f  ACC_TAG %.2f  forgetting TAW %s  TAG %s",
             100 * summary["final_avg_acc_taw"], 100 * summary["final_avg_acc_tag"],
             _fmt(summary["final_avg_forg_taw"]), _fmt(summary["final_avg_forg_tag"]))
    return summary


def quiet_lightning() -> None:
    """Keep the console for our per-task tables: Lightning's tips and expected warnings go."""
    import warnings

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    for message in (".*module\\(s\\) in eval mode.*",  # frozen teachers are in eval mode on purpose
                    ".*smaller than the logging interval.*", ".*LeafSpec.*", ".*does not have many workers.*",
                    ".*GPU available but not used.*", ".*srun. command is available.*"):
        warnings.filterwarnings("ignore", message=message)


def _fmt(v):
    return "-" if v is None else f"{100 * v:.2f}"


def _meta(cfg: DictConfig, scenario) -> dict:
    return {
        "class_order": scenario.class_order,
        "task_sizes": scenario.task_sizes,
        "task_classes": [t.classes for t in scenario.tasks],
        "seed": cfg.seed,
    }


def _checkpoint(run_dir: Path, method, summary: dict) -> None:
    """The resume point: method state and results after the last finished task."""
    path = run_dir / "checkpoints" / "last.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"tasks_done": summary["tasks_done"], "state_dict": method.state_dict(), "results": summary}, tmp)
    tmp.replace(path)


def output_dir(cfg: DictConfig) -> Path:
    if cfg.paths.get("output_dir"):
        return Path(cfg.paths.output_dir)
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def main(cfg: DictConfig) -> float | None:
    """Hydra entry: user-fixable errors become one clear message and exit status 2."""
    try:
        summary = train_sequence(cfg, output_dir(cfg))
    except (ConfigError, DatasetNotFound) as error:
        print(f"\nerror: {error}\n", file=sys.stderr)
        sys.exit(2)
    return summary.get("final_avg_acc_tag")
