"""Resume after an interruption: the resumed run ends with exactly the results of an uninterrupted one."""
from __future__ import annotations

import json

import pytest
import torch

from lifelong import resume as checkpoints
from lifelong.errors import ConfigError
from lifelong.methods.base import ContinualMethod


class Interrupted(Exception):
    """Stands for Ctrl-C, SIGTERM or a Slurm time limit hitting the run."""


def matrices(run_dir):
    results = json.loads((run_dir / "results.json").read_text())
    return {k: results[k] for k in ("acc_taw", "acc_tag", "acc_tag_all", "acc_task_id", "tasks_done")}


LWF = ("method=lwf", "epochs=2")  # LwF: a frozen old model that exists only after a task ended


@pytest.fixture(scope="module")
def lwf_uninterrupted(tmp_path_factory):
    from tests.conftest import TINY, run_config

    run_dir = tmp_path_factory.mktemp("lwf") / "full"
    run_config(run_dir, *TINY, *LWF)
    return matrices(run_dir)


def test_resume_after_a_finished_task_gives_the_uninterrupted_results(run, monkeypatch, tmp_path,
                                                                     lwf_uninterrupted):
    overrides = LWF

    save = checkpoints.save_task_state

    def stop_after_task_1(run_dir, method, summary, *args, **kwargs):
        save(run_dir, method, summary, *args, **kwargs)
        if summary["tasks_done"] == 2:
            raise Interrupted

    monkeypatch.setattr(checkpoints, "save_task_state", stop_after_task_1)
    with pytest.raises(Interrupted):
        run(*overrides)
    monkeypatch.undo()
    stopped_dir = tmp_path / "run0"
    # last.pt is written first: results.json never reports a task that a resume would not keep.
    assert matrices(stopped_dir)["tasks_done"] == 1
    assert torch.load(stopped_dir / checkpoints.LAST, weights_only=False)["tasks_done"] == 2

    run(*overrides, f"resume={stopped_dir}")
    assert matrices(stopped_dir) == lwf_uninterrupted
    assert lwf_uninterrupted["tasks_done"] == 3


def test_resume_mid_task_continues_from_the_last_epoch(run, monkeypatch):
    # EWC: a buffer state (Fisher) from the finished task; a cosine schedule and validation inside
    # the task, so the optimizer, scheduler, loop and RNG states must all come back.
    overrides = ("method=ewc", "epochs=2", "scheduler=cosine", "scenario.val_fraction=0.1")
    _, full_dir = run(*overrides)

    def stop_in_task_1_epoch_1(self):
        if self.task.id == 1 and self.current_epoch == 1:
            raise Interrupted

    monkeypatch.setattr(ContinualMethod, "on_train_epoch_end", stop_in_task_1_epoch_1, raising=False)
    with pytest.raises(Interrupted):
        run(*overrides)
    monkeypatch.undo()
    stopped_dir = full_dir.parent / "run1"
    assert torch.load(stopped_dir / checkpoints.LAST, weights_only=False)["tasks_done"] == 1
    epoch_ckpt = checkpoints.phase_checkpoint(stopped_dir, 1, 0, "train")
    assert torch.load(epoch_ckpt, weights_only=False)["epoch"] == 0  # epoch 1 never finished

    run(*overrides, f"resume={stopped_dir}")
    assert matrices(stopped_dir) == matrices(full_dir)
    assert not (stopped_dir / "checkpoints" / "task1").exists()  # covered by last.pt once the task ended


def test_requeued_job_resumes_from_its_own_run_dir(monkeypatch, tmp_path, lwf_uninterrupted):
    """A requeued Slurm job runs the same command into the same run dir: it resumes by itself."""
    from tests.conftest import TINY, run_config

    run_dir = tmp_path / "job"
    save = checkpoints.save_task_state

    def stop_after_task_0(run_dir, method, summary, *args, **kwargs):
        save(run_dir, method, summary, *args, **kwargs)
        raise Interrupted

    monkeypatch.setattr(checkpoints, "save_task_state", stop_after_task_0)
    with pytest.raises(Interrupted):
        run_config(run_dir, *TINY, *LWF)
    monkeypatch.undo()
    summary = run_config(run_dir, *TINY, *LWF)
    assert summary["tasks_done"] == 3
    assert matrices(run_dir) == lwf_uninterrupted


def test_resume_refuses_a_different_config(run, monkeypatch, tmp_path):
    save = checkpoints.save_task_state

    def stop_after_task_0(run_dir, method, summary, *args, **kwargs):
        save(run_dir, method, summary, *args, **kwargs)
        raise Interrupted

    monkeypatch.setattr(checkpoints, "save_task_state", stop_after_task_0)
    with pytest.raises(Interrupted):
        run("method=lwf")
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="method differs"):
        run("method=ewc", f"resume={tmp_path / 'run0'}")


