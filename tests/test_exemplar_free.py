"""FeTrIL, FeCAM, LwF with synthetic data and DGR: their statistics against hand computation, and each
end to end through the real runner (warm and cold start, resume, results.json's memory)."""
from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest
import torch

from lifelong import resume as checkpoints
from lifelong.methods.fecam import FeCAM, correlation, shrink, tukey
from lifelong.methods.fetril import nearest_new_class, pseudo_features
from lifelong.models.backbones import mlp
from lifelong.prototypes import class_means, covariance

METHODS = ["fetril", "fecam", "lwf_synthetic", "dgr"]
# Shorter loops for the tests: 3 generator iterations (ABD's synthesis), a small VAE code (DGR).
FAST = {"lwf_synthetic": "method.synthesis_iters=3", "dgr": "method.z_size=32"}


def results(run_dir):
    return json.loads((run_dir / "results.json").read_text())


# ----------------------------------------------------------------------------- statistics by hand
def test_class_means_and_covariance_match_hand_computation():
    features = torch.tensor([[1.0, 2.0], [3.0, 6.0], [0.0, 1.0], [2.0, 2.0], [4.0, 0.0]])
    labels = torch.tensor([5, 5, 7, 7, 7])
    means = class_means(features, labels, [5, 7])
    assert torch.allclose(means, torch.tensor([[2.0, 4.0], [2.0, 1.0]]))
    # class 7: deviations (-2, 0), (0, 1), (2, -1); unbiased covariance = sum of outer products / 2
    expected = torch.tensor([[8.0, -2.0], [-2.0, 2.0]], dtype=torch.float64) / 2
    assert torch.allclose(covariance(features[labels == 7]), expected)
    assert np.allclose(covariance(features).numpy(), np.cov(features.numpy().T))


def test_fetril_pseudo_features_are_translated_from_the_nearest_new_class():
    # old classes 0, 1; new classes 2, 3. Means: mu_0 = (0, 0) is nearest to mu_3 = (1, 0), mu_1 = (9, 9) to mu_2.
    new_features = torch.tensor([[10.0, 8.0], [8.0, 10.0], [0.0, 1.0], [2.0, -1.0], [1.0, 0.0]])
    labels = torch.tensor([2, 2, 3, 3, 3])
    means = torch.cat([torch.tensor([[0.0, 0.0], [9.0, 9.0]]), class_means(new_features, labels, [2, 3])])
    assert nearest_new_class(means[:2], means[2:]).tolist() == [1, 0]
    pseudo, pseudo_labels = pseudo_features(new_features, labels, means, n_old=2)
    assert pseudo_labels.tolist() == [0, 0, 0, 1, 1]
    # f_old = f_new - mu_new + mu_old, for every real feature of the partner class
    expected_0 = new_features[2:] - means[3] + means[0]
    expected_1 = new_features[:2] - means[2] + means[1]
    assert torch.allclose(pseudo, torch.cat([expected_0, expected_1]))
    assert torch.allclose(pseudo[pseudo_labels == 0].mean(0), means[0])  # the old mean is restored exactly
    # PyCIL's cosine pairing may pick differently: (0, 0) has no direction, (9, 9) is closest in angle to mu_2
    assert nearest_new_class(means[1:2], means[2:], "cosine").tolist() == [0]


