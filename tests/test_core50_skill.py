"""CORe50 (class- and domain-incremental) and the SKILL release with CLR's per-task sampling, on tiny files
written here in the real on-disk formats: core50_128x128/s<k>/o<j>/*.png, and the release's sqlite
database with original_images/."""
from __future__ import annotations

import random
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import compose_config
from lifelong.data.core50 import TEST_SESSIONS, TRAIN_SESSIONS, load_core50, load_core50_sessions
from lifelong.data.sequence import dataset_sequence
from lifelong.data.skill import sample
from lifelong.data.transforms import BatchAugment, shift_hue
from lifelong.errors import ConfigError, DatasetNotFound


# ------------------------------------------------------------------------------------------- CORe50
def write_core50(data_root: Path, frames: int = 1, size: int = 8) -> Path:
    """Every session and object of the real layout, `frames` PNGs each: object j lights pixel j - 1 (in
    row-major order), session k tints the dark background (another background/lighting)."""
    rng = np.random.default_rng(0)
    for s in range(1, 12):
        for o in range(1, 51):
            folder = data_root / "core50_128x128" / f"s{s}" / f"o{o}"
            folder.mkdir(parents=True)
            for f in range(frames):
                pixels = rng.integers(0, 40, (size * size, 3)) + np.array([3 * s, 0, 6 * s])
                pixels[o - 1] = 255
                Image.fromarray(pixels.reshape(size, size, 3).astype(np.uint8)).save(folder / f"C_{s:02d}_{o:02d}_{f:03d}.png")
    return data_root


@pytest.fixture(scope="module")
def core50_root(tmp_path_factory):
    return write_core50(tmp_path_factory.mktemp("core50"), frames=2)


def raises_user_error(match: str, call, *args):
    """The ConfigError a run raises (Hydra's instantiate wraps those of the scenario builder; the CLI
    prints the inner one as a single `error:` line)."""
    from lifelong.cli import user_error

    with pytest.raises(Exception) as caught:
        call(*args)
    error = user_error(caught.value)
    assert isinstance(error, ConfigError) and "\n" not in str(error), caught.value
    assert match in str(error), str(error)


def test_core50_sessions_split_into_the_standard_train_and_test_sets(core50_root, tmp_path):
    train, test = load_core50(core50_root, image_size=8, cache=False)
    assert train.x.dtype == torch.uint8 and train.x.shape == (8 * 50 * 2, 3, 8, 8) and len(test) == 3 * 50 * 2
    assert train.y.tolist()[:4] == [0, 0, 1, 1] and train.y.max() == 49 and train.class_names[0] == "o1"
    first = np.array(Image.open(core50_root / "core50_128x128/s3/o1/C_03_01_000.png"))
    assert torch.equal(test.x[0], torch.from_numpy(first).permute(2, 0, 1))  # test starts with session 3, object 1
    small, _ = load_core50(core50_root, image_size=6, cache=False)
    assert small.x.shape[2:] == (6, 6)
    # MIND's split: every session pooled, 20% held out, fixed by split_seed.
    a_train, a_test = load_core50(core50_root, image_size=8, split="random", cache=False)
    b_train, b_test = load_core50(core50_root, image_size=8, split="random", cache=False)
    assert len(a_test) == 220 and len(a_train) == 880 and torch.equal(a_test.x, b_test.x)
    with pytest.raises(ConfigError, match="dataset.split"):
        load_core50(core50_root, split="sessions_random")
    with pytest.raises(ConfigError, match="overlap"):
        load_core50(core50_root, train_sessions=[1, 3], test_sessions=[3])


def test_core50_decoded_sessions_are_cached_and_refreshed_when_files_change(core50_root, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(core50_root / "core50_128x128", root / "core50_128x128")
    sessions, _ = load_core50_sessions(root, 8, [1], [3])
    assert list((root / ".cache" / "core50").glob("s1_8px_*.pt"))
    for png in (root / "core50_128x128" / "s1" / "o2").glob("*.png"):  # same names, other pixels
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png)
    again, _ = load_core50_sessions(root, 8, [1], [3])
    assert torch.equal(again[1].x, sessions[1].x)  # read from the cache, keyed by the file list
    (root / "core50_128x128" / "s1" / "o2" / "C_01_02_001.png").unlink()
    changed, _ = load_core50_sessions(root, 8, [1], [3])
    assert len(changed[1]) == len(sessions[1]) - 1  # another file list: decoded again


def test_missing_core50_says_where_to_put_it(tmp_path):
    with pytest.raises(DatasetNotFound, match="core50_128x128") as error:
        load_core50(tmp_path)
    assert "core50_128x128.zip" in str(error.value) and "paths.data_root" in str(error.value)


