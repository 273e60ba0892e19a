"""W&B through Lightning's WandbLogger, offline when there are no credentials."""


def test_offline_run_records_the_metrics(run, monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: offline, and never a login prompt
    summary, out = run("method=lwf", "backbone=mlp", "logger=wandb", "trainer.log_every_n_steps=1")
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "W&B did not run offline under the run directory"
    blob = b"".join(p.read_bytes() for p in runs[0].rglob("*.wandb"))
    for name in (b"results/avg_acc_tag", b"results/acc_taw/task_0", b"results/acc_tag/task_2", b"loss/ce",
                 b"loss/kd", b"matrices/acc_tag", b"plots/acc_tag_heatmap"):
        assert name in blob, name
    assert (out / "logs" / "metrics.csv").read_text().count("loss/ce") == 1  # the CSV header
    assert summary["tasks_done"] == 3


def test_mode_follows_credentials(monkeypatch, tmp_path):
    from lifelong.loggers import wandb_mode

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode("auto") == "disabled"
