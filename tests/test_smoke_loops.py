"""`debug=smoke` shortens every loop of every method, also the ones it runs between tasks.

The loop lengths of a method are the keys of its config named `*_epochs`, `*_iters`, `*_steps`,
`*_passes`, `*_rounds` (found by walking conf/method/, so a new method is covered without editing
this file). Each is set to LONG, a length no smoke run may reach, and the run's optimizer steps are
counted (every step, Lightning's or a method's own loop's, goes through `Optimizer.step`): a loop
that does not take its length through `ContinualMethod.loop_length` (or a phase, which the runner
caps) runs LONG epochs of at least one step each and the count shows it.
"""
from __future__ import annotations

import contextlib
import inspect
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import NEEDS

CONF = Path(__file__).resolve().parents[1] / "conf"
LOOP_KEY = re.compile(r"^[a-z0-9_]+_(epochs|iters|iterations|steps|passes|rounds)$")
LONG = 400
SMOKE = ["dataset=digits", "scenario.n_tasks=2", "scenario.nc_first_task=null", "logger=none",
         "trainer.enable_progress_bar=false"]


def method_config(name: str):
    """conf/method/<name>.yaml with the options it extends (joint_reinit: joint) merged under it."""
    node = OmegaConf.load(CONF / "method" / f"{name}.yaml")
    parents = [d for d in node.get("defaults", []) if isinstance(d, str) and d != "_self_"]
    return OmegaConf.merge(*[method_config(p) for p in parents], node) if parents else node


def loop_keys(name: str) -> list[str]:
    return sorted(k for k in method_config(name) if LOOP_KEY.match(str(k)))


METHODS = sorted(p.stem for p in (CONF / "method").glob("*.yaml"))
WITH_LOOPS = [m for m in METHODS if loop_keys(m)]


def test_the_walk_finds_the_known_between_task_loops():
    """The walk sees the loops this test was written against (if a key is renamed, update LOOP_KEY)."""
    found = {m: loop_keys(m) for m in WITH_LOOPS}
    assert "ae_epochs" in found["ebll"] and found["bic"] == ["bias_epochs"] and found["e2e"] == ["finetuning_epochs"]
    assert "linear_epochs" in found["fetril"] and "synthesis_iters" in found["abd"]
    assert {"refine_epochs", "synthesis_iters"} <= set(found["rdfcil"])


@pytest.mark.parametrize("method", METHODS)
def test_every_loop_length_of_a_method_is_in_its_config(method):
    """A loop length hidden in a method's signature (not in its config) would escape the walk below."""
    from hydra.utils import get_class

    target = method_config(method)["_target_"]
    parameters = inspect.signature(get_class(target).__init__).parameters
    hidden = [p for p in parameters if LOOP_KEY.match(p) and p not in method_config(method)]
    assert not hidden, f"conf/method/{method}.yaml lacks {hidden}: give them a config key with its source"


def smoke_overrides(method: str) -> list[str]:
    """`debug=smoke` with every loop length of `method` at LONG (conftest.NEEDS' short values dropped)."""
    keys = {f"method.{k}" for k in loop_keys(method)}
    needs = [o for o in NEEDS.get(method, []) if o.split("=", 1)[0] not in keys]
    return ["debug=smoke", *needs, *[f"{k}={LONG}" for k in sorted(keys)]]


@contextlib.contextmanager
def counted_optimizer_steps():
    """Every `Optimizer.step` while inside (Lightning's and a method's own loops alike)."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    steps = []
    hook = register_optimizer_step_post_hook(lambda *_: steps.append(1))
    try:
        yield steps
    finally:
        hook.remove()


def assert_short(method: str, steps: list) -> None:
    """Two tasks, each phase one epoch of a few batches, each own loop one pass over a few batches."""
    assert 0 < len(steps) < LONG // 4, (f"{method}: {len(steps)} optimizer steps under debug=smoke with "
                                        f"{loop_keys(method)} at {LONG}: a loop ignores loop_length")


# The runs that check it: tests/test_modes.py's audit runs every method this way (no extra run).
def test_a_loop_that_ignores_loop_length_is_caught(run, monkeypatch):
    """FeTrIL's own classifier loop (classifier=linear, which the audit's default svm skips) is short
    under debug=smoke, and with loop_length disabled runs LONG epochs and fails the check."""
    from lifelong.methods.base import ContinualMethod

    overrides = [*SMOKE, *smoke_overrides("fetril"), "method.classifier=linear"]
    with counted_optimizer_steps() as steps:
        run("method=fetril", *overrides, tiny=False)
    assert_short("fetril", steps)
    monkeypatch.setattr(ContinualMethod, "loop_length", lambda self, n: n)
    with counted_optimizer_steps() as steps:
        run("method=fetril", *overrides, tiny=False)
    with pytest.raises(AssertionError, match="a loop ignores loop_length"):
        assert_short("fetril", steps)
