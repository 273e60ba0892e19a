"""Domain-incremental scenarios: permuted/rotated tasks over one label space, their metrics, and the
methods that refuse them."""
from __future__ import annotations

import pytest
import torch

from lifelong.data.datasets import ImageSet
from lifelong.data.domains import build_domain_scenario
from lifelong.errors import ConfigError
from lifelong.metrics import evaluate

DIGITS_DIL = ["dataset=digits", "scenario=domain_incremental", "scenario.n_tasks=3", "epochs=1",
              "trainer.limit_train_batches=4", "logger=none", "trainer.enable_progress_bar=false"]


def tiny_set(n=6, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ImageSet(torch.randint(0, 256, (n, 1, 4, 4), dtype=torch.uint8, generator=g), torch.arange(n) % classes)


def test_permuted_tasks_share_the_classes_in_blocks_of_their_own():
    train, test = tiny_set(), tiny_set(seed=1)
    scenario = build_domain_scenario(train, test, "permuted", n_tasks=3, seed=0)
    assert scenario.domain_incremental and scenario.task_sizes == [3, 3, 3]
    t0, t1 = scenario[0], scenario[1]
    assert torch.equal(t0.train.x, train.x) and t1.label_space == 3 and t1.offset == 3
    assert t1.test.y.tolist() == (test.y + 3).tolist()
    # One permutation for every image of the task: the same pixels, moved the same way.
    assert not torch.equal(t1.train.x, train.x)
    assert torch.equal(t1.train.x.flatten(2).sort(dim=2).values, train.x.flatten(2).sort(dim=2).values)
    again = build_domain_scenario(train, test, "permuted", n_tasks=3, seed=0)
    assert torch.equal(again[2].test.x, scenario[2].test.x)  # the seed fixes the permutations


def test_rotated_tasks_turn_by_even_steps():
    train, test = tiny_set(), tiny_set(seed=1)
    scenario = build_domain_scenario(train, test, "rotated", n_tasks=3, max_angle=180.0)
    assert torch.equal(scenario[0].test.x, test.x)
    assert torch.equal(scenario[1].test.x, torch.rot90(test.x, 1, [2, 3]))  # 90 degrees, counter-clockwise
    assert torch.equal(scenario[2].test.x, torch.flip(test.x, [2, 3]))  # 180 degrees
    with pytest.raises(ConfigError, match="scenario.domain"):
        build_domain_scenario(train, test, "shuffled", n_tasks=2)


class FixedPredictions(torch.nn.Module):
    """Task-agnostic scores that name class 1 of task 0's block for every image; task-aware: class 1."""

    device = torch.device("cpu")

    def task_agnostic_logits(self, x):
        scores = torch.zeros(len(x), 6)
        scores[:, 1] = 1.0
        return scores

    def task_aware_logits(self, x, u):
        scores = torch.zeros(len(x), 3)
        scores[:, 1] = 1.0
        return scores


def test_tag_scores_the_class_a_block_names_whichever_block_wins():
    train, test = tiny_set(), tiny_set(seed=1)
    scenario = build_domain_scenario(train, test, "permuted", n_tasks=2)
    taw, tag, pooled, task_id = evaluate(FixedPredictions(), scenario.tasks, lambda t: [(t.test.x.float(), t.test.y)])
    # Labels 0, 1, 2, 0, 1, 2 (+3 in task 1): class 1 is right for 2 of 6 images in both tasks,
    # though task 1's images are predicted in task 0's block.
    assert tag == pytest.approx([1 / 3, 1 / 3]) and pooled == pytest.approx(1 / 3) and taw == pytest.approx([1 / 3] * 2)
    assert task_id == pytest.approx([1.0, 0.0])  # the prediction always falls in task 0's block


@pytest.mark.parametrize("method", ["lwf", "ewc"])
def test_methods_learn_permuted_digits_through_the_runner(run, method):
    summary, _ = run(*DIGITS_DIL, f"method={method}", tiny=False)
    assert summary["task_sizes"] == [10, 10, 10] and summary["tasks_done"] == 3
    # After the first task only its own block exists: TAG and TAW are the same prediction.
    assert summary["acc_tag"][0][0] == pytest.approx(summary["acc_taw"][0][0])
    assert summary["acc_taw"][2][2] > 0.3  # far above the 10% of chance on the newest domain


@pytest.mark.parametrize("method", ["abd", "lwf_mc"])
def test_methods_that_assume_new_classes_refuse_with_one_clear_line(run, method):
    with pytest.raises(ConfigError, match="scenario=domain_incremental") as error:
        run(*DIGITS_DIL, f"method={method}", tiny=False)
    assert "\n" not in str(error.value) and "scenario=class_incremental" in str(error.value)
