"""Hyperparameter search support: validation results and the objective a sweeper maximises.

A search must never select on the test sets. So every run with validation splits
(`scenario.val_fraction > 0`) also evaluates, after each task, every seen task's validation split
with the same metrics code as the test sets (`lifelong.metrics.evaluate`); results.json gets those
matrices and summaries with a `val_` prefix (`val_acc_tag`, `val_final_avg_acc_tag`, ...), and
`train.py` returns `summary[cfg.objective]` (default `val_final_avg_acc_tag`), which is what Hydra's
Optuna sweeper (`hparams_search=<family>_optuna`) maximises.
"""
from __future__ import annotations

import itertools

from omegaconf import DictConfig

from lifelong import distributed
from lifelong.data.datamodule import batch_loader
from lifelong.errors import ConfigError
from lifelong.metrics import Results, evaluate

PREFIX = "val_"


class Validation:
    """The accuracy matrices on the validation splits, one task at a time (None: no validation splits)."""

    def __init__(self, cfg: DictConfig, scenario, saved: dict | None = None):
        self.cfg, self.tasks = cfg, scenario.tasks
        self.enabled = all(len(t.val) > 0 for t in scenario.tasks)
        self.results = Results(len(scenario))
        if self.enabled and saved and f"{PREFIX}acc_tag" in saved:  # a resumed run keeps its finished rows
            rows = {k[len(PREFIX):]: v for k, v in saved.items() if k.startswith(PREFIX)}
            self.results = Results.from_dict({**rows, "n_tasks": saved["n_tasks"], "tasks_done": saved["tasks_done"]})

    def after_task(self, method, task, device) -> dict:
        """Evaluate the tasks seen so far on their validation splits; the `val_*` entries of results.json."""
        if not self.enabled:
            return {}
        taw, tag, tag_all, task_id = evaluate(method, self.tasks[: task.id + 1], self._batches(device),
                                              self.cfg.eval.limit_batches)
        self.results.add(task.id, taw, tag, tag_all, task_id)
        out = self.results.as_dict()
        return {PREFIX + k: v for k, v in out.items() if k not in ("n_tasks", "tasks_done")}

    def task_accuracy(self, method, task, device) -> float:
        """Task-aware accuracy on `task`'s validation split (what `val_acc_taw[t][t]` records; the
        continual search's selection criterion, FACIL gridsearch.py)."""
        taw, *_ = evaluate(method, [task], self._batches(device), self.cfg.eval.limit_batches)
        return taw[0]

    def _batches(self, device):
        cfg = self.cfg

        def val_batches(t):
            loader = batch_loader(t.val, cfg.eval.batch_size, shuffle=False, num_workers=cfg.num_workers)
            for x, y in distributed.shard(itertools.islice(loader, cfg.eval.limit_batches)):
                yield t.augment(x.to(device)), y.to(device)

        return val_batches


def objective(cfg: DictConfig, summary: dict) -> float | None:
    """What train.py returns to Hydra: `summary[cfg.objective]` (None when the run has no such entry)."""
    key = cfg.get("objective") or "val_final_avg_acc_tag"
    value = summary.get(key)
    return None if value is None else float(value)


def check(cfg: DictConfig) -> None:
    """Under the Optuna sweeper the objective must come from validation data."""
    if not _under_optuna():
        return
    key = cfg.get("objective") or ""
    if not key.startswith(PREFIX):
        raise ConfigError(f"objective={key!r}: a hyperparameter search selects on validation data; use a val_* "
                          f"key of results.json, e.g. objective=val_final_avg_acc_tag")
    fraction = cfg.scenario.get("val_fraction", 0) or 0
    if fraction <= 0:
        raise ConfigError(f"scenario.val_fraction={fraction}: a hyperparameter search needs validation splits "
                          f"(the objective is never computed on the test sets); set e.g. scenario.val_fraction=0.1")


def _under_optuna() -> bool:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return False
    choice = HydraConfig.get().runtime.choices.get("hydra/sweeper")
    return bool(choice) and "optuna" in str(choice)


class StudyCallback:
    """Hydra callback of hparams_search=...: creates the sweep dir before the Optuna storage opens there,
    and after the study writes every trial (number, state, value, params) to `<sweep dir>/trials.csv`
    and, with W&B on, logs a `study` run in the sweep's W&B group (trials table, best params)."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from pathlib import Path

        Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from pathlib import Path

        from lifelong.study import load_trials, log_study_to_wandb, write_trials_csv

        sweeper = config.hydra.sweeper
        sweep_dir = Path(str(config.hydra.sweep.dir))
        trials = load_trials(str(sweeper.storage), str(sweeper.study_name))
        write_trials_csv(sweep_dir / "trials.csv", trials, sweep_dir)
        if config.logger.get("wandb"):
            log_study_to_wandb(config, sweep_dir, trials)
