"""PASS, SSRE and R-DFCIL: their statistics and losses against hand computations, SSRE's
re-parameterisation, each method end to end, and each against finetune on split digits."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from lifelong import resume as checkpoints
from lifelong.errors import ConfigError
from lifelong.losses import rkd_angle
from lifelong.methods.pass_ import pass_radius, rotate_batch
from lifelong.methods.rdfcil import balanced_class_weights, rdfcil_factors
from lifelong.methods.ssre import prototype_similarity
from lifelong.models.ssre import resnet32_rep
from lifelong.prototypes import class_statistics

SSRE_TINY = ("method=ssre", "backbone=resnet32_rep", "backbone.blocks_per_stage=1", "backbone.widths=[8,16]")
RDFCIL_TINY = ("method=rdfcil", "backbone=convnet", "backbone.widths=[8,16]", "method.synthesis_iters=3",
               "method.refine_epochs=1", "batch_size=16")


def test_class_statistics_and_pass_radius_against_numpy():
    torch.manual_seed(0)
    f = torch.randn(13, 4)
    y = torch.tensor([5, 6, 5, 5, 7, 6, 6, 5, 7, 7, 6, 5, 7])  # classes 5..7 of a task with offset 5
    batches = [(f[:6], y[:6]), (f[6:], y[6:])]
    count, mean, spread = class_statistics(lambda x: x, batches, 3, 5, 4)
    radii = []
    for c in range(3):
        fc = f[y == c + 5].double().numpy()
        assert count[c] == len(fc)
        np.testing.assert_allclose(mean[c].numpy(), fc.mean(0), rtol=1e-6)
        radii.append(np.trace(np.cov(fc.T)) / 4)  # PASS.py protoSave
        np.testing.assert_allclose(float(spread[c]), radii[-1], rtol=1e-5)
    np.testing.assert_allclose(float(pass_radius(spread)), math.sqrt(np.mean(radii)), rtol=1e-5)


def test_pass_rotations_are_interleaved_with_expanded_labels():
    x = torch.arange(2 * 9, dtype=torch.float).view(2, 1, 3, 3)
    x4, y4 = rotate_batch(x, torch.tensor([3, 1]))
    assert y4.tolist() == [12, 13, 14, 15, 4, 5, 6, 7]
    assert torch.equal(x4[5], torch.rot90(x[1], 1, (1, 2))) and torch.equal(x4[0], x[0])


def test_ssre_merge_gives_the_two_branch_outputs():
    torch.manual_seed(0)
    net = resnet32_rep(in_channels=2, blocks_per_stage=1, widths=(4, 6))
    for conv in net.rep_convs():  # non-zero branches, as after a task of training
        torch.nn.init.normal_(conv.branch.weight)
        torch.nn.init.normal_(conv.branch.bias)
    net.eval()
    x = torch.randn(3, 2, 7, 7)
    with torch.no_grad():
        two_branch = net(x)
        net.merge()
        merged = net(x)
    assert all(not c.parallel and not c.branch.weight.any() for c in net.rep_convs())
    torch.testing.assert_close(merged, two_branch, rtol=1e-5, atol=1e-5)
    net.set_parallel(True)  # zeroed branches: opening them again changes nothing
    with torch.no_grad():
        torch.testing.assert_close(net(x), merged)


def test_ssre_prototype_similarity_is_max_cosine():
    f = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    protos = torch.tensor([[2.0, 0.0], [0.0, -3.0]])
    torch.testing.assert_close(prototype_similarity(f, protos), torch.tensor([1.0, 1 / math.sqrt(2)]))


def test_rkd_angle_against_hand_computation():
    def cos_angles(e):  # cos of the angle at e_i between e_j and e_k, with 0 when j or k equals i
        n = len(e)
        out = torch.zeros(n, n, n)
        for i in range(n):
            for j in range(n):
                for k in range(n):
                    if j != i and k != i:
                        a, b = e[j] - e[i], e[k] - e[i]
                        out[i, j, k] = a @ b / (a.norm() * b.norm())
        return out.flatten()

    s = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    t = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    expected = (cos_angles(s) - cos_angles(t)).abs().mean()
    torch.testing.assert_close(rkd_angle(s, t), expected)
    assert rkd_angle(s, 3 * s + 1) < 1e-6  # angles are invariant to scale and shift


def test_rdfcil_factors_and_class_weights():
    alpha, beta = rdfcil_factors(50, 10)
    assert alpha == pytest.approx(math.log2(6)) and beta == pytest.approx(math.sqrt(5))
    torch.testing.assert_close(balanced_class_weights(torch.tensor([10.0, 20.0, 0.0])),
                               torch.tensor([2.0, 1.0, 20.0]))


def test_ssre_refuses_a_backbone_without_branches(run):
    from lifelong.cli import user_error

    with pytest.raises(Exception) as error:
        run("method=ssre", "backbone=mlp")
    cause = user_error(error.value)
    assert isinstance(cause, ConfigError) and "MLP" in str(cause) and "resnet32_rep" in str(cause)


def _state(run_dir):
    return torch.load(run_dir / checkpoints.LAST, weights_only=False)["state_dict"]


def test_pass_end_to_end_keeps_prototypes_and_radius(run):
    summary, run_dir = run("method=pass")
    assert summary["tasks_done"] == 3 and summary["stored_prototypes"] == 10
    state = _state(run_dir)
    assert state["prototypes"].shape == (10, 256) and state["radius"] > 0
    assert [state[f"net.heads.{i}.weight"].shape[0] for i in range(3)] == [16, 12, 12]  # 4 outputs per class


def test_ssre_end_to_end_merges_branches_and_keeps_main_branch(run):
    summary, run_dir = run(*SSRE_TINY, "scenario.n_tasks=2", "scenario.nc_first_task=6")
    state = _state(run_dir)
    assert summary["stored_prototypes"] == 10 and state["prototypes"].shape == (10, 16)
    branches = [k for k in state if ".branch." in k]
    assert branches and all(not state[k].any() for k in branches)  # merged after every task
    # The old model is the merged model of the last task: the same backbone, branch for branch.
    assert all(torch.equal(state[k], state["old_net." + k[len("net."):]]) for k in state if k.startswith("net.backbone"))


def test_rdfcil_end_to_end_runs_synthesis_train_and_refine(run):
    summary, run_dir = run(*RDFCIL_TINY, "logger=csv", "trainer.log_every_n_steps=1")
    assert summary["tasks_done"] == 3 and summary["generator_parameters"] > 0
    log = (run_dir / "logs" / "metrics.csv").read_text().splitlines()[0].split(",")
    for column in ("synthesis/loss/content", "loss/local_ce", "loss/hkd", "loss/rkd", "refine/loss/ce", "refine/loss/hkd"):
        assert column in log
    state = _state(run_dir)
    assert state["class_weights"].shape == (10,) and state["class_weights"].min() == 1


@pytest.mark.parametrize("overrides", [RDFCIL_TINY, SSRE_TINY, ("method=pass",)], ids=["rdfcil", "ssre", "pass"])
def test_resume_after_a_task_is_bit_identical(run, stopped_and_resumed, overrides):
    _, full_dir = run(*overrides)
    stopped = stopped_and_resumed(*overrides)
    results = [json.loads((d / "results.json").read_text()) for d in (full_dir, stopped)]
    assert results[0]["acc_tag"] == results[1]["acc_tag"] and results[0]["acc_taw"] == results[1]["acc_taw"]
    a, b = _state(full_dir), _state(stopped)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor))


# ----------------------------------------------------------------------------- against finetune
DIGITS = ("dataset=digits", "scenario.n_tasks=5", "epochs=4", "batch_size=32",
          "logger=none", "trainer.enable_progress_bar=false")
SETTINGS = {  # each method and finetune with the same backbone and optimizer
    "pass": ("optimizer=adam", "optimizer.lr=1e-3"),
    "ssre": ("backbone=resnet32_rep", "backbone.blocks_per_stage=1", "backbone.widths=[16,32]", "optimizer=adam",
             "optimizer.lr=1e-3"),
    "rdfcil": ("backbone=convnet", "backbone.widths=[16,32]", "optimizer.lr=0.05", "method.synthesis_iters=30",
               "method.refine_epochs=2"),
}


@pytest.mark.slow
@pytest.mark.parametrize("method", list(SETTINGS))
def test_beats_finetune_on_split_digits(run, method):
    shared = [s for s in SETTINGS[method] if not s.startswith("method.")]
    finetune, _ = run(*DIGITS, "method=finetune", *shared, tiny=False)
    ours, _ = run(*DIGITS, f"method={method}", *SETTINGS[method], tiny=False)
    assert ours["final_avg_acc_tag"] > finetune["final_avg_acc_tag"], (ours["final_avg_acc_tag"],
                                                                       finetune["final_avg_acc_tag"])
