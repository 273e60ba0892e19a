"""Metrics against matrices worked out by hand (DESIGN.md, "Metrics")."""
import pytest
import torch

from lifelong.metrics import Results, backward_transfer, evaluate, forgetting, row_means

# Task 0's accuracy goes down (0.9 -> 0.7) and back up (0.8): forgetting at t=2 is measured from
# the best earlier value (0.9), not the last one.
TAW = [[0.9, 0.8, 0.95], [0.7, 0.8], [0.8, 0.6, 0.95]]
# Task 0 improves after it was learned (0.5 -> 0.6): forgetting is negative.
TAG = [[0.5], [0.6, 0.7], [0.4, 0.5, 0.9]]


def filled() -> Results:
    r = Results(3)
    r.add(0, TAW[0][:1], TAG[0], 0.5)
    r.add(1, TAW[1], TAG[1], 0.65)
    r.add(2, TAW[2], TAG[2], 0.6)
    return r


def test_forgetting_uses_the_best_earlier_accuracy():
    acc = [[0.9, None, None], [0.7, 0.8, None], [0.8, 0.6, 0.95]]
    f = forgetting(acc)
    assert f[0] == [None, None, None]
    assert f[1][0] == pytest.approx(0.2) and f[1][1] is None
    assert f[2][0] == pytest.approx(0.1)  # max(0.9, 0.7) - 0.8
    assert f[2][1] == pytest.approx(0.2)  # 0.8 - 0.6
    assert f[2][2] is None


def test_forgetting_is_negative_when_accuracy_goes_up():
    f = forgetting([[0.5, None], [0.6, 0.7]])
    assert f[1][0] == pytest.approx(-0.1)


def test_summary_against_hand_computed_values():
    s = filled().as_dict()
    assert s["acc_taw"][1] == [0.7, 0.8, None]
    assert s["acc_taw"][0][1] is None  # u > t is not defined
    assert s["avg_acc_taw"] == pytest.approx([0.9, 0.75, (0.8 + 0.6 + 0.95) / 3])
    assert s["avg_forg_taw"][0] is None
    assert s["avg_forg_taw"][1:] == pytest.approx([0.2, 0.15])
    assert s["avg_acc_tag"] == pytest.approx([0.5, 0.65, 0.6])
    assert s["forg_tag"][2][0] == pytest.approx(0.2)  # max(0.5, 0.6) - 0.4
    assert s["avg_forg_tag"][1] == pytest.approx(-0.1)
    assert s["avg_inc_acc_taw"] == pytest.approx((0.9 + 0.75 + 2.35 / 3) / 3)
    assert s["avg_inc_acc_tag"] == pytest.approx((0.5 + 0.65 + 0.6) / 3)
    assert s["bwt_taw"] == pytest.approx(((0.8 - 0.9) + (0.6 - 0.8)) / 2)
    assert s["bwt_tag"] == pytest.approx(((0.4 - 0.5) + (0.5 - 0.7)) / 2)
    assert s["final_avg_acc_tag"] == pytest.approx(0.6)
    assert s["final_avg_forg_taw"] == pytest.approx(0.15)
    assert s["acc_tag_all"] == [0.5, 0.65, 0.6]


def test_partial_run_summarises_the_last_finished_task():
    r = Results(3)
    r.add(0, [0.9], [0.9], 0.9)
    r.add(1, [0.7, 0.8], [0.6, 0.7], 0.65)
    s = r.as_dict()
    assert s["tasks_done"] == 2
    assert s["final_avg_acc_taw"] == pytest.approx(0.75)
    assert s["bwt_taw"] == pytest.approx(-0.2)
    assert s["avg_acc_taw"][2] is None and s["acc_taw"][2] == [None, None, None]
    assert Results.from_dict(s).as_dict() == s


def test_helpers_on_edge_cases():
    assert backward_transfer([[0.5]], 0) is None
    assert row_means([[0.2, None], [0.4, 0.6]]) == pytest.approx([0.2, 0.5])


class ThreeTaskOracle(torch.nn.Module):
    """Scores that are right for task 0, and for tasks 1-2 only within the task (TAG wrong)."""

    device = torch.device("cpu")

    def task_aware_logits(self, x, task_id):
        return torch.nn.functional.one_hot(x[:, 0].long() - 2 * task_id, 2).float()

    def task_agnostic_logits(self, x):
        label = x[:, 0].long()
        wrong = torch.where(label >= 2, label - 2, label)  # always predicts a class of task 0
        return torch.nn.functional.one_hot(wrong, 6).float()


def test_evaluate_counts_taw_tag_and_task_identity():
    from types import SimpleNamespace

    tasks = [SimpleNamespace(id=i, offset=2 * i, n_classes=2) for i in range(3)]

    def batches(task):
        y = torch.tensor([task.offset, task.offset + 1] * 5)
        yield y.float().unsqueeze(1), y

    taw, tag, pooled, task_id = evaluate(ThreeTaskOracle(), tasks, batches)
    assert taw == [1.0, 1.0, 1.0]
    assert tag == [1.0, 0.0, 0.0]
    assert pooled == pytest.approx(1 / 3)
    assert task_id == [1.0, 0.0, 0.0]


def test_one_forward_pass_per_test_batch_gives_the_two_path_results():
    """A method with the base class's prediction paths is evaluated with one pass of its network per
    test batch (`ContinualMethod.test_scores`), with the results of calling both paths."""
    from functools import partial

    from lifelong.data.datasets import ImageSet
    from lifelong.data.scenario import Task
    from lifelong.methods.finetune import Finetune
    from lifelong.models.backbones import mlp

    torch.manual_seed(0)
    empty = ImageSet(torch.zeros(0, 1, 4, 4, dtype=torch.uint8), torch.zeros(0, dtype=torch.long))
    tasks = [Task(i, [2 * i, 2 * i + 1], 2 * i, empty, empty, empty) for i in range(3)]
    method = Finetune(mlp(1, 4, hidden=(8,)), partial(torch.optim.SGD, lr=0.1))
    for task in tasks:
        method.begin_task(task)
    data = {t.id: (torch.randn(20, 1, 4, 4), torch.randint(0, 2, (20,)) + t.offset) for t in tasks}

    class BothPaths(torch.nn.Module):  # the same method, seen through its two prediction methods only
        device = torch.device("cpu")

        def task_aware_logits(self, x, task_id):
            return method.task_aware_logits(x, task_id)

        def task_agnostic_logits(self, x):
            return method.task_agnostic_logits(x)

    passes = []
    method.net.backbone.register_forward_hook(lambda *_: passes.append(1))
    one_pass = evaluate(method, tasks, lambda t: iter([data[t.id]]))
    assert len(passes) == len(tasks)
    assert one_pass == evaluate(BothPaths(), tasks, lambda t: iter([data[t.id]]))
    assert len(passes) == 3 * len(tasks)
