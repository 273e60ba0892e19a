"""Cached evaluation (`eval.cache`, `lifelong.paths`): the same matrices as re-running every path."""
from __future__ import annotations

import pytest

import lifelong.run as runner
from conftest import NEEDS
from lifelong.paths import PathCache

MATRICES = ("acc_taw", "acc_tag", "acc_tag_all", "acc_task_id", "acc_tag_max_prob", "acc_tag_entropy_top2")


@pytest.mark.parametrize("method", ["mind", "packnet", "clr"])
def test_cached_evaluation_gives_every_entry_of_the_uncached_one(run, monkeypatch, method):
    caches: list[PathCache] = []

    class RecordedCache(PathCache):
        def __init__(self):
            super().__init__()
            caches.append(self)

    monkeypatch.setattr(runner, "PathCache", RecordedCache)
    # Small test batches: several per test set, so the cache is keyed by batch too.
    overrides = (f"method={method}", *NEEDS[method], "eval.batch_size=48",
                 "torch_threads=1")
    cached, _ = run(*overrides, "eval.cache=true")
    uncached, _ = run(*overrides, "eval.cache=false")
    assert len(caches) == 1  # eval.cache=false evaluates without one
    for key in MATRICES:
        if key in uncached:
            assert cached[key] == uncached[key], key
    assert cached["acc_taw"] != [[None] * 3] * 3 and cached["tag_variants"] == uncached["tag_variants"]

    # Every (test batch, path) pair ran once: T paths on each batch, against sum_t (t + 1) per batch
    # of a test set seen at every step t >= u when nothing is cached.
    (cache,) = caches
    n_tasks = 3
    batches = {u: len({i for (v, _, i) in cache.entries if v == u}) for u in range(n_tasks)}
    assert all(b >= 2 for b in batches.values())
    assert cache.passes == len(cache.entries) == n_tasks * sum(batches.values())
    uncached_passes = sum((t + 1) * batches[u] for t in range(n_tasks) for u in range(t + 1))
    assert cache.passes < uncached_passes
