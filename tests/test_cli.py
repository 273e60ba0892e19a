"""The real entry point, as a user runs it."""
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def train(*args, cwd=ROOT, timeout=300):
    # This checkout's sources first, whatever the working directory (PYTHONPATH may be relative).
    paths = [str(ROOT / "src")] + [str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, HYDRA_FULL_ERROR="0", WANDB_MODE="disabled", PYTHONPATH=os.pathsep.join(paths))
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_quickstart_smoke_leaves_a_run_directory(tmp_path):
    result = train("experiment=quickstart", "debug=smoke", "logger=csv", "trainer.enable_progress_bar=false",
                   f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    results = json.loads((run / "results.json").read_text())
    assert results["tasks_done"] == 5 and len(results["acc_taw"]) == 5
    assert (run / ".hydra" / "config.yaml").is_file() and (run / "metrics.csv").is_file()
    assert (run / "plots" / "acc_tag_curves.png").is_file() and (run / "train.log").is_file()
    assert "after task 5 of 5:" in result.stdout + result.stderr + (run / "train.log").read_text()


def test_lightning_comes_without_torchmetrics_optional_backends():
    """`lean_imports.lightning()` (what a run imports Lightning with) leaves scipy, torchvision and
    matplotlib unimported, and torchmetrics' accuracy, which evaluation uses, still works."""
    code = ("import sys, torch; from lifelong import lean_imports; lean_imports.lightning(); "
            "from torchmetrics.classification import MulticlassAccuracy; "
            "m = MulticlassAccuracy(num_classes=3, average='micro'); m.update(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 1])); "
            "print(round(m.compute().item(), 4), sorted(k for k in ('scipy', 'torchvision', 'matplotlib') if k in sys.modules))")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["0.6667", "[]"]


def _fake_run(tmp_path, content: bytes | None) -> str:
    """A run dir from an earlier run whose checkpoints/last.pt holds `content` (None: no checkpoint)."""
    run = tmp_path / "earlier"
    (run / ".hydra").mkdir(parents=True)
    (run / "train.log").write_text("")
    if content is not None:
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "last.pt").write_bytes(content)
    return str(run)


