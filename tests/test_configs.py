"""Every option of every config group composes with the rest of the defaults."""
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import CONF, compose_config

GROUPS = ["dataset", "scenario", "backbone", "memory", "method", "optimizer", "scheduler", "hardware", "logger",
          "debug", "experiment"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]
OPTIONS += [("hydra/launcher", p.stem) for p in sorted((CONF / "hydra" / "launcher").glob("*.yaml"))]


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes(tmp_path, group, option):
    cfg = compose_config(tmp_path, f"{group}={option}")
    container = {k: OmegaConf.to_container(cfg[k], resolve=True, throw_on_missing=False) if OmegaConf.is_config(cfg[k])
                 else cfg[k] for k in cfg if k != "hydra"}
    if group in ("dataset", "backbone", "method", "scenario"):
        assert container[group], f"{group}={option} is empty"
    if group in ("backbone", "method", "scenario"):
        assert "_target_" in container[group]


def test_every_group_has_options():
    for group in GROUPS:
        assert list((CONF / group).glob("*.yaml")), group


def test_the_config_tree_mirrors_the_code():
    """Each method/backbone config points at an importable callable."""
    from hydra.utils import get_method

    for group in ("method", "backbone", "scenario"):
        for path in (CONF / group).glob("*.yaml"):
            node = OmegaConf.load(path)
            while "_target_" not in node:  # a variant of another option of the group (joint_reinit: joint)
                parent = next(d for d in node.defaults if isinstance(d, str))
                node = OmegaConf.load(CONF / group / f"{parent}.yaml")
            target = node["_target_"]
            assert callable(get_method(target)), f"{path}: {target}"


NEW_BASELINES = ["si", "mas", "rwalk", "ewc_online", "lwm", "hat", "supsup"]
# HAT and SupSup rebuild the sweeps' own ResNets (gated ResNet-32, ResNet-50): no backbone override.
SWEEP_BACKBONE: dict[str, list[str]] = {}


@pytest.mark.parametrize("experiment", ["mind_cifar100", "clr_dataset_sequence"])
@pytest.mark.parametrize("method", NEW_BASELINES)
def test_baselines_compose_in_the_paper_sweeps(tmp_path, experiment, method):
    """`-m experiment=<paper> method=<baseline>` composes, and the method builds on that sweep's
    backbone (the CLR ResNet-50 without its pretrained weights, offline; only LwM, HAT and SupSup,
    which rebuild or hook named layers of it, are built there: the regularisers take any backbone)."""
    from hydra.utils import get_class, instantiate

    cfg = compose_config(tmp_path, f"experiment={experiment}", f"method={method}", *SWEEP_BACKBONE.get(method, []))
    assert cfg.method._target_.rsplit(".", 1)[0] == f"lifelong.methods.{method.split('_')[0]}"
    if experiment == "clr_dataset_sequence" and method not in ("lwm", "hat", "supsup"):
        return
    if "weights" in cfg.backbone:
        cfg.backbone.weights = None
    built = instantiate(cfg.method, backbone=instantiate(cfg.backbone), optimizer=instantiate(cfg.optimizer),
                        epochs=cfg.epochs, _convert_="object")
    assert isinstance(built, get_class(cfg.method._target_))
    if method in ("hat", "supsup"):  # the gated / supermasked twin of the sweep's ResNet
        assert type(built.net.backbone).__name__ == {"hat": "HATResNet", "supsup": "SupermaskResNet"}[method]


def test_the_readme_says_what_every_method_needs():
    """README's table "What each method needs" names every option of conf/method/ (backbone, weights, memory)."""
    import re

    text = (CONF.parent / "README.md").read_text()
    table = text[text.index("What each method needs"):]
    table = table[: table.index("\n\n", table.index("| method |"))]
    rows = [row for row in table.splitlines() if row.startswith("|")]
    named = {m for row in rows[2:] for m in re.findall(r"`([a-z_0-9]+)`", row.split("|")[1])}
    methods = {p.stem for p in (CONF / "method").glob("*.yaml")}
    assert methods <= named, f"README's method-needs table lacks {sorted(methods - named)}"
    assert all(len(row.split("|")) == 6 for row in rows), "4 columns: method, backbone, weights, memory"


def test_the_readme_benchmark_table_has_a_measured_row_for_every_method():
    """README's Results table (the Fashion-MNIST benchmark) has a row of four mean ± std numbers for every
    option of conf/method/: a new method is not done until it is measured there."""
    import re

    text = (CONF.parent / "README.md").read_text()
    section = text[text.index("## Results: split Fashion-MNIST on CPU"):text.index("## Tests")]
    measured = set()
    for row in section.splitlines():
        cells = [cell.strip() for cell in row.split("|")[1:-1]]
        if len(cells) == 6 and all(re.fullmatch(r"-?\d+\.\d\d ± \d+\.\d\d", c) for c in cells[2:]):
            measured.update(re.findall(r"^`([a-z_0-9]+)`", cells[1]))
    methods = {p.stem for p in (CONF / "method").glob("*.yaml")}
    assert methods <= measured, f"README's benchmark table lacks a measured row for {sorted(methods - measured)}"


# The exemplar-free rows of the two paper sweeps (README "Exemplar-free and data-free baselines"). SSRE
# re-parameterises its convolutions: it runs on resnet32_rep, with that backbone named on its command line.
EXEMPLAR_FREE_SWEEPS = {"abd_cifar100": ["lwf_synthetic", "dgr", "rdfcil"],
                        "mind_cifar100": ["pass", "ssre", "fetril", "fecam"]}
SWEEP_ROWS = [(e, m) for e, methods in EXEMPLAR_FREE_SWEEPS.items() for m in methods]


@pytest.mark.parametrize("protocol", ["warm", "cold"])
@pytest.mark.parametrize("experiment,method", SWEEP_ROWS, ids=[f"{e}-{m}" for e, m in SWEEP_ROWS])
def test_exemplar_free_rows_compose_and_build_in_the_paper_sweeps(tmp_path, experiment, method, protocol):
    """`-m experiment=<paper> method=<row>` with the warm-start protocol (`scenario.nc_first_task=50
    scenario.n_tasks=6`: 50 classes, then 5 x 10) or the experiment's cold start composes, passes the
    config checks, splits CIFAR-100 as asked and builds the method on the sweep's backbone."""
    from hydra.utils import get_class, instantiate

    from lifelong import config as config_checks
    from lifelong.splits import task_sizes

    warm = ["scenario.nc_first_task=50", "scenario.n_tasks=6"] if protocol == "warm" else []
    backbone = ["backbone=resnet32_rep"] if method == "ssre" else []
    cfg = compose_config(tmp_path, f"experiment={experiment}", f"method={method}", *backbone, *warm)
    config_checks.check(cfg)
    sizes = task_sizes(cfg.dataset.n_classes, cfg.scenario.n_tasks, cfg.scenario.nc_first_task)
    assert sizes == ([50] + [10] * 5 if protocol == "warm" else [100 // cfg.scenario.n_tasks] * cfg.scenario.n_tasks)
    built = instantiate(cfg.method, backbone=instantiate(cfg.backbone), optimizer=instantiate(cfg.optimizer),
                        scheduler=instantiate(cfg.scheduler), epochs=cfg.epochs, _convert_="object")
    assert isinstance(built, get_class(cfg.method._target_))
    assert built.epochs == cfg.epochs and cfg.dataset.name == "cifar100"
