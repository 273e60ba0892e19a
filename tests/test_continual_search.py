"""search=continual (De Lange et al.'s continual hyperparameter framework, FACIL gridsearch.py) through
the real runner: its choices against a hand-written loop over the same grid, results.json, resume."""
from __future__ import annotations

import copy
import json

import pytest

from lifelong.errors import ConfigError

LR_FIRST, LR, LR_SEARCHES = [0.1, 0.01], [0.05, 0.01, 0.005], 2
START, DECAY, MAX_DECAYS, DROP = 1e8, 1e-4, 2, 0.05
# EWC on 2 tasks of digits, 3 batches a fit: lamb=1e8 costs the new task accuracy, 1e4 does not.
GRID = ["method=ewc", "scenario.n_tasks=2", "scenario.nc_first_task=null", "scenario.val_fraction=0.2",
        "trainer.limit_train_batches=3", "eval.limit_batches=1", "torch_threads=1"]
SEARCH = [f"search.lr_first={LR_FIRST}", f"search.lr={LR}", f"search.lr_searches={LR_SEARCHES}",
          f"search.start={START}", f"search.decay={DECAY}", f"search.max_decays={MAX_DECAYS}",
          f"search.acc_drop_thr={DROP}"]


def test_continual_search_picks_what_a_hand_written_loop_over_the_grid_picks(run, tmp_path, monkeypatch):
    from lifelong import report
    from lifelong.run import train_sequence
    from tests.conftest import TINY, compose_config

    monkeypatch.setattr(report, "plot", lambda *args, **kwargs: None)  # plots are most of a tiny run's time
    summary, run_dir = run("search=continual", *GRID, *SEARCH)
    choices = summary["search"]
    assert json.loads((run_dir / "results.json").read_text())["search"] == choices

    plain = compose_config(tmp_path, *TINY, "search=schedule", *GRID)  # composed once: the runs differ in search.*
    count = iter(range(100))

    def plain_run(lrs, stabilities):
        """A run without search that trains task t with lrs[t] and EWC's lamb stabilities[t]."""
        cfg, out = copy.deepcopy(plain), tmp_path / f"plain{next(count)}"
        cfg.search.lr, cfg.search.stability, cfg.paths.output_dir = lrs, stabilities, str(out)
        return train_sequence(cfg, out)

    # Task 0: fine-tune with each first-task learning rate, keep the best on task 0's validation split.
    ft0 = {lr: plain_run([lr], [0.0])["val_acc_taw"][0][0] for lr in LR_FIRST}
    lr0 = LR_FIRST[0]
    for lr in LR_FIRST:
        if ft0[lr] > ft0[lr0]:
            lr0 = lr
    # Task 1: the two largest rates below task 0's, fine-tuning from the model trained on task 0.
    candidates = sorted((lr for lr in LR if lr < lr0), reverse=True)[:LR_SEARCHES]
    ft1 = {lr: plain_run([lr0, lr], [None, 0.0])["val_acc_taw"][1][1] for lr in candidates}
    lr1 = candidates[0]
    for lr in candidates:
        if ft1[lr] > ft1[lr1]:
            lr1 = lr
    # Then lamb from START, decayed while task 1's accuracy is more than DROP below fine-tuning's.
    lamb, tries, accepted = START, [], None
    while len(tries) < MAX_DECAYS:
        result = plain_run([lr0, lr1], [None, lamb])
        tries.append([lamb, result["val_acc_taw"][1][1]])
        if tries[-1][1] >= (1 - DROP) * ft1[lr1]:
            accepted = result
            break
        lamb *= DECAY

    assert [c["lr"] for c in choices] == [lr0, lr1]
    assert choices[0]["lr_tries"] == [[lr, ft0[lr]] for lr in LR_FIRST]
    assert choices[1]["lr_tries"] == [[lr, ft1[lr]] for lr in candidates]
    assert choices[1]["ft_acc"] == ft1[lr1]
    assert choices[1]["stability_key"] == "lamb" and choices[1]["stability"] == lamb
    assert choices[1]["stability_tries"] == tries
    assert len(tries) == 2 and accepted is not None  # this grid decays once, then accepts
    # The search run's own training is the plain run with its choices: same test accuracies.
    assert summary["acc_tag"] == accepted["acc_tag"] and summary["acc_taw"] == accepted["acc_taw"]


def test_continual_search_refuses_a_method_without_a_stability_weight(run):
    with pytest.raises(ConfigError, match=r"search=continual: the method \(Finetune\) declares no stability hyperparameter"):
        run("method=finetune", "search=continual", "scenario.val_fraction=0.2")
    with pytest.raises(ConfigError, match="scenario.val_fraction=0: search=continual"):
        run("method=lwf", "search=continual")


def test_continual_search_resumes_with_its_choices(run, stopped_and_resumed, monkeypatch):
    """Only task 0 is searched (search.tasks=1); tasks 1 and 2 keep its lr, also after a resume."""
    from lifelong import report

    monkeypatch.setattr(report, "plot", lambda *args, **kwargs: None)  # not what is checked here; slow
    overrides = ["method=lwf", "search=continual", "search.tasks=1", "search.lr_first=[0.05,0.02]",
                 "scenario.val_fraction=0.2", "eval.limit_batches=1", "torch_threads=1"]
    summary, _ = run(*overrides)
    assert summary["search"][0]["lr"] in (0.05, 0.02) and len(summary["search"]) == 1
    resumed = json.loads((stopped_and_resumed(*overrides) / "results.json").read_text())
    assert resumed["search"] == summary["search"]
    assert resumed["acc_tag"] == summary["acc_tag"] and resumed["acc_taw"] == summary["acc_taw"]