def test_core50_hue_jitter_is_torchvision_s_per_image():
    from torchvision.transforms.functional import adjust_hue

    x = torch.rand(3, 3, 5, 5)
    shifts = torch.tensor([0.3, -0.2, 0.0]).view(3, 1, 1)
    expected = torch.stack([adjust_hue(x[i], float(shifts[i])) for i in range(3)])
    assert torch.allclose(shift_hue(x, shifts), expected, atol=1e-5)
    augment = BatchAugment([0.0] * 3, [1.0] * 3, brightness=0.5, hue=0.3)
    images = (torch.rand(64, 3, 4, 4) * 255).to(torch.uint8)
    out = augment(images, train=True)
    grey_ratio = lambda img: img / img.sum(1, keepdim=True).clamp_min(1e-6)  # noqa: E731 (brightness-free colour)
    assert not torch.allclose(grey_ratio(out), grey_ratio(images.float() / 255), atol=1e-2)  # hues moved
    assert torch.equal(augment(images, train=False), images.float() / 255)  # evaluation: no jitter


CORE50 = ["dataset=core50", "dataset.image_size=8", "backbone=mlp", "epochs=1", "logger=none",
          "trainer.enable_progress_bar=false", "torch_threads=1"]


def test_core50_class_incremental_through_the_runner(run, core50_root):
    # One pixel tells the tiny objects apart: no crop or flip here (the domain-incremental run below keeps
    # MIND's augmentation, hue jitter included).
    summary, _ = run(*CORE50, f"paths.data_root={core50_root}", "scenario.n_tasks=2", "dataset.crop_padding=0",
                     "dataset.flip=false", "epochs=2", tiny=False)
    assert summary["task_sizes"] == [25] * 2 and summary["tasks_done"] == 2
    assert summary["acc_taw"][1][1] > 0.2  # the lit pixel names the object: well above the 4% of chance


def test_core50_domain_incremental_sessions_through_the_runner(run, core50_root):
    summary, _ = run(*CORE50, f"paths.data_root={core50_root}", "scenario=domain_incremental",
                     "scenario.domain=sessions", "dataset.train_sessions=[1,2,4]", "scenario.n_tasks=3", "method=lwf",
                     tiny=False)
    assert summary["task_sizes"] == [50] * 3 and summary["tasks_done"] == 3
    # Every task is tested on the same test sessions: without the task id the prediction is the same
    # for each of them, so a row of acc_tag is one number.
    last = summary["acc_tag"][2]
    assert max(last) - min(last) < 1e-9 and last[0] == pytest.approx(summary["acc_tag_all"][2])


def test_core50_sessions_scenario_checks_its_keys_before_training(run, core50_root, tmp_path):
    sessions, test = load_core50_sessions(core50_root, 8, TRAIN_SESSIONS, TEST_SESSIONS)
    from lifelong.data.domains import build_session_scenario

    scenario = build_session_scenario(sessions, test)
    assert scenario.domain_incremental and [t.offset for t in scenario][:3] == [0, 50, 100]
    assert torch.equal(scenario[0].train.x, sessions[1].x) and scenario[7].test.x.data_ptr() == test.x.data_ptr()
    base = [*CORE50, f"paths.data_root={core50_root}", "scenario=domain_incremental"]
    run_full = lambda *overrides: run(*overrides, tiny=False)  # noqa: E731
    raises_user_error("scenario.n_tasks=8", run_full, *base, "scenario.domain=sessions", "scenario.n_tasks=5")
    raises_user_error("scenario.domain=sessions", run_full, *base, "scenario.domain=permuted")
    raises_user_error("dataset.split=sessions", run_full, *base, "scenario.domain=sessions", "scenario.n_tasks=8",
                      "dataset.split=random")
    raises_user_error("scenario.domain=sessions needs", run_full, "dataset=digits", "scenario=domain_incremental",
                      "scenario.domain=sessions", "logger=none")
    with pytest.raises(ConfigError, match="scenario=class_incremental"):  # old-vs-new class balancing
        run(*base, "scenario.domain=sessions", "scenario.n_tasks=8", "method=lwf_mc", tiny=False)


def test_mind_core50_experiment_is_the_official_setting(tmp_path):
    cfg = compose_config(tmp_path, "experiment=mind_core50")
    assert (cfg.dataset.name, cfg.dataset.image_size, cfg.dataset.split, cfg.scenario.n_tasks) == ("core50", 64, "random", 10)
    assert (cfg.dataset.crop_padding, cfg.dataset.flip, cfg.dataset.brightness, cfg.dataset.hue) == (4, True, 0.5, 0.3)
    assert (cfg.epochs, cfg.batch_size, cfg.method.temperature) == (20, 256, 3.0)
    assert list(cfg.method.teacher_scheduler.milestones) == list(cfg.method.distill_scheduler.milestones) == [15]
    cfg = compose_config(tmp_path, "experiment=mind_core50", "scenario=domain_incremental", "scenario.domain=sessions",
                         "scenario.n_tasks=8", "dataset.split=sessions", "method.n_classes=null")
    assert cfg.method.n_tasks == 8 and cfg.scenario._target_.endswith("domain_incremental")


