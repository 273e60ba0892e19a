"""The exemplar memory (lifelong.memory): budget, selection, state, resume and DDP."""
from __future__ import annotations

import pytest
import torch

from lifelong import resume as checkpoints
from lifelong.data.datasets import ImageSet
from lifelong.memory import ExemplarMemory, herding


def toy_task(classes, n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor(classes).repeat_interleave(n)
    x = torch.randint(0, 256, (len(y), 1, 2, 2), dtype=torch.uint8, generator=g)
    return ImageSet(x, y)


def feats(x):
    return x.flatten(1).float()


@pytest.mark.parametrize("selection", ["random", "herding", "entropy", "distance"])
def test_budget_holds_after_every_task_and_is_class_balanced(selection):
    memory = ExemplarMemory(selection, size=30, seed=0)
    seen = []
    for t, classes in enumerate([[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]):
        data = toy_task(classes, seed=t)
        seen += classes
        memory.update(data, classes, features=feats, logits=lambda x: feats(x)[:, :1].repeat(1, 10))
        counts = memory.class_counts()
        assert sorted(counts) == seen and len(memory) <= 30
        assert set(counts.values()) == {30 // len(seen)}
        # every stored image is one of the training images of its class
        kept = memory.images[memory.labels == classes[0]]
        pool = data.x[data.y == classes[0]]
        assert all((pool == img).all((1, 2, 3)).any() for img in kept)
    assert [h["total"] for h in memory.history] == [28, 28, 30]
    assert memory.stats()["bytes"] == 30 * 4 + 30 * 8


def test_per_class_budget():
    memory = ExemplarMemory("random", per_class=3, seed=0)
    memory.update(toy_task([0, 1]), [0, 1])
    memory.update(toy_task([2, 3, 4]), [2, 3, 4])
    assert memory.class_counts() == {c: 3 for c in range(5)}


def test_herding_picks_what_the_hand_computation_picks():
    # Normalised rows: a=(1,0), b=(0,1), c=(0.6,0.8), d=(0.8,0.6); mean mu=(0.6,0.6).
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, 0.6]])
    # k=1: distances |mu - f_i| = 0.566, 0.566, 0.2, 0.2 -> c (first of the ties).
    # k=2: |mu - (c + f_i)/2|: a=(0.8,0.4)->0.283, b=(0.3,0.9)->0.424, d=(0.7,0.7)->0.141 -> d.
    # k=3: |mu - (c + d + f_i)/3|: a=(0.8,0.467)->0.240, b=(0.467,0.8)->0.240 -> a (first).
    assert herding(f, 3).tolist() == [2, 3, 0]
    # A shrunk class keeps its first m: the herding order is the priority order.
    memory = ExemplarMemory("herding", size=6, seed=0)
    data = ImageSet(torch.arange(8, dtype=torch.uint8).view(8, 1, 1, 1), torch.tensor([0] * 4 + [1] * 4))
    table = torch.cat([f, f])
    memory.update(data, [0, 1], features=lambda x: table[x.flatten().long()])
    assert memory.images.flatten().tolist() == [2, 3, 0, 6, 7, 4]
    memory.update(ImageSet(torch.full((4, 1, 1, 1), 9, dtype=torch.uint8), torch.tensor([2] * 4)), [2],
                  features=lambda x: torch.rand(len(x), 2))
    assert memory.images.flatten().tolist() == [2, 3, 6, 7, 9, 9]


def test_reservoir_keeps_size_and_payloads_and_samples():
    memory = ExemplarMemory("reservoir", size=10, seed=0)
    for step in range(5):
        x = torch.full((4, 1, 2, 2), step, dtype=torch.uint8)
        memory.add_batch(x, torch.full((4,), step), logits=torch.full((4, 2 + step), float(step)))
    assert len(memory) == 10 and int(memory.n_seen) == 20
    logits = memory.payload("logits")
    assert logits.shape == (10, 6)
    # each payload row belongs to its image (logits = the image's value, zero-padded on the right)
    assert torch.equal(logits[:, 0], memory.images[:, 0, 0, 0].float())
    s = memory.sample(4)
    assert len(s.index.unique()) == 4 and torch.equal(s.y, memory.labels[s.index])


def test_greedy_is_class_balanced():
    memory = ExemplarMemory("greedy", size=12, seed=0)
    memory.update(toy_task([0, 1], n=30), [0, 1])
    memory.update(toy_task([2, 3], n=30), [2, 3])
    assert memory.class_counts() == {c: 3 for c in range(4)}


def test_state_dict_round_trip_is_bit_identical():
    memory = ExemplarMemory("reservoir", size=6, seed=3)
    for step in range(3):
        memory.add_batch(torch.randint(0, 255, (4, 3, 2, 2), dtype=torch.uint8), torch.arange(4),
                         logits=torch.randn(4, 3))
    memory.record()
    state = memory.state_dict()
    fresh = ExemplarMemory("reservoir", size=6, seed=99)
    fresh.load_state_dict(state)
    for key, value in fresh.state_dict().items():
        if key != "_extra_state":
            assert torch.equal(value, state[key]), key
    assert fresh.history == memory.history
    # the generator continues where it was: both draw the same next sample
    assert torch.equal(fresh.sample(3).index, memory.sample(3).index)


def memory_state(run_dir):
    state = torch.load(run_dir / checkpoints.LAST, weights_only=False)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("memory.")}


def test_memory_survives_resume_bit_identically(run, stopped_and_resumed):
    overrides = ("method=lwf", "memory=herding", "memory.size=40")
    _, full_dir = run(*overrides)
    stopped = stopped_and_resumed(*overrides)
    full, resumed = memory_state(full_dir), memory_state(stopped)
    assert full.keys() == resumed.keys() and "memory.images" in full
    for key in full:
        if key != "memory._extra_state":
            assert torch.equal(full[key], resumed[key]), key
    assert full["memory._extra_state"] == resumed["memory._extra_state"]
    assert len(full["memory.labels"]) == 40
