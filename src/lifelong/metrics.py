"""Accuracy matrices and the summaries derived from them (DESIGN.md, "Metrics").

After training task t, for each seen task u <= t, on u's test set:
  acc_taw[t][u]  task-aware accuracy: argmax over task u's classes only
  acc_tag[t][u]  task-agnostic accuracy: argmax over every class seen so far
  forg_*[t][u]   max_{t' in [u, t-1]} acc[t'][u] - acc[t][u], for u < t
  avg_acc_*[t]   mean over u <= t;  avg_forg_*[t]: mean over u < t (t >= 1)
  acc_tag_all[t] accuracy over the pooled test samples of every seen class
In a domain-incremental scenario (`task.label_space = C`: every task's block of ids names the same C
classes) acc_tag and acc_tag_all score the class the prediction names, `id mod C`, whichever task's
block it falls in; acc_task_id still counts predictions in task u's own block.
Summary: final averages, average incremental accuracy (mean over t of avg_acc_*[t]) and backward
transfer (mean over u < t of acc[t][u] - acc[u][u], at the last trained task t).
Accuracies are fractions in [0, 1]; entries that are not defined are None (null in JSON).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torchmetrics.classification import MulticlassAccuracy

from lifelong import distributed, paths

Matrix = list[list[Optional[float]]]


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def forgetting(acc: Matrix) -> Matrix:
    n = len(acc)
    forg: Matrix = [[None] * n for _ in range(n)]
    for t in range(n):
        for u in range(t):
            if acc[t][u] is None:
                continue
            best = max(acc[s][u] for s in range(u, t) if acc[s][u] is not None)
            forg[t][u] = best - acc[t][u]
    return forg


def row_means(matrix: Matrix, strict_lower: bool = False) -> list[Optional[float]]:
    """Mean of row t over u <= t (or u < t): avg_acc (or avg_forg) per task."""
    return [_mean(row[: t if strict_lower else t + 1]) for t, row in enumerate(matrix)]


def backward_transfer(acc: Matrix, last: int) -> Optional[float]:
    if last < 1:
        return None
    return _mean([acc[last][u] - acc[u][u] for u in range(last)])


class Results:
    """The accuracy matrices of one run, filled one task at a time."""

    MATRICES = ("acc_taw", "acc_tag", "acc_task_id")

    def __init__(self, n_tasks: int):
        self.n_tasks = n_tasks
        self.acc_taw: Matrix = [[None] * n_tasks for _ in range(n_tasks)]
        self.acc_tag: Matrix = [[None] * n_tasks for _ in range(n_tasks)]
        self.acc_task_id: Matrix = [[None] * n_tasks for _ in range(n_tasks)]
        self.acc_tag_all: list[Optional[float]] = [None] * n_tasks
        self.acc_tag_variants: dict[str, Matrix] = {}  # name -> acc_tag matrix of another TAG rule
        self.last_task = -1

    def add(self, t: int, taw: Sequence[float], tag: Sequence[float], tag_all: float,
            task_id: Sequence[float] | None = None) -> None:
        for u in range(t + 1):
            self.acc_taw[t][u] = float(taw[u])
            self.acc_tag[t][u] = float(tag[u])
            self.acc_task_id[t][u] = None if task_id is None else float(task_id[u])
        self.acc_tag_all[t] = float(tag_all)
        self.last_task = t

    def add_variants(self, t: int, variants: dict[str, Sequence[float]]) -> None:
        for name, row in variants.items():
            matrix = self.acc_tag_variants.setdefault(name, [[None] * self.n_tasks for _ in range(self.n_tasks)])
            matrix[t][: len(row)] = [float(v) for v in row]

    def _trained(self, matrix: Matrix) -> Matrix:
        return matrix[: self.last_task + 1]

    def as_dict(self) -> dict:
        t = self.last_task
        out: dict = {"n_tasks": self.n_tasks, "tasks_done": t + 1}
        for kind in ("taw", "tag"):
            acc = getattr(self, f"acc_{kind}")
            forg = forgetting(self._trained(acc)) + [[None] * self.n_tasks for _ in range(self.n_tasks - t - 1)]
            forg = [row + [None] * (self.n_tasks - len(row)) for row in forg]
            avg_acc = row_means(self._trained(acc)) + [None] * (self.n_tasks - t - 1)
            avg_forg = row_means(forg[: t + 1], strict_lower=True) + [None] * (self.n_tasks - t - 1)
            out[f"acc_{kind}"] = acc
            out[f"forg_{kind}"] = forg
            out[f"avg_acc_{kind}"] = avg_acc
            out[f"avg_forg_{kind}"] = avg_forg
            out[f"final_avg_acc_{kind}"] = avg_acc[t] if t >= 0 else None
            out[f"final_avg_forg_{kind}"] = avg_forg[t] if t >= 0 else None
            out[f"avg_inc_acc_{kind}"] = _mean(avg_acc[: t + 1])
            out[f"bwt_{kind}"] = backward_transfer(acc, t)
        out["acc_tag_all"] = self.acc_tag_all
        out["acc_task_id"] = self.acc_task_id
        for name, acc in self.acc_tag_variants.items():
            avg = row_means(self._trained(acc)) + [None] * (self.n_tasks - t - 1)
            out[f"acc_tag_{name}"], out[f"avg_acc_tag_{name}"] = acc, avg
            out[f"final_avg_acc_tag_{name}"] = avg[t] if t >= 0 else None
        out["tag_variants"] = sorted(self.acc_tag_variants)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "Results":
        results = cls(data["n_tasks"])
        for name in cls.MATRICES:
            setattr(results, name, data[name])
        results.acc_tag_all = data["acc_tag_all"]
        results.acc_tag_variants = {name: data[f"acc_tag_{name}"] for name in data.get("tag_variants", [])}
        results.last_task = data["tasks_done"] - 1
        return results


@torch.no_grad()
def evaluate(method, tasks, batches, limit_batches: int | None = None, progress: bool = False,
             variants: dict[str, list[float]] | None = None, cache=None):
    """Accuracy of `method` on the test set of every task in `tasks` (the tasks seen so far).

    `batches(task)` yields `(x, y)` test batches on the method's device, already normalised.
    Returns per-task TAW, TAG and task-identification accuracies and the pooled TAG accuracy; the
    per-task TAG accuracy of each of the method's other task-agnostic rules
    (`task_agnostic_variants`) goes into `variants[name]` when a dict is given. With a
    `lifelong.paths.PathCache`, a method with one frozen path per task (`path_logits`) runs only the
    paths the cache lacks, with the same results (see `lifelong.paths`).
    """
    device = method.device
    offsets = torch.tensor([t.offset for t in tasks] + [tasks[-1].offset + tasks[-1].n_classes], device=device)
    n_seen = int(offsets[-1])
    def accuracy(n_classes: int) -> MulticlassAccuracy:  # torchmetrics needs at least 2 classes
        return MulticlassAccuracy(num_classes=max(n_classes, 2), average="micro").to(device)

    pooled = accuracy(n_seen)
    taw, tag, task_id = [], [], []
    iterator = tasks
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(tasks, desc="evaluate", leave=False)
    use_paths = cache is not None and hasattr(method, "path_logits")
    was_training = method.training
    method.eval()
    for task in iterator:
        acc_taw, acc_tag, acc_tid = accuracy(task.n_classes), accuracy(n_seen), accuracy(len(tasks))
        acc_variants: dict[str, MulticlassAccuracy] = {}
        for i, (x, y) in enumerate(batches(task)):
            if limit_batches is not None and i >= limit_batches:
                break
            if use_paths:
                taw_pred, others, _ = paths.predictions(method, task.id, i, x, len(tasks), offsets[:-1], cache)
                pred = others.pop("")
            elif hasattr(method, "test_scores"):  # a ContinualMethod: one forward pass where it can
                taw_logits, scores, other_scores = method.test_scores(x, task.id)
                taw_pred = taw_logits.argmax(1)
                pred, others = scores.argmax(1), {name: other.argmax(1) for name, other in other_scores.items()}
            else:
                taw_pred = method.task_aware_logits(x, task.id).argmax(1)
                if hasattr(method, "task_agnostic_variants"):
                    scores, other_scores = method.task_agnostic_variants(x)
                else:  # any object with the two prediction paths
                    scores, other_scores = method.task_agnostic_logits(x), {}
                pred, others = scores.argmax(1), {name: other.argmax(1) for name, other in other_scores.items()}
            acc_taw.update(taw_pred, y - task.offset)
            space = getattr(task, "label_space", None)  # domain-incremental: a block id names class id mod C
            truth = y if space is None else y % space
            for name, other_pred in others.items():
                other_pred = other_pred if space is None else other_pred % space
                acc_variants.setdefault(name, accuracy(n_seen)).update(other_pred, truth)
            named = pred if space is None else pred % space
            acc_tag.update(named, truth)
            pooled.update(named, truth)
            acc_tid.update(torch.bucketize(pred, offsets[1:], right=True), torch.full_like(y, task.id))
        taw.append(acc_taw.compute().item())
        tag.append(acc_tag.compute().item())
        task_id.append(acc_tid.compute().item())
        # Under DDP a rank whose shard had no batch of this task made no variant metric: every rank
        # computes (and so syncs) the same ones, in the same order.
        for name in distributed.union_of_names(acc_variants) if variants is not None else []:
            variants.setdefault(name, []).append(acc_variants.setdefault(name, accuracy(n_seen)).compute().item())
    method.train(was_training)
    return taw, tag, pooled.compute().item(), task_id