def test_fecam_shrinkage_and_correlation_by_hand():
    cov = torch.tensor([[4.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    # mean diagonal 3, mean off-diagonal 1: + 3 on the diagonal, + 1 off it
    assert torch.allclose(shrink(cov), torch.tensor([[7.0, 2.0], [2.0, 5.0]], dtype=torch.float64))
    assert torch.allclose(correlation(torch.tensor([[4.0, 1.0], [1.0, 1.0]])), torch.tensor([[1.0, 0.5], [0.5, 1.0]]))


def test_fecam_mahalanobis_prediction_matches_a_direct_computation():
    torch.manual_seed(0)
    method = FeCAM(mlp(1, 4, (6,)), optimizer=partial(torch.optim.SGD, lr=0.1))
    method.net.add_head(2)
    method.net.add_head(1)  # two tasks: the Mahalanobis rule predicts
    x_train = torch.rand(30, 1, 4, 4)
    with torch.no_grad():
        feats = method.net.features(x_train)
    labels = torch.arange(30) % 3
    method.class_means = class_means(feats, labels, [0, 1, 2])
    method.precisions = torch.stack([method.precision(feats[labels == c]) for c in range(3)])

    x = torch.rand(7, 1, 4, 4)
    with torch.no_grad():
        scores = method.task_agnostic_logits(x)
    # the official recipe, written out with numpy, class by class
    with torch.no_grad():
        v = method.net.features(x).double().numpy()
    v = v / (np.linalg.norm(v, axis=1, keepdims=True) + 1e-8)
    v = np.sqrt(v)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    distances = []
    for c in range(3):
        f = np.sqrt(feats[labels == c].double().numpy())
        cov = np.cov(f.T)
        for _ in range(2):
            off = cov - np.diag(np.diag(cov))
            off_mean = off[off != 0].mean()
            cov = cov + np.mean(np.diag(cov)) * np.eye(6) + off_mean * (1 - np.eye(6))
        sd = np.sqrt(np.diag(cov))
        cov = cov / np.outer(sd, sd)
        mu = np.sqrt(feats[labels == c].double().numpy().mean(0))
        mu = mu / np.linalg.norm(mu)
        diff = v - mu
        distances.append(np.einsum("bd,de,be->b", diff, np.linalg.pinv(cov), diff))
    distances = np.stack(distances, 1)
    assert np.allclose(-scores.double().numpy(), distances, rtol=1e-4, atol=1e-5)
    assert (scores.argmax(1).numpy() == distances.argmin(1)).all()
    # TAW restricts the argmin to the task's classes
    with torch.no_grad():
        assert torch.equal(method.task_aware_logits(x, 0), scores[:, :2])
    assert tukey(torch.tensor([4.0]), 0.5).item() == 2.0


# ----------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("method", METHODS)
def test_warm_start_end_to_end_and_resume_is_bit_identical(run, stopped_and_resumed, method):
    """Warm start (4 + 3 + 3 classes), then the same run interrupted after task 1 and resumed."""
    overrides = (f"method={method}", FAST.get(method, "seed=0"))
    summary, full_dir = run(*overrides)
    full = results(full_dir)
    assert full["tasks_done"] == 3
    for t in range(3):
        assert summary["acc_taw"][t][t] > 1.0 / [4, 3, 3][t]
    memory = full["memory"]
    assert memory["stored_images"] == 0 and memory.get("bytes", memory.get("generator_bytes")) > 0
    state = torch.load(full_dir / checkpoints.LAST, weights_only=False)["state_dict"]
    if method == "fetril":
        assert state["class_means"].shape[0] == 10 and memory["class_means"] == 10
    if method == "fecam":
        assert state["precisions"].shape[:1] == (10,) and memory["covariance_matrices"] == 10
        # after task 0 nothing an old class owns changes: its task-aware accuracy is constant
        taw = summary["acc_taw"]
        assert taw[1][0] == taw[2][0] and taw[1][1] == taw[2][1]
    if method == "dgr":
        assert any(k.startswith("old_generator.") for k in state)
        assert memory["generator_parameters"] == sum(v.numel() for k, v in state.items()
                                                      if k.startswith("generator."))

    stopped_dir = stopped_and_resumed(*overrides)
    resumed = results(stopped_dir)
    for key in ("acc_taw", "acc_tag", "acc_tag_all", "memory"):
        assert resumed[key] == full[key], key
    resumed_state = torch.load(stopped_dir / checkpoints.LAST, weights_only=False)["state_dict"]
    assert resumed_state.keys() == state.keys()
    assert all(torch.equal(resumed_state[k], v) for k, v in state.items() if isinstance(v, torch.Tensor))


@pytest.mark.parametrize("method", METHODS)
def test_cold_start_end_to_end(run, method):
    summary, _ = run(f"method={method}", "scenario.nc_first_task=null", "scenario.n_tasks=2",
                     FAST.get(method, "seed=0"))
    assert summary["tasks_done"] == 2 and summary["task_sizes"] == [5, 5]
    assert summary["acc_taw"][1][1] > 0.2


@pytest.mark.slow
def test_frozen_backbone_methods_beat_finetune_on_split_digits(run):
    """Cold start, 5 tasks of 2 digits, 5 epochs: FeTrIL and FeCAM keep the old classes, finetune does not."""
    setting = ("dataset=digits", "scenario.n_tasks=5", "scenario.nc_first_task=null", "epochs=5",
               "trainer.limit_train_batches=null")
    finetune, _ = run("method=finetune", *setting)
    for method in ("fetril", "fecam"):
        summary, _ = run(f"method={method}", *setting)
        assert summary["final_avg_acc_tag"] > finetune["final_avg_acc_tag"] + 0.2, method


def test_vae_kl_is_weighted_per_sample_only_with_weight_kl():
    from lifelong.models.vae import VAE

    torch.manual_seed(0)
    vae, x, weights = VAE(8, 1, 4, (4, 4, 8)).eval(), torch.rand(3, 1, 8, 8), torch.tensor([0.2, 0.2, 0.8])
    _, mu, logvar = vae(x)
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1) / 64
    assert torch.allclose(vae.loss_terms(x, weights)["kl"], kl.mean())
    assert torch.allclose(vae.loss_terms(x, weights, weight_kl=True)["kl"], (kl * weights).mean())
    assert torch.equal(vae.loss_terms(x, weights)["recon"], vae.loss_terms(x, weights, weight_kl=True)["recon"])