def test_resumed_run_continues_the_same_wandb_run(run, monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # offline, never a prompt
    save = checkpoints.save_task_state

    def stop_after_task_0(run_dir, method, summary, *args, **kwargs):
        save(run_dir, method, summary, *args, **kwargs)
        raise Interrupted

    monkeypatch.setattr(checkpoints, "save_task_state", stop_after_task_0)
    with pytest.raises(Interrupted):
        run("method=finetune", "logger=wandb")
    import wandb

    wandb.finish()  # the interrupted process would have died with its W&B run
    monkeypatch.setattr(checkpoints, "save_task_state", save)
    stopped_dir = tmp_path / "run0"
    run_id = (stopped_dir / checkpoints.WANDB_ID).read_text().strip()
    assert torch.load(stopped_dir / checkpoints.LAST, weights_only=False)["wandb_id"] == run_id
    run("method=finetune", "logger=wandb", f"resume={stopped_dir}")
    attempts = sorted((stopped_dir / "wandb").glob("offline-run-*"))
    assert len(attempts) == 2 and all(p.name.endswith(f"-{run_id}") for p in attempts)


def test_resumed_run_keeps_the_earlier_training_curves(run, monkeypatch, tmp_path):
    import csv

    save = checkpoints.save_task_state

    def stop_after_task_0(run_dir, method, summary, *args, **kwargs):
        save(run_dir, method, summary, *args, **kwargs)
        raise Interrupted

    monkeypatch.setattr(checkpoints, "save_task_state", stop_after_task_0)
    with pytest.raises(Interrupted):
        run("method=finetune", "logger=csv", "trainer.log_every_n_steps=1")
    monkeypatch.undo()
    curves = tmp_path / "run0" / "logs" / "metrics.csv"
    before = list(csv.DictReader(curves.open()))
    assert before
    run("method=finetune", "logger=csv", "trainer.log_every_n_steps=1", f"resume={tmp_path / 'run0'}")
    after = list(csv.DictReader(curves.open()))
    assert [r["step"] for r in after[: len(before)]] == [r["step"] for r in before]  # earlier rows kept
    assert len(after) > len(before) and int(after[-1]["step"]) > int(before[-1]["step"])


def test_resume_from_a_non_default_checkpoint_interval_is_bit_identical(run, monkeypatch):
    # checkpoint.every_n_epochs=2: only the second and fourth epochs of a phase may leave a resume point.
    overrides = ("method=lwf", "epochs=4", "trainer.limit_train_batches=2", "checkpoint.every_n_epochs=2",
                 "checkpoint.max_fraction=null", "torch_threads=1")
    _, full_dir = run(*overrides)

    def stop_in_task_1_epoch_3(self):
        if self.task.id == 1 and self.current_epoch == 3:
            raise Interrupted

    monkeypatch.setattr(ContinualMethod, "on_train_epoch_end", stop_in_task_1_epoch_3, raising=False)
    with pytest.raises(Interrupted):
        run(*overrides)
    monkeypatch.undo()
    stopped_dir = full_dir.parent / "run1"
    epoch_ckpt = checkpoints.phase_checkpoint(stopped_dir, 1, 0, "train")
    assert torch.load(epoch_ckpt, weights_only=False)["epoch"] == 1  # epoch 2 (index) was no candidate

    run(*overrides, f"resume={stopped_dir}")
    assert matrices(stopped_dir) == matrices(full_dir)
    full = torch.load(full_dir / checkpoints.LAST, weights_only=False)["state_dict"]
    resumed = torch.load(stopped_dir / checkpoints.LAST, weights_only=False)["state_dict"]
    assert full.keys() == resumed.keys() and all(torch.equal(full[k], resumed[k]) for k in full)


def test_checkpoint_policy_keeps_writing_under_its_share_of_the_time():
    policy = checkpoints.CheckpointPolicy(every_n_epochs=1, every_s=None, max_fraction=0.02)
    assert policy.due(0, since_last=0.1, last_cost=None)  # a phase's first write: cost unknown
    assert not policy.due(5, since_last=10.0, last_cost=0.5)  # 0.5 s of 10 s is 5 %
    assert policy.due(5, since_last=30.0, last_cost=0.5)
    timed = checkpoints.CheckpointPolicy(every_n_epochs=3, every_s=60, max_fraction=None)
    assert not timed.due(1, since_last=100.0, last_cost=None)  # epoch 2 is no candidate of every 3
    assert not timed.due(2, since_last=59.0, last_cost=None) and timed.due(2, since_last=61.0, last_cost=None)
