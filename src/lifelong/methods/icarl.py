"""iCaRL: Incremental Classifier and Representation Learning (Rebuffi et al., CVPR 2017; FACIL icarl.py).

    L = CE(f(x), y) + lamb * sum_{c < n_old} BCE(sigmoid(f_c(x)), sigmoid(f*_c(x)))     on task data + exemplars

(FACIL's form: cross-entropy over every seen class, plus the paper's sigmoid distillation on the old
classes against the frozen model of the previous task.) Exemplars are chosen by herding on the
normalised features (`memory=herding`, iCaRL Alg. 4; old classes keep their first m, Alg. 5).
Prediction is the nearest mean of exemplars (Alg. 1): after each task the class means of the
exemplars' normalised features are stored (`class_means`, a buffer), and the task-agnostic score of
class c is -||phi(x)/|phi(x)| - mu_c||. The CNN's own output is evaluated too (`cnn_acc_tag`,
`cnn_acc_taw` in results.json).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from lifelong.data.datamodule import batch_loader
from lifelong.data.scenario import Task
from lifelong.errors import ConfigError
from lifelong.methods.base import ContinualMethod


def nme_scores(features: torch.Tensor, class_means: torch.Tensor) -> torch.Tensor:
    """-||phi(x)/|phi(x)| - mu_c|| for every class c: `[B, n_classes]` (argmax = nearest mean)."""
    return -torch.cdist(F.normalize(features, dim=1), class_means)


class ICaRL(ContinualMethod):
    keeps_old_model = True

    # search=continual decays lamb from its strongest setting (FACIL gridsearch_config.py 'icarl': lamb [4])
    stability_key, stability_start = "lamb", 4.0

    def __init__(self, *args, lamb: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        if self.memory is None:
            raise ConfigError("method=icarl needs an exemplar memory: memory=herding (its default) or random")
        # FACIL icarl.py: "lamb: forgetting-intransigence trade-off", default 1 (the paper sums CE and
        # distillation without a weight).
        self.lamb = lamb
        self.register_buffer("class_means", torch.zeros(0, self.net.out_dim))
        self.seen_tasks: list[Task] = []  # for the CNN's own accuracies (begin_task is replayed on resume)
        self.cnn_acc_tag: list[list[float]] = []
        self.cnn_acc_taw: list[list[float]] = []

    def begin_task(self, task: Task) -> None:
        super().begin_task(task)
        self.seen_tasks.append(task)

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.net(x)
        terms = {"ce": F.cross_entropy(logits, y)}
        if self.old_net is not None:
            n_old = self.task.offset
            target = torch.sigmoid(self.old_logits(x)[:, :n_old])
            # FACIL: a BCE per old class, summed over classes (each a mean over the batch)
            terms["kd"] = self.lamb * F.binary_cross_entropy_with_logits(
                logits[:, :n_old], target, reduction="none").mean(0).sum()
        return terms

    def end_task(self, task: Task, data) -> None:
        super().end_task(task, data)  # old_net, then herding
        self.class_means = self.exemplar_means(task)
        rows = [self.cnn_accuracy(t) for t in self.seen_tasks]
        self.cnn_acc_tag.append([tag for tag, _ in rows])
        self.cnn_acc_taw.append([taw for _, taw in rows])

    @torch.no_grad()
    def features_of(self, x_uint8: torch.Tensor, task: Task) -> torch.Tensor:
        return self.net.features(task.augment(x_uint8.to(self.class_means.device)))

    @torch.no_grad()
    def exemplar_means(self, task: Task) -> torch.Tensor:
        """mu_c = mean of the exemplars' normalised features, normalised (iCaRL Alg. 1; FACIL
        compute_mean_of_exemplars, without its horizontal-flip copies)."""
        exemplars = self.memory.as_imageset()
        with self.eval_mode():
            feats = torch.cat([F.normalize(self.features_of(x, task), dim=1)
                               for x, _ in batch_loader(exemplars, 256, shuffle=False)])
        labels = exemplars.y.to(feats.device)
        # a class without exemplars (a budget below one per class) gets a zero mean
        means = torch.stack([F.normalize(feats[labels == c].sum(0), dim=0)
                             for c in range(sum(self.net.task_sizes))])
        return means

    @torch.no_grad()
    def cnn_accuracy(self, task: Task) -> tuple[float, float]:
        """Task-agnostic and task-aware accuracy of the network's own logits on `task`'s test split."""
        correct_tag = correct_taw = n = 0
        with self.eval_mode():
            for x, y in batch_loader(task.test, 512, shuffle=False):
                logits = self.net(task.augment(x.to(self.class_means.device)))
                y = y.to(logits.device)
                correct_tag += int((logits.argmax(1) == y).sum())
                own = logits[:, task.offset : task.offset + task.n_classes].argmax(1) + task.offset
                correct_taw += int((own == y).sum())
                n += len(y)
        return correct_tag / max(n, 1), correct_taw / max(n, 1)

    def task_agnostic_logits(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.class_means) < sum(self.net.task_sizes):  # during training: no means of this task yet
            return self.net(x)
        return nme_scores(self.net.features(x), self.class_means)

    def task_aware_logits(self, x: torch.Tensor, task_id: int) -> torch.Tensor:
        start, size = self.net.offsets[task_id], self.net.task_sizes[task_id]
        return self.task_agnostic_logits(x)[:, start : start + size]

    def on_load_state_dict_structure(self, state_dict) -> None:
        super().on_load_state_dict_structure(state_dict)
        self.class_means = torch.zeros_like(state_dict["class_means"])

    def get_extra_state(self):
        return {"cnn_acc_tag": self.cnn_acc_tag, "cnn_acc_taw": self.cnn_acc_taw}

    def set_extra_state(self, state) -> None:
        self.cnn_acc_tag, self.cnn_acc_taw = state["cnn_acc_tag"], state["cnn_acc_taw"]

    def extra_results(self) -> dict:
        final_tag = self.cnn_acc_tag[-1] if self.cnn_acc_tag else []
        return {**super().extra_results(), "cnn_acc_tag": self.cnn_acc_tag, "cnn_acc_taw": self.cnn_acc_taw,
                "cnn_final_avg_acc_tag": sum(final_tag) / len(final_tag) if final_tag else None}