def _truncated_checkpoint(tmp_path) -> bytes:
    import torch

    torch.save({"tasks_done": 1, "state_dict": {"w": torch.zeros(1000)}}, tmp_path / "whole.pt")
    data = (tmp_path / "whole.pt").read_bytes()
    return data[: len(data) // 2]


def _resume_garbage_checkpoint(tmp_path):
    """an earlier run whose checkpoints/last.pt holds garbage"""
    return "resume=" + _fake_run(tmp_path, b"garbage")


def _resume_truncated_checkpoint(tmp_path):
    """an earlier run whose checkpoints/last.pt was cut in half"""
    return "resume=" + _fake_run(tmp_path, _truncated_checkpoint(tmp_path))


def _run_dir_under_a_file(tmp_path):
    """a run directory below a plain file"""
    (tmp_path / "a_file").write_text("not a directory")
    return f"hydra.run.dir={tmp_path / 'a_file'}/run"


def _run_dir_read_only(tmp_path):
    """a run directory in a read-only folder"""
    folder = tmp_path / "read_only"
    folder.mkdir(exist_ok=True)
    folder.chmod(0o555)
    if os.geteuid() == 0:  # root writes through file modes: make the folder immutable instead
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("root, and chattr +i is not available here: no read-only folder to try")
    return f"hydra.run.dir={folder}/run"


def _resume_empty_dir(tmp_path):
    """an empty directory"""
    (tmp_path / "empty").mkdir(exist_ok=True)
    return f"resume={tmp_path / 'empty'}"


def _resume_a_file(tmp_path):
    """a plain file"""
    (tmp_path / "a_file").write_text("not a directory")
    return f"resume={tmp_path / 'a_file'}"


# (arguments, the message after "error: "); a callable argument gets tmp_path. Each case ends before
# training with one line, exit status 2, no traceback, and no new run directory.
BAD_INPUT = [
    (["hardware=gpu"], "trainer.accelerator=gpu but this machine has no usable GPU; run on CPU with hardware=cpu"),
    (["hardware=ddp", "trainer.devices=3"],
     "trainer.accelerator=gpu but this machine has no usable GPU; run on CPU processes with trainer.accelerator=cpu"),
    (["optimizer.lr=-1"], "optimizer.lr=-1 must be a positive number, e.g. 0.01"),
    (["optimizer.momentum=1.5"], "optimizer.momentum=1.5 must be in [0, 1), e.g. 0.9"),
    (["optimizer=adam", "+optimizer.betas=[0.9,1.5]"], "optimizer.betas=[0.9, 1.5] must be two numbers in [0, 1)"),
    (["optimizer.weight_decay=-0.1"], "optimizer.weight_decay=-0.1 must be a number >= 0"),
    (["scheduler=multistep", "scheduler.gamma=0"], "scheduler.gamma=0 must be in (0, 1]"),
    (["scheduler=multistep", "scheduler.milestones=[20,10]"], "scheduler.milestones=[20, 10] must be increasing"),
    (["scheduler=cosine", "scheduler.T_max=0"], "scheduler.T_max=0 must be a positive number of epochs"),
    (["method=mind", "method.teacher_optimizer.lr=0"], "method.teacher_optimizer.lr=0 must be a positive number"),
    (["seed=abc"], "seed='abc' must be an integer"),
    (["epochs=abc"], "epochs='abc' must be an integer"),
    (["epochs=0"], "epochs=0 must be at least 1"),
    (["batch_size=0"], "batch_size=0 must be at least 1"),
    (["eval.limit_batches=0"], "eval.limit_batches=0 must be at least 1"),
    (["trainer.precision=17"], "trainer.precision='17' is unknown; valid choices"),
    (["trainer.accelerator=tpu"], "trainer.accelerator='tpu' is unknown; valid choices"),
    (["trainer.limit_train_batches=-2"], "trainer.limit_train_batches=-2 must be a positive number of batches"),
    (["logger=wandb", "logger.wandb.mode=bogus"],
     "logger.wandb.mode='bogus' is unknown; valid choices: ['auto', 'online', 'offline', 'disabled']"),
    ([_resume_garbage_checkpoint], "is unreadable (truncated or corrupt: not a complete zip"),
    ([_resume_truncated_checkpoint], "rm -r"),
    ([_run_dir_under_a_file], "cannot create the run directory there"),
    ([_run_dir_read_only], "cannot create the run directory there"),
    (["resume=/nonexistent/run"], "resume=/nonexistent/run does not exist; give the run directory of an earlier run"),
    ([_resume_empty_dir], "is not a run directory (no .hydra/, results.json or checkpoints/)"),
    ([_resume_a_file], "is a file, not a run directory"),
    (["scenario.class_order=[0,0,1,2,3,4,5,6,7,8]"],
     "scenario.class_order must list every class id 0..9 exactly once (10 ids given; id 0 appears twice; missing [9])"),
    (["scenario.class_order=[0,1,2,3,4,5,6,7,8,12]"], "id 12 out of range 0..9; missing [9]"),
    (["epoch=3"], "epoch=3: there is no key `epoch` (the top level has no `epoch`); did you mean `epochs`?"),
    (["+epoch=3"], "+epoch=3: `epoch` is not a key of this project's config, and the run would ignore it; "
                   "did you mean `epochs`?"),
    (["optimizer.lrr=0.1"], "there is no key `optimizer.lrr` (optimizer has no `lrr`); did you mean `lr`?"),
    (["trainer.max_epoch=3"], "other Lightning Trainer arguments go in as +trainer.<name>=<value>"),
    (["method=lwff"], "method=lwff is unknown; valid choices: ['abd', 'bic'"),
    (["scenario.n_tasks=3"], "scenario.n_tasks=3 does not divide the 10 classes; valid choices: [1, 2, 5, 10]"),
    (["scenario.nc_first_task=10"], "scenario.nc_first_task=10 is too large"),
    (["scenario.class_order=icarl1993"], "scenario.class_order=icarl1993 is the CIFAR-100 order"),
    (["method.ce_scope=bogus"], "method.ce_scope='bogus' is unknown; valid choices: ['current', 'seen']"),
    (["dataset=cifar100", "dataset.download=false", "paths.data_root=/nonexistent"],
     "CIFAR100 is not in /nonexistent"),
    # beyond the list
    (["memory=herding", "memory.size=-5"], "memory.size=-5 must be a positive integer (or set memory.per_class)"),
    (["scenario.n_tasks=20"], "scenario.n_tasks=20 does not divide the 10 classes"),
    (["scenario.val_fraction=1.5"], "scenario.val_fraction=1.5 must be in [0, 1)"),
    (["num_workers=-1"], "num_workers=-1 must be at least 0"),
    (["torch_threads=0"], "torch_threads=0 must be a positive integer, auto (one per core) or null"),
    (["batch_size=1.5"], "batch_size=1.5 must be an integer"),
    (["scenario.class_order=bogus"], "scenario.class_order='bogus' is unknown; valid choices: ['random', 'natural'"),
    (["memory=reservoir", "memory.per_class=3"], "memory.per_class=3: needs a positive integer and a class-balanced"),
    (["hardware=tpu"], "hardware=tpu is unknown; valid choices: ['cpu', 'ddp', 'gpu'] (did you mean `gpu`?)"),
    (["logger=wandb", "logger.wandb.project=team/runs"],
     "logger.wandb.project='team/runs' contains '/', which W&B refuses in names"),
    # Trainer arguments the runner passes itself used to reach Lightning twice (a TypeError traceback after
    # the setup, and a run dir left behind), as did names Lightning's Trainer does not take.
    (["+trainer.max_epochs=3"], "trainer.max_epochs=3: lifelong sets this Lightning Trainer argument itself for "
                                "every fit; set epochs=<n>"),
    (["trainer.max_epochs=3"], "trainer.max_epochs=3: lifelong sets this Lightning Trainer argument itself"),
    (["+trainer.logger=false"], "trainer.logger=False: lifelong sets this Lightning Trainer argument itself for "
                                "every fit; choose logger=csv, logger=wandb or logger=none"),
    (["+trainer.max_epoch=3"], "trainer.max_epoch=3: Lightning's Trainer has no argument `max_epoch`; "
                               "did you mean `max_epochs`?"),
    (["+trainer.bogus=1"], "trainer.bogus=1: Lightning's Trainer has no argument `bogus`; its arguments: "),
    (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1 must be a number >= 0 (0 or null: no clipping)"),
    (["scenario.nc_first_task=-1"], "scenario.nc_first_task=-1 must be at least 1 (or null: tasks of equal size)"),
    (["scenario.n_tasks=1", "scenario.nc_first_task=5"],
     "scenario.nc_first_task=5: with scenario.n_tasks=1 the one task holds all 10 classes"),
]


def case_text(args, tmp_path: Path) -> str:
    """The command line of a BAD_INPUT case, with `tmp_path` written as <tmp> (ids, docs/errors.md)."""
    return " ".join(a if isinstance(a, str) else a(tmp_path) for a in args).replace(str(tmp_path), "<tmp>")


CASE_IDS = [" ".join(a if isinstance(a, str) else f"<{a.__name__.strip('_')}>"
                     for a in (c.values if hasattr(c, "values") else c)[0]) for c in BAD_INPUT]


@pytest.mark.parametrize("args,expected", BAD_INPUT, ids=CASE_IDS)
def test_bad_input_is_one_clear_message_before_training(tmp_path, args, expected):
    try:
        args = [a(tmp_path) if callable(a) else a for a in args]
        _bad_input(tmp_path, args, expected)
    finally:
        unfreeze(tmp_path)


def unfreeze(tmp_path: Path) -> None:
    """Undo `_run_dir_read_only`'s chattr +i, so that the folder can be removed."""
    if os.geteuid() == 0 and (tmp_path / "read_only").exists():
        subprocess.run(["chattr", "-i", str(tmp_path / "read_only")], capture_output=True)


def _bad_input(tmp_path, args, expected):
    run_dir = tmp_path / "runs" / "new"
    run_dir_given = any(a.startswith("hydra.run.dir=") for a in args)
    result = train(*args, "logger=none" if not any(a.startswith("logger=") for a in args) else "logger.csv=false",
                   *([] if run_dir_given else [f"hydra.run.dir={run_dir}"]), cwd=tmp_path)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert lines == [f"error: {lines[0][len('error: '):]}"] and expected in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout
    assert not run_dir.exists() and not (tmp_path / "runs").exists()  # no stray run directory
    resume = next((a.split("=", 1)[1] for a in args if a.startswith("resume=")), None)
    if resume and (Path(resume) / "train.log").is_file():  # an existing run: the error is in its log too
        assert expected in (Path(resume) / "train.log").read_text()


REGENERATE = "python scripts/error_table.py"


def test_docs_errors_lists_every_case_with_its_message():
    """docs/errors.md (written by scripts/error_table.py) is the table above, in order, with its messages."""
    rows = [line for line in (ROOT / "docs" / "errors.md").read_text().splitlines() if line.startswith("| `python")]
    assert len(rows) == len(BAD_INPUT), f"docs/errors.md is out of date: run {REGENERATE}"
    for row, case in zip(rows, BAD_INPUT):
        args, expected = case.values if hasattr(case, "values") else case
        command, message = row[2:-2].replace("\\|", "|").split(" | ", 1)
        plain = " ".join(a for a in args if isinstance(a, str))
        assert plain in command and expected in message, f"docs/errors.md is out of date at {args}: run {REGENERATE}"


def test_a_full_disk_is_one_line_and_leaves_no_partial_files(tmp_path):
    import resource

    def small_disk():  # files may grow to 100 kB: the first checkpoint does not fit
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    paths = [str(ROOT / "src")] + [str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "scenario.n_tasks=2", "epochs=1", "logger=none",
                             "trainer.limit_train_batches=2", f"hydra.run.dir={tmp_path}/run"], preexec_fn=small_disk,
                            env=dict(os.environ, PYTHONPATH=os.pathsep.join(paths)), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip() == f"error: no space left writing into {tmp_path}/run (File too large); free space " \
                                    f"and continue with resume={tmp_path}/run"
    assert not [p for p in (tmp_path / "run").rglob("*") if p.name.endswith(".tmp") or ".tmp" in p.suffixes
                or p.name.startswith(".") and p.name != ".hydra" and p.parent.name != ".hydra"]


def test_bad_input_in_a_sweep_leaves_no_sweep_directory(tmp_path):
    """The first run of a -m sweep fails: one line, exit 2, and neither its run dir nor the sweep's folder
    (Hydra's multirun.yaml alone) is left in outputs/."""
    result = train("-m", "seed=abc,1", "logger=none", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip() == "error: seed='abc' must be an integer, e.g. seed=1"
    assert not (tmp_path / "outputs").exists(), sorted(map(str, (tmp_path / "outputs").rglob("*")))


@pytest.mark.slow
def test_a_local_sweep_shows_progress_and_names_its_failed_run_in_one_line(tmp_path):
    """hydra/launcher=local: a line per change of the sweep's state, the job logs in .submitit/ (no stray
    `.submitit/%j`), and a run that fails on bad input is one line naming it, not submitit's traceback."""
    result = train("-m", "hydra/launcher=local", "seed=abc,1", "debug=smoke", "logger=none", "torch_threads=1",
                   cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "sweep: 2/2 runs done" in result.stdout and "Traceback" not in result.stdout + result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: 1 of 2 runs failed: run #0 (seed=abc debug=smoke logger=none torch_threads=1): "
        "seed='abc' must be an integer, e.g. seed=1 (job logs: ")
    sweep = next((tmp_path / "outputs" / "multirun").glob("*/*"))
    assert (sweep / ".submitit").is_dir() and not list(tmp_path.rglob("*%j*"))
    assert json.loads((sweep / "1_finetune" / "results.json").read_text())["status"] == "complete"


def test_a_full_disk_during_an_atomic_move_names_the_destination():
    """Lightning's atomic checkpoint save writes a temporary file elsewhere and moves it into the run dir;
    on a full disk the move fails with both names, and the line must name the run's file, not the temporary."""
    import errno

    from lifelong import validate

    error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/tmp/tmpmrjo_9d1", None,
                    "/runs/a/checkpoints/task0/0_train/last.ckpt.tmp")
    assert validate.disk_error_message(error, "/runs/a") == (
        "no space left writing /runs/a/checkpoints/task0/0_train/last.ckpt.tmp (No space left on device); "
        "free space and continue with resume=/runs/a")


def test_config_errors_come_before_the_heavy_imports(tmp_path):
    start = time.time()
    result = train("optimizer.lr=-1", "logger=none", f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 2 and time.time() - start < 8  # lightning alone takes longer to import
    assert "lightning" not in result.stderr


def test_a_resume_with_another_config_is_refused_before_the_heavy_imports(tmp_path, monkeypatch):
    """The run's own .hydra/config.yaml is compared before torch is imported (the copy in last.pt used
    to be the only check, 8-12 s later)."""
    base = ["dataset=digits", "scenario.n_tasks=2", "epochs=1", "logger=none", "torch_threads=1"]
    assert train(*base, f"hydra.run.dir={tmp_path}/run").returncode == 0
    start = time.time()
    result = train(*base, "method=ewc", f"resume={tmp_path}/run", f"hydra.run.dir={tmp_path}/attempt")
    assert result.returncode == 2 and time.time() - start < 8, result.stderr[-2000:]
    assert result.stderr.strip().startswith(f"error: resume={tmp_path}/run: method differs from the run being resumed")
    assert not (tmp_path / "attempt").exists()
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")  # every import on stderr: torch must not be among them
    traced = train(*base, "method=ewc", f"resume={tmp_path}/run", f"hydra.run.dir={tmp_path}/attempt")
    imported = {line.rsplit("|", 1)[-1].strip() for line in traced.stderr.splitlines() if line.startswith("import time:")}
    assert traced.returncode == 2 and "omegaconf" in imported and "torch" not in imported


def test_error_line_goes_into_the_train_log_of_a_resumed_run(tmp_path):
    earlier = _fake_run(tmp_path, None)
    result = train(f"resume={earlier}", "optimizer.lr=-1", "logger=none", f"hydra.run.dir={tmp_path}/attempt")
    assert result.returncode == 2
    assert "error: optimizer.lr=-1 must be a positive number" in (Path(earlier) / "train.log").read_text()
    assert not (tmp_path / "attempt").exists()


@pytest.mark.slow
def test_sigterm_ends_the_run_with_a_resume_line_that_works(tmp_path):
    """SIGTERM used to end a run with status 0 and no word (SIGINT: tests/test_interrupt.py)."""
    signum, status = signal.SIGTERM, 143
    paths = [str(ROOT / "src")] + [str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONPATH=os.pathsep.join(paths))
    args = ["dataset=digits", "scenario.n_tasks=2", "epochs=20", "trainer.limit_train_batches=2", "eval.limit_batches=1",
            "logger=none", f"hydra.run.dir={tmp_path}/run"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # not a terminal: one plain line per epoch
        if line.startswith("task 1/2 · train · epoch 2/20"):
            break
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == status, stderr[-2000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("interrupted during task 1 of 2; resume with: python train.py "), stderr[-2000:]
    assert "Traceback" not in stderr
    results = tmp_path / "run" / "results.json"
    assert not results.exists() or json.loads(results.read_text())["status"] == "interrupted"
    command = shlex.split(lines[-1].split("resume with: ", 1)[1])
    assert command[-1] == f"resume={tmp_path / 'run'}"
    resumed = subprocess.run([sys.executable, str(ROOT / "train.py"), *command[2:]], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads(results.read_text())["status"] == "complete"


# The GPU-present side of the hardware check, with the GPU count given to `validate.check` (this
# machine may have none); the composed configs are the real ones of `hardware=gpu` / `hardware=ddp`.
GPU_CASES = [
    (["hardware=gpu"], 1, None),
    (["hardware=gpu"], 0, "trainer.accelerator=gpu but this machine has no usable GPU; run on CPU with hardware=cpu"),
    (["hardware=gpu", "trainer.devices=2"], 1, "trainer.devices=2 but this machine has 1 GPU; use trainer.devices=1 or fewer"),
    (["hardware=ddp", "trainer.devices=3"], 2, "trainer.devices=3 but this machine has 2 GPUs; use trainer.devices=2 or fewer"),
    (["hardware=ddp", "trainer.devices=3"], 4, None),
    (["hardware=ddp", "trainer.devices=[0,1,2]"], 2, "trainer.devices=[0, 1, 2] but this machine has 2 GPUs"),
    (["hardware=ddp"], 8, None),  # devices=auto: every GPU there is
    (["hardware=ddp", "trainer.devices=3"], 0, "no usable GPU; run on CPU processes with trainer.accelerator=cpu"),
    (["hardware=ddp", "trainer.devices=3", "trainer.accelerator=cpu"], 0, None),  # the fix the line gives
]


@pytest.mark.parametrize("args,gpus,expected", GPU_CASES, ids=[f"{' '.join(a)} on {g} GPUs" for a, g, _ in GPU_CASES])
def test_hardware_check_with_a_given_gpu_count(tmp_path, args, gpus, expected):
    from conftest import compose_config

    from lifelong import validate
    from lifelong.errors import ConfigError

    cfg = compose_config(tmp_path / "run", *args)
    if expected is None:
        validate.check(cfg, tmp_path / "run", gpus=gpus)
    else:
        with pytest.raises(ConfigError) as error:
            validate.check(cfg, tmp_path / "run", gpus=gpus)
        assert expected in str(error.value)


def test_the_early_checks_know_the_methods_ce_scopes():
    from lifelong import validate
    from lifelong.methods.base import CE_SCOPES

    assert validate.CE_SCOPES == CE_SCOPES


def test_the_trainer_arguments_read_without_lightning_agree_with_lightning():
    import inspect

    import lightning

    from lifelong import validate

    arguments = set(inspect.signature(lightning.Trainer.__init__).parameters) - {"self"}
    assert validate.trainer_arguments() == arguments
    assert set(validate.RUNNER_TRAINER_KEYS) <= arguments


def test_the_gpu_count_without_torch_agrees_with_torch():
    import torch

    from lifelong import validate

    assert validate.gpu_count() == (torch.cuda.device_count() if torch.cuda.is_available() else 0)


@pytest.mark.parametrize("signum,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interruption_while_the_run_starts_is_one_line(tmp_path, signum, status):
    """Ctrl-C or SIGTERM once Hydra has made the run dir, before training: one line, 130/143, no
    traceback, and the new run dir removed again (it used to print Hydra's traceback, exit 1 and
    leave the directory behind)."""
    paths = [str(ROOT / "src")] + [str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "experiment=quickstart", "logger=none",
                             f"hydra.run.dir={run}"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, WANDB_MODE="disabled", PYTHONPATH=os.pathsep.join(paths)))
    deadline = time.time() + 120
    while not (run / ".hydra").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert proc.returncode == status and "Traceback" not in stderr, stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("interrupted "), stderr[-2000:]
    if lines[0].startswith("interrupted before training started"):
        assert not run.exists()
    else:  # the task loop had begun: the run dir stays, with the line that resumes it
        assert "resume with: python train.py experiment=quickstart logger=none resume=" in lines[0]
