"""DGR and LwF with synthetic data against finetune on split digits, through the real runner (slow;
its own file so that pytest-xdist's --dist loadfile can run it beside tests/test_exemplar_free.py)."""
import pytest

# Settings under which DGR and LwF with synthetic data beat finetune on split digits on seeds 0-2
# (README, "The replay baselines against finetune"); each deviation from the official code is a named key
# of conf/method/*.yaml.
DGR_DIGITS = ("method=dgr", "method.z_size=32", "method.generator_widths=[16,32,64]", "method.generator_steps=20",
              "method.weight_kl=true", "method.generator_optimizer={_target_:torch.optim.Adam,_partial_:true,lr:0.001}")
LWF_SYNTHETIC_DIGITS = ("method=lwf_synthetic", "method.ce_scope=current", "method.mu=1", "method.synthesis_iters=100",
                        "method.synthesis_batch_size=64")


@pytest.mark.slow
@pytest.mark.parametrize("method, pair, margin", [
    # MLP, 10 epochs; seeds 0-2: 30 to 60 points above finetune
    (DGR_DIGITS, ("epochs=10",), 0.25),
    # convnet, 4 epochs; seeds 0-2: 11 to 24 points above finetune in the install of 2026-12-01; a fresh
    # install (torch 2.14.1, numpy 2.4.6, scikit-learn 1.9.1) gives seed 0 24.81 against 19.63, with
    # the code of that day too: the margin is the smaller one
    (LWF_SYNTHETIC_DIGITS, ("backbone=convnet", "batch_size=32", "epochs=4"), 0.04),
], ids=["dgr", "lwf_synthetic"])
def test_replay_baselines_beat_finetune_on_split_digits(run, method, pair, margin):
    """Cold start, 5 tasks of 2 digits, the pair on the same backbone, optimizer and epochs: the replayed
    (DGR) or synthesised (LwF) images keep the old classes, finetune does not."""
    setting = ("dataset=digits", "scenario.n_tasks=5", "scenario.nc_first_task=null",
               "trainer.limit_train_batches=null", "torch_threads=1", *pair)
    finetune, _ = run("method=finetune", *setting)
    summary, _ = run(*method, *setting)
    assert summary["final_avg_acc_tag"] > finetune["final_avg_acc_tag"] + margin