# -------------------------------------------------------------------------------------------- SKILL
def write_skill(root: Path, datasets: dict, size: int = 8) -> Path:
    """A SKILL release: rolling_releases/database_2.sqlite and original_images/<name><path><filename>.

    `datasets`: dataset_id -> (name, {set: images per class}, n_classes). Class ids are 10 * c + 3 (not
    0..C-1) and rows are written in a shuffled class order, as a real database may hold them."""
    (root / "rolling_releases").mkdir(parents=True)
    db = sqlite3.connect(root / "rolling_releases" / "database_2.sqlite")
    db.execute("CREATE TABLE datasets (dataset_id INTEGER, dataset_name TEXT)")
    db.execute('CREATE TABLE files (hash TEXT, path TEXT, filename TEXT, class_id INTEGER, dataset_id INTEGER, '
               'problem INTEGER, "set" INTEGER)')
    rng = np.random.default_rng(0)
    for dataset_id, (name, per_set, n_classes) in datasets.items():
        db.execute("INSERT INTO datasets VALUES (?, ?)", (dataset_id, name))
        for set_id, per_class in per_set.items():
            rows = [(c, i) for c in rng.permutation(n_classes) for i in range(per_class)]
            for c, i in rows:
                path, filename = f"/set{set_id}/class{c}/", f"{i}.png"
                folder = root / "original_images" / f"{name}{path}"
                folder.mkdir(parents=True, exist_ok=True)
                pixels = rng.integers(0, 30, (size, size, 3)) + 40 * int(c)
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / filename)
                db.execute("INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (f"h{dataset_id}{set_id}{c}{i}", path, filename, 10 * int(c) + 3, dataset_id, 0, set_id))
            # A problem row is never sampled (its file does not even exist).
            db.execute("INSERT INTO files VALUES ('bad', '/x/', 'broken.png', 3, ?, 1, ?)", (dataset_id, set_id))
    db.commit()
    db.close()
    return root


def rows_of(n_classes: int, per_class: int) -> list[tuple[str, int]]:
    return [(f"c{c}/{i}.png", c) for c in range(n_classes) for i in range(per_class)]


def test_skill_sampling_counts_follow_the_official_rule():
    # 60 classes or more: 5,120 training / 512 evaluation images, round(N / C) per class.
    assert len(sample(rows_of(67, 100), (2560, 5120))) == 67 * 76 == 5092  # stat.csv: scenes 5092
    assert len(sample(rows_of(67, 100), (256, 512))) == 536  # scenes 536
    assert len(sample(rows_of(3, 1000), (2560, 5120))) == 2559  # OriSet 2559: round(853.3) = 853 per class
    assert len(sample(rows_of(10, 300), (256, 512))) == 260  # EuroSAT 260: round(25.6) = 26
    few = sample(rows_of(7, 20), (2560, 5120))  # classes with fewer images keep all of them
    assert len(few) == 140
    capped = sample(rows_of(310, 20), (2560, 5120))
    assert {c for _, c in capped} == set(range(300)) and len(capped) == 300 * 17  # at most 300 classes


def test_skill_sampling_is_seeded_and_deterministic():
    rows = rows_of(5, 50)
    a, b = sample(rows, (20, 40)), sample(rows, (20, 40))
    assert a == b and len(a) == 20 and [c for _, c in a] == sorted(c for _, c in a)  # classes in order, 4 each
    assert sample(rows, (20, 40), seed=1) != a
    # The official generator: Python's random seeded once per set, each class shuffled in turn.
    rng = random.Random(27)
    expected = []
    for c in range(5):
        images = [image for image, k in rows if k == c]
        rng.shuffle(images)
        expected += [(image, c) for image in images[:4]]
    assert a == expected


def test_skill_release_becomes_a_sequence_with_official_samples(tmp_path):
    root = write_skill(tmp_path / "skill", {
        4: ("alpha", {0: 6, 1: 3, 2: 3}, 3),
        9: ("beta", {0: 5, 1: 2}, 2),  # no test set: validation from scenario.val_fraction
    })
    skill = {"root": str(root), "train_sizes": [12, 99], "eval_sizes": [6, 99], "class_threshold": 60}
    scenario = dataset_sequence(datasets=[{"name": "alpha", "source": "skill", "id": 4},
                                          {"name": "beta", "source": "skill"}],  # found by name
                                skill=skill, image_size=8, val_fraction=0.2)
    alpha, beta = scenario.tasks
    assert (len(alpha.train), len(alpha.test), len(alpha.val)) == (12, 6, 6)  # 4 / 2 / 2 per class
    assert (len(beta.train), len(beta.test)) == (8, 4) and len(beta.val) == 2  # 20% of 5 training images per class
    assert scenario.task_sizes == [3, 2] and beta.offset == 3
    # Labels are the classes' order in the training set, the same in every split.
    train_files = alpha.train.dataset
    x, y = alpha.test[0]
    assert x.shape == (3, 8, 8) and int(y) in range(3)
    for view in (alpha.train, alpha.test, alpha.val):
        files, labels = view.dataset, view.labels
        for i in range(len(view)):
            class_folder = files.paths[view.indices[i]].parent.name
            assert train_files.targets[[p.parent.name for p in train_files.paths].index(class_folder)] == labels[i]
    assert {p.parent.parent.name for p in alpha.test.dataset.paths} == {"set1"}  # the release's validation set
    assert {p.parent.parent.name for p in alpha.val.dataset.paths} == {"set2"}  # its test set
    again = dataset_sequence(datasets=[{"name": "alpha", "source": "skill", "id": 4}], skill=skill, image_size=8, seed=5)
    assert again.tasks[0].train.dataset.paths == alpha.train.dataset.paths  # the run's seed does not matter


def test_skill_errors_name_the_key_and_the_place(tmp_path):
    with pytest.raises(DatasetNotFound, match="database_2.sqlite") as error:
        dataset_sequence(datasets=[{"name": "alpha", "source": "skill", "id": 4}], skill={"root": str(tmp_path)})
    assert "paths.skill_root" in str(error.value)
    root = write_skill(tmp_path / "skill", {4: ("alpha", {0: 2, 1: 1}, 2)})
    with pytest.raises(ConfigError, match="id=5"):
        dataset_sequence(datasets=[{"name": "alpha", "source": "skill", "id": 5}], skill={"root": str(root)})
    with pytest.raises(ConfigError, match="scenario.skill.train_sizes"):
        dataset_sequence(datasets=[{"name": "alpha", "source": "skill"}], skill={"root": str(root), "train_sizes": [4]})
    (root / "original_images" / "alpha" / "set0" / "class0" / "0.png").unlink()
    with pytest.raises(DatasetNotFound, match="missing"):
        dataset_sequence(datasets=[{"name": "alpha", "source": "skill"}], skill={"root": str(root)})


def test_skill_sequence_through_the_runner(run, tmp_path):
    root = write_skill(tmp_path / "skill", {1: ("alpha", {0: 6, 1: 2, 2: 2}, 3), 2: ("beta", {0: 6, 1: 2, 2: 2}, 2)})
    summary, _ = run("scenario=dataset_sequence", "scenario.datasets=[{name:alpha,source:skill,id:1},"
                     "{name:beta,source:skill,id:2}]", f"scenario.skill.root={root}", "scenario.skill.train_sizes=[12,12]",
                     "scenario.skill.eval_sizes=[6,6]", "scenario.image_size=8", "backbone=mlp", "epochs=1",
                     "logger=none", "trainer.enable_progress_bar=false", "torch_threads=1", tiny=False)
    assert summary["task_sizes"] == [3, 2] and summary["tasks_done"] == 2


# ------------------------------------------------------------------------------ paper blocks
def test_paper_blocks_of_the_other_papers_name_their_table_and_a_results_key(tmp_path):
    """MIND's, CLR's and EBLL's tables could not be read here: their blocks name the table and the
    results.json key it corresponds to, hold no number, and aggregate prints no comparison for them."""
    from lifelong import report
    from lifelong.aggregate import aggregate, paper_entry, to_markdown
    from lifelong.metrics import Results
    from test_paper_numbers import write_run

    summary = report.summarize(Results(2), {})  # the keys of every results.json
    for experiment in ("mind_cifar100", "mind_tinyimagenet", "mind_core50", "clr_dataset_sequence", "clr_skill",
                       "ebll_scenes_birds_flowers"):
        cfg = compose_config(tmp_path / "unused", f"experiment={experiment}")
        assert "not transcribed" in cfg.paper.source and list(cfg.paper.results) == []
        assert cfg.paper.metric in summary
        write_run(tmp_path / "sweep" / experiment, cfg, [f"experiment={experiment}"], [0.5, 0.6], [0.5, 0.55])
        assert paper_entry(tmp_path / "sweep" / experiment) is None
    assert "Beside the paper" not in to_markdown(aggregate(tmp_path / "sweep"))
