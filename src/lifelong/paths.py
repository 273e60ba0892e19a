"""Evaluation of methods with one frozen prediction path per task, and the cache it keeps.

MIND and PackNet keep one sub-network per task, CLR one reprogramming per task. Without a task id
they run every task's path and the most confident answers (`lifelong.selection`). Once task j has
ended, path j never changes (its weights, BatchNorm statistics and head are frozen bit for bit),
and neither do the test sets: what path j says about a test batch is the same after every later
task. `PathCache` keeps, per (test task, path, batch), the little the selectors and the metrics
need: the path's confidence and entropy, the class it predicts, and (on its own task's test set)
its task-aware prediction. After task t only the new path t runs on the old test sets and every
path on the new one, 2t + 1 passes over a test set instead of (t + 1)^2, and every path's logits
serve the task-aware and every task-agnostic rule at once (the true task runs once).

A method takes this route (`lifelong.metrics.evaluate` with a cache, `eval.cache=true`) by having

    path_logits(x, task_ids) -> list of [B, n_classes(j)] logits, path j on task j's classes
    path_selection() -> (main rule, {name: rule} reported as acc_tag_<name>, temperature)

where a rule is one of `lifelong.selection.CHOOSERS`, and a path's task-aware logits are its
`path_logits`. The results are those of the uncached route (`eval.cache=false`), entry for entry
(tests/test_eval_cache.py); on a GPU without `trainer.deterministic`, kernels may round differently
between passes, as they may between any two runs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lifelong.selection import path_scores


@dataclass
class PathOutput:
    """Path j on one test batch of task u: what evaluation needs of its logits."""

    confidence: torch.Tensor  # [B] max temperature-scaled softmax probability
    entropy: torch.Tensor  # [B] entropy of that softmax
    block_prediction: torch.Tensor  # [B] argmax of the softmax, within path j's classes
    task_aware: torch.Tensor | None  # [B] argmax of the logits (j == u: the task-aware prediction)

    @classmethod
    def of(cls, logits: torch.Tensor, temperature: float, own_task: bool) -> "PathOutput":
        probs, confidence, entropy = path_scores(logits, temperature)
        return cls(confidence, entropy, probs.argmax(1), logits.argmax(1) if own_task else None)


class PathCache:
    """(test task, path, batch index) -> `PathOutput`; held by the runner for the test sets of one run."""

    def __init__(self):
        self.entries: dict[tuple[int, int, int], PathOutput] = {}
        self.passes = 0  # path forwards run (batches), for the benchmarks

    def missing(self, u: int, i: int, n_paths: int) -> list[int]:
        return [j for j in range(n_paths) if (u, j, i) not in self.entries]


def predictions(method, task_id: int, batch_index: int, x: torch.Tensor, n_paths: int, offsets: torch.Tensor,
                cache: PathCache) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """`(task-aware prediction, {rule name: predicted class id}, {rule name: chosen path})` on one
    test batch of task `task_id`, running only the paths the cache lacks."""
    main, others, temperature = method.path_selection()
    missing = cache.missing(task_id, batch_index, n_paths)
    if missing:
        for j, logits in zip(missing, method.path_logits(x, missing), strict=True):
            cache.entries[(task_id, j, batch_index)] = PathOutput.of(logits, temperature, j == task_id)
        cache.passes += len(missing)
    outputs = [cache.entries[(task_id, j, batch_index)] for j in range(n_paths)]
    confidence = torch.stack([o.confidence for o in outputs], dim=1)
    entropy = torch.stack([o.entropy for o in outputs], dim=1)
    block = torch.stack([o.block_prediction for o in outputs], dim=1)
    predicted, chosen = {}, {}
    for name, rule in {"": main, **others}.items():
        pick = rule(confidence, entropy)
        chosen[name] = pick
        predicted[name] = offsets[pick] + block.gather(1, pick.unsqueeze(1)).squeeze(1)
    return outputs[task_id].task_aware, predicted, chosen
