"""The continual hyperparameter framework: per-task choice of the learning rate and the stability weight.

De Lange et al., "A continual learning survey: Defying forgetting in classification tasks" (TPAMI
2021), as FACIL implements it (src/gridsearch.py, gridsearch_config.py). Before training
task t, using only task t's data (no future task, no test set):

1. Maximal plasticity search. Fine-tune on task t with each candidate learning rate: a copy of the
   method, as it is before task t, trained with its stability weight at 0. Its task-aware accuracy on
   task t's validation split is A_ft(lr); keep lr* = argmax A_ft, and A* = A_ft(lr*). Candidates:
   `lr_first` on the first task; later the `lr_searches` largest values of `lr` below task 0's lr*.
2. Stability decay (t >= 1; the first task has nothing to forget). Train a copy with lr* and the
   stability weight s = `start` (the method's strongest setting); while its accuracy on task t's
   validation split is below (1 - acc_drop_thr) * A*, s <- decay * s, at most `max_decays` times
   (after the last failed try s is decayed once more and kept, as in FACIL).

Then the method itself trains task t with (lr*, s). Every try is a real run of the task (the
method's phases, then `end_task`) from the same state and random-number state the final fit starts
from, so a try equals what a plain run with those settings would have produced on that task.

A method takes part by naming its stability hyperparameter (`ContinualMethod.stability_key`, an
attribute: larger = more stable) and its strongest setting (`stability_start`); the learning rate
goes through `ContinualMethod.set_learning_rate`. The choices per task are in results.json under
`search`; they are state: a resumed run re-applies the last one (`restore`).

`search=schedule` trains with given per-task choices (e.g. a continual search's, on other seeds or
with the test sets reported) without searching.
"""
from __future__ import annotations

import contextlib
import copy
import random
from typing import Callable

import numpy as np
import torch

from lifelong.errors import ConfigError

Trial = Callable[[float, float | None], float]  # (lr, stability weight) -> current-task validation accuracy


def check_method(method, start: float | None = None) -> tuple[str, float | None]:
    """The method's stability key and start value, or a ConfigError for a method without one."""
    key = getattr(method, "stability_key", None)
    name = type(method).__name__
    if key is None:
        raise ConfigError(f"search=continual: the method ({name}) declares no stability hyperparameter (stability_key); "
                          f"use search=none, or a method that declares one (README, 'Continual hyperparameter "
                          f"search': lwf, ewc, mas, si, rwalk, icarl, lucir, e2e, lwm, ebll, abd, mind)")
    if not hasattr(method, key):
        raise ConfigError(f"search=continual: method={name} names stability_key={key!r}, which it does not have")
    return key, start if start is not None else getattr(method, "stability_start", None)


def apply(method, lr: float | None, stability: float | None) -> None:
    """Train with learning rate `lr` and stability weight `stability` from now on (None: unchanged)."""
    if lr is not None:
        method.set_learning_rate(lr)
    if stability is not None:
        setattr(method, method.stability_key, stability)


def detached_copy(method, shared=()):
    """A deep copy of `method` to train a try on: the objects in `shared` (the scenario's tasks and
    their data) and the last Lightning trainer are not copied."""
    memo = {id(obj): obj for obj in shared}
    trainer = getattr(method, "_trainer", None)
    if trainer is not None:
        memo[id(trainer)] = None
    return copy.deepcopy(method, memo)


@contextlib.contextmanager
def same_random_state():
    """Every try starts from the random-number state the method's own fit of the task starts from."""
    state = (random.getstate(), np.random.get_state(), torch.get_rng_state(),
             torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    try:
        yield
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])
        torch.set_rng_state(state[2])
        if state[3] is not None:
            torch.cuda.set_rng_state_all(state[3])


class NoSearch:
    """search=none: every task trains with the configured hyperparameters."""

    def check(self, method, scenario) -> None:
        pass

    def restore(self, method, saved: dict | None) -> None:
        pass

    def before_task(self, method, task, trial: Trial) -> None:
        pass

    def results(self) -> dict:
        return {}


