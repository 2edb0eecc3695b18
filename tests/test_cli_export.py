"""`offload-jax export` writes a file the numpy runtime loads, deciding as the run's JAX model does."""

import jax
import numpy as np
import pytest
from flax import nnx

from offload_jax import cli, config, export_runtime, features, models, policies, runs, scenarios
from offload_jax.scenarios.chain import system


def test_export_cli_round_trip(tmp_path):
    cfg = config.SystemConfig(tasks=5, subcarriers=4)
    states = system.sample(jax.random.key(0), cfg, 2048)
    stats = features.compute_stats(features.raw_features(states))
    n_in = features.num_inputs(config.STUDENT_MODEL.inputs, config.SystemConfig(tasks=5, subcarriers=4))
    model = models.PlacementMLP(n_in, (5,), config.STUDENT_MODEL, rngs=nnx.Rngs(3))
    run_dir = runs.save_run(tmp_path / "run", model, stats, config.STUDENT_MODEL, cfg, {"kind": "distill"})
    out = tmp_path / "student.npz"
    assert cli.main(["export", "--run", str(run_dir), "--out", str(out)]) == 0

    runtime = export_runtime.load(out)
    run = runs.load_run(run_dir)
    test_states = system.sample(jax.random.key(1), cfg, 1000)
    want = np.asarray(policies.model_policy(run.model, run.stats).fn(None, test_states))
    got = runtime(np.asarray(scenarios.of(cfg).pack(test_states)))
    assert np.mean(got == want) > 0.999


def test_export_cli_missing_run(tmp_path):
    with pytest.raises(SystemExit) as exc:
        cli.main(["export", "--run", str(tmp_path / "nope"), "--out", str(tmp_path / "x.npz")])
    assert exc.value.code == 2
