"""Evaluation: metrics per policy, batching, the `offload-jax evaluate` JSON and table."""

import json
import os
from typing import NamedTuple

import jax
import numpy as np
import pytest
from flax import nnx

from offload_jax import cli, config, cost, evaluate, features, metrics, models, policies, solvers, system

# Same system, pool and batch size N as tests/test_policies.py (compiled programs are reused).
CFG = config.SystemConfig(tasks=4, subcarriers=3)
N = 256


class _Data(NamedTuple):
    states: system.SystemState
    label: np.ndarray
    latency: np.ndarray


def _data():
    states = jax.jit(system.sample, static_argnums=(1, 2))(jax.random.key(0), CFG, 4096)
    states = jax.tree.map(lambda v: np.asarray(v)[:N], states)
    label, latency = jax.jit(solvers.solve_dp)(jax.jit(cost.stage_costs)(states))
    return _Data(states, np.asarray(label), np.asarray(latency))


def _model(cfg=CFG, seed=0):
    return models.PlacementMLP(features.num_features(cfg.tasks, cfg.subcarriers), cfg.tasks,
                               config.ModelConfig(hidden=(8,), activation="relu", norm="none"),
                               rngs=nnx.Rngs(seed))


def test_evaluate_policies_metrics_and_batching():
    data = _data()
    stats = features.compute_stats(jax.jit(features.raw_features)(data.states))
    pols = {name: policies.make_policy(name) for name in ("optimal_dp", "local", "greedy", "random")}
    student = _model()
    pols["student"] = policies.model_policy(student, stats)
    batched = evaluate.evaluate_policies(data, pols, jax.random.key(0), batch_size=64)  # 4 batches
    opt = batched["optimal_dp"]
    # Equal up to float32 rounding of latencies recomputed in another compiled program.
    assert opt["latency_ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    assert opt["latency_ratio_of_means"] == pytest.approx(1.0, abs=1e-6)
    assert opt["accuracy"] == 1.0 and opt["exact_match"] == 1.0 and opt["params"] is None
    assert batched["student"]["params"] == models.count_params(student) > 0
    costs = jax.jit(cost.stage_costs)(data.states)
    for name in ("local", "greedy", "student"):
        pred = jax.jit(pols[name].fn)(None, data.states)
        ref = jax.jit(metrics.summary)(costs, pred, data.label, data.latency)
        for key in ("accuracy", "exact_match", "latency_ratio_mean", "latency_ratio_of_means",
                    "latency_mean_s"):
            np.testing.assert_allclose(batched[name][key], float(ref[key]), rtol=1e-5, err_msg=key)
        np.testing.assert_allclose(batched[name]["per_task_accuracy"], ref["per_task_accuracy"], rtol=1e-6)
        assert batched[name]["num_states"] == N
    assert batched["local"]["latency_ratio_mean"] > 1.0
    assert batched["random"]["latency_ratio_mean"] > batched["greedy"]["latency_ratio_mean"]
    # The random policy is drawn per batch from fold_in(key, batch): same key, same result.
    again = evaluate.evaluate_policies(data, {"random": pols["random"]}, jax.random.key(0), batch_size=64)
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


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    from offload_jax import dataset

    out = tmp_path_factory.mktemp("eval") / "ds"
    dataset.generate(out, CFG, N, seed=3, solver="enumerate", progress=False)
    return out


def test_evaluate_cli_json(dataset_dir, tmp_path, capsys):
    from offload_jax import dataset, train

    ds = dataset.load(dataset_dir)
    stats = features.compute_stats(jax.jit(features.raw_features)(ds.states))
    model = _model()
    model_cfg = config.ModelConfig(hidden=(8,), activation="relu", norm="none")
    train.save_run(tmp_path / "runs" / "my_student", model, stats, model_cfg, CFG, {"kind": "student"})
    out = tmp_path / "out" / "eval.json"
    argv = ["evaluate", "--data", str(dataset_dir), "--runs", str(tmp_path / "runs" / "my_student"),
            "--policies", "local,greedy,optimal_dp,optimal_enumerate", "--json", str(out),
            "--batch-size", "64"]
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
    from offload_jax import train

    def fails(argv, message):
        with pytest.raises(SystemExit) as exc:
            cli.main(["evaluate", "--data", str(dataset_dir), *argv])
        assert exc.value.code == 2
        assert message in capsys.readouterr().err

    fails(["--policies", "local,best"], "--policies: unknown or unsupported ['best']")
    fails([], "nothing to evaluate")
    other = config.SystemConfig(tasks=5, subcarriers=3)
    stats = features.FeatureStats(np.zeros(features.num_features(5, 3), np.float32),
                                  np.ones(features.num_features(5, 3), np.float32))
    model_cfg = config.ModelConfig(hidden=(8,), activation="relu", norm="none")
    train.save_run(tmp_path / "t4", _model(other), stats, model_cfg, other, {"kind": "student"})
    fails(["--runs", str(tmp_path / "t4")], "run has tasks=5")
    fails(["--runs", str(tmp_path / "missing")], "does not exist")
    with pytest.raises(SystemExit) as exc:
        cli.main(["evaluate", "--data", str(tmp_path / "nodata"), "--policies", "local"])
    assert exc.value.code == 2 and "nodata" in capsys.readouterr().err
