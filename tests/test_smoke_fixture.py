def test_tiny_lwf_run_leaves_results(run):
    summary, out = run("method=lwf", "backbone=mlp")
    assert summary["tasks_done"] == 3
    assert (out / "results.json").is_file()