class ContinualSearch(NoSearch):
    """search=continual (see the module docstring; every default cites FACIL in conf/search/continual.yaml)."""

    def __init__(self, lr_first: list[float], lr: list[float], lr_searches: int = 3, decay: float = 0.5,
                 max_decays: int = 7, acc_drop_thr: float = 0.2, tasks: int | None = None,
                 start: float | None = None):
        if not lr_first or not lr:
            raise ConfigError("search.lr_first and search.lr must list at least one learning rate")
        if not 0 < decay < 1:
            raise ConfigError(f"search.decay={decay} must be in (0, 1): the stability weight shrinks each try")
        if not 0 <= acc_drop_thr < 1:
            raise ConfigError(f"search.acc_drop_thr={acc_drop_thr} must be in [0, 1)")
        if max_decays < 1 or lr_searches < 1:
            raise ConfigError(f"search.max_decays={max_decays} and search.lr_searches={lr_searches} must be >= 1")
        self.lr_first, self.lr = [float(v) for v in lr_first], [float(v) for v in lr]
        self.lr_searches, self.decay, self.max_decays = lr_searches, decay, max_decays
        self.acc_drop_thr, self.tasks, self.start = acc_drop_thr, tasks, start
        self.choices: list[dict] = []

    def check(self, method, scenario) -> None:
        key, start = check_method(method, self.start)
        if start is None or start <= 0:
            raise ConfigError(f"search.start={start}: method={type(method).__name__} gives no positive stability_start "
                              f"for {key}; set search.start")
        if not all(len(t.val) > 0 for t in scenario.tasks):
            raise ConfigError("scenario.val_fraction=0: search=continual selects on each task's validation split; "
                              "set e.g. scenario.val_fraction=0.1")

    def restore(self, method, saved: dict | None) -> None:
        """A resumed run: the finished tasks' choices, the last one applied (tasks past `search.tasks` keep it)."""
        self.choices = [dict(c) for c in (saved or {}).get("search", [])]
        if self.choices:
            apply(method, self.choices[-1]["lr"], self.choices[-1]["stability"])

    def candidates(self, task_id: int) -> list[float]:
        if task_id == 0:
            return self.lr_first
        # FACIL gridsearch.py: "LR for search are 'lr_searches' largest LR below 'lr_first'"
        below = [lr for lr in self.lr if lr < self.choices[0]["lr"]][: self.lr_searches]
        return below or [self.choices[0]["lr"]]  # nothing below task 0's choice: keep it

    def before_task(self, method, task, trial: Trial) -> dict | None:
        if self.tasks is not None and task.id >= self.tasks:
            return None  # FACIL --gridsearch-tasks: later tasks keep the last choice
        key, start = check_method(method, self.start)
        lr_tries = [[lr, trial(lr, 0.0)] for lr in self.candidates(task.id)]
        best_lr, best_acc = lr_tries[0]
        for lr, acc in lr_tries[1:]:
            if acc > best_acc:  # the first of equal accuracies, as FACIL's strict `>`
                best_lr, best_acc = lr, acc
        stability, stability_tries = None, []
        if task.id > 0:
            stability = start
            for _ in range(self.max_decays):
                acc = trial(best_lr, stability)
                stability_tries.append([stability, acc])
                if acc >= (1 - self.acc_drop_thr) * best_acc:
                    break
                stability *= self.decay
        choice = {"task": task.id, "lr": best_lr, "ft_acc": best_acc, "stability_key": key,
                  "stability": stability if stability is not None else float(getattr(method, key)),
                  "lr_tries": lr_tries, "stability_tries": stability_tries}
        apply(method, best_lr, stability)
        self.choices = self.choices[: task.id] + [choice]
        return choice

    def results(self) -> dict:
        return {"search": self.choices}


class Schedule(NoSearch):
    """search=schedule: task t trains with `lr[t]` and stability weight `stability[t]` (null or a
    missing entry: the configured value), e.g. the choices of a continual search."""

    def __init__(self, lr: list | None = None, stability: list | None = None):
        self.lr, self.stability = list(lr or []), list(stability or [])

    def check(self, method, scenario) -> None:
        if any(v is not None for v in self.stability):
            check_method(method)
        if max(len(self.lr), len(self.stability)) > len(scenario):
            raise ConfigError(f"search.lr / search.stability list more than the {len(scenario)} tasks")

    def before_task(self, method, task, trial: Trial) -> None:
        pick = lambda values: values[task.id] if task.id < len(values) else None  # noqa: E731
        apply(method, pick(self.lr), pick(self.stability))


def build(cfg):
    """The `search` group's object (search=none when the config has no such group)."""
    from hydra.utils import instantiate

    node = cfg.get("search")
    return instantiate(node) if node is not None and node.get("_target_") else NoSearch()
