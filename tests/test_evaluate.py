"""Evaluation: metrics per policy, batching, the `offload-jax evaluate` JSON and table."""

import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from offload_jax import cli, config, evaluate, features, metrics, models, policies, runs
from offload_jax.scenarios.chain import cost

# Same system, pool and batch size N as tests/test_policies.py (compiled programs are reused).
CFG = config.SystemConfig(tasks=4, subcarriers=3)
N = 256


SMALL_MODEL = config.ModelConfig(hidden=(16,), activation="relu", norm="none")


def _model(seed=0):
    return models.PlacementMLP(features.num_features(CFG), (CFG.tasks,), SMALL_MODEL,
                               rngs=nnx.Rngs(seed))


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    from offload_jax import dataset

    out = tmp_path_factory.mktemp("eval") / "ds"
    dataset.generate(out, CFG, N, seed=3, solver="enumerate", progress=False)
    return out


def test_evaluate_policies_metrics_and_batching(dataset_dir):
    from offload_jax import dataset

    data = dataset.load(dataset_dir)
    stats = features.compute_stats(jax.jit(features.raw_features)(data.states))
    pols = {name: policies.make_policy(name) for name in ("optimal_dp", "local", "greedy", "random")}
    student = _model()
    pols["student"] = policies.model_policy(student, stats)
    whole = evaluate.evaluate_policies(data, pols, jax.random.key(0), batch_size=N)
    opt = whole["optimal_dp"]
    # Equal up to float32 rounding of latencies recomputed in another compiled program.
    assert opt["latency_ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    assert opt["latency_ratio_of_means"] == pytest.approx(1.0, abs=1e-6)
    assert opt["accuracy"] == 1.0 and opt["exact_match"] == 1.0 and opt["params"] is None
    assert whole["student"]["params"] == models.count_params(student) > 0
    keys = ("accuracy", "exact_match", "latency_ratio_mean", "latency_ratio_of_means", "latency_mean_s")
    costs = jax.jit(cost.stage_costs)(data.states)
    for name in ("local", "greedy", "student"):
        pred = jax.jit(pols[name].fn)(None, data.states)
        ref = jax.jit(metrics.summary)(costs, pred, data.label, data.latency)
        for key in keys:
            np.testing.assert_allclose(whole[name][key], float(ref[key]), rtol=1e-5, err_msg=key)
        np.testing.assert_allclose(whole[name]["per_task_accuracy"], ref["per_task_accuracy"], rtol=1e-6)
        assert whole[name]["num_states"] == N
    assert whole["local"]["latency_ratio_mean"] > 1.0
    assert whole["random"]["latency_ratio_mean"] > whole["greedy"]["latency_ratio_mean"]
    # Batches are combined exactly (state-weighted means, float64 sums).
    two = {name: pols[name] for name in ("greedy", "random")}
    batched = evaluate.evaluate_policies(data, two, jax.random.key(0), batch_size=N // 2)
    for key in keys:
        np.testing.assert_allclose(batched["greedy"][key], whole["greedy"][key], rtol=1e-6, err_msg=key)
    # The random policy is drawn per batch from fold_in(key, batch): same key, same result.
    again = evaluate.evaluate_policies(data, {"random": pols["random"]}, jax.random.key(0), batch_size=N // 2)
    assert again["random"] == batched["random"]
    with pytest.raises(config.ConfigError, match="batch_size"):
        evaluate.evaluate_policies(data, pols, jax.random.key(0), batch_size=0)


def test_markdown_table():
    row = {"accuracy": 0.5, "exact_match": 0.25, "latency_ratio_mean": 1.5, "latency_ratio_of_means": 1.25}
    table = evaluate.markdown_table({"local": {**row, "params": None}, "s": {**row, "params": 12345}})
    lines = table.splitlines()
    assert lines[0].startswith("| policy | params |") and len(lines) == 4
    assert lines[2] == "| local | - | 0.5000 | 0.2500 | 1.5000 | 1.2500 |"
    assert "| s | 12,345 |" in lines[3]


def test_evaluate_cli_json(dataset_dir, tmp_path, capsys):
    from offload_jax import dataset

    ds = dataset.load(dataset_dir)
    stats = features.compute_stats(jax.jit(features.raw_features)(ds.states))
    model = _model()
    runs.save_run(tmp_path / "runs" / "my_student", model, stats, SMALL_MODEL, CFG, {"kind": "student"})
    out = tmp_path / "out" / "eval.json"
    argv = ["evaluate", "--data", str(dataset_dir), "--runs", str(tmp_path / "runs" / "my_student"),
            "--policies", "local,greedy,optimal_dp,optimal_enumerate", "--json", str(out),
            "--batch-size", str(N // 2)]
    assert cli.main(argv) == 0
    report = json.loads(out.read_text())
    assert list(report["runs"]) == ["local", "greedy", "optimal_dp", "optimal_enumerate", "my_student"]
    for name, r in report["runs"].items():
        for key in ("accuracy", "exact_match", "latency_ratio_mean", "latency_ratio_of_means", "params"):
            assert key in r, (name, key)
    for name in ("optimal_dp", "optimal_enumerate"):
        assert report["runs"][name]["latency_ratio_mean"] == pytest.approx(1.0, abs=1e-6)
        assert report["runs"][name]["latency_ratio_of_means"] == pytest.approx(1.0, abs=1e-6)
        assert report["runs"][name]["exact_match"] == 1.0
    assert report["runs"]["my_student"]["params"] == models.count_params(model)
    assert report["runs"]["local"]["params"] is None and report["num_states"] == N
    assert os.listdir(out.parent) == ["eval.json"]  # atomic write leaves no temporary file
    table = capsys.readouterr().out
    assert "| my_student | " in table and "| optimal_dp | - | 1.0000 | 1.0000 | 1.0000 | 1.0000 |" in table


def test_evaluate_cli_errors(dataset_dir, tmp_path, capsys):
    def fails(argv, message):
        with pytest.raises(SystemExit) as exc:
            cli.main(["evaluate", "--data", str(dataset_dir), *argv])
        assert exc.value.code == 2
        assert message in capsys.readouterr().err

    fails(["--policies", "local,best"], "--policies: unknown or unsupported ['best']")
    fails([], "nothing to evaluate")
    # (a run trained for another T is refused by policies.check_run_matches: tests/test_policies.py)
    fails(["--runs", str(tmp_path / "missing")], "does not exist")
    with pytest.raises(SystemExit) as exc:
        cli.main(["evaluate", "--data", str(tmp_path / "nodata"), "--policies", "local"])
    assert exc.value.code == 2 and "nodata" in capsys.readouterr().err
