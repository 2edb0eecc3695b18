"""The dag features (one recipe for JAX and the numpy runtime) against an obvious per-slot reference, and a
dag student exported to numpy deciding as the JAX student does."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from offload_jax import config, export, export_runtime, features, models, policies, scenarios
from offload_jax.export_runtime import COST_EPS


def _reference(s: dict, u_n: int, t_n: int) -> np.ndarray:
    """One state's features, slot by slot, in the order `export_runtime.dag_feature_layout` documents."""
    s = {k: np.asarray(v, np.float64) for k, v in s.items()}
    eps, log = float(COST_EPS), np.log
    slots, users = [], []
    for u in range(u_n):
        for t in range(t_n):
            c = s["cycles"][u, t]
            slots += [log(c + 1), log(c / s["f_local"][u] + eps), log(c / s["f_edge"] + eps),
                      log(c / s["f_cloud"] + eps), log(s["in_bits"][u, t] + 1),
                      log(s["in_bits"][u, t] / s["rate_up"][u] + eps), log(s["out_bits"][u, t] + 1),
                      log(s["out_bits"][u, t] / s["rate_down"][u] + eps),
                      log(sum(s["edge_bits"][u, i, t] for i in range(t)) + 1),
                      log(sum(s["edge_bits"][u, t, j] for j in range(t + 1, t_n)) + 1),
                      sum(s["adj"][u, i, t] for i in range(t)),
                      sum(s["adj"][u, t, j] for j in range(t + 1, t_n))]
    pairs = [(i, j) for i in range(t_n) for j in range(i + 1, t_n)]
    adjacency = [s["adj"][u, i, j] for u in range(u_n) for i, j in pairs]
    edge_bits = [log(s["edge_bits"][u, i, j] + 1) for u in range(u_n) for i, j in pairs]
    for u in range(u_n):
        users += [log(s["f_local"][u]), log(s["rate_up"][u]), log(s["rate_down"][u])]
    shared = [log(s["f_edge"]), log(s["f_cloud"]), log(s["backhaul_rate"]), s["cloud_delay"],
              s["edge_cores_free"]]
    return np.array(slots + adjacency + edge_bits + users + shared)


@pytest.mark.parametrize("overrides", [{"tasks": 4, "users": 2, "subcarriers": 3},
                                       {"tasks": 6, "topology": "file",
                                        "topology_file": "/work/shared/data/alibaba_dags.json"}])
def test_dag_features_equal_the_reference_in_jax_and_numpy(overrides, tmp_path):
    scenario = scenarios.make("dag", overrides)
    cfg = scenario.cfg
    states = scenario.sample(jax.random.key(3), scenario.params, jnp.arange(24, dtype=jnp.uint32))
    raw = np.asarray(jax.jit(features.raw_features)(states))
    layout = export_runtime.dag_feature_layout(cfg.users, cfg.tasks)
    assert raw.shape == (24, layout["shared"][1]) == (24, features.num_features(cfg))
    arrays = {k: np.asarray(v) for k, v in states._asdict().items()}
    for i in range(24):
        want = _reference({k: v[i] for k, v in arrays.items()}, cfg.users, cfg.tasks)
        np.testing.assert_allclose(raw[i], want, rtol=1e-5, atol=1e-5, err_msg=f"state {i}")
    # The numpy runtime (an exported student) computes the same features from the packed vector.
    stats = features.compute_stats(jnp.asarray(raw))
    model_cfg = config.ModelConfig(hidden=(16, 16), activation="relu", norm="none")
    model = models.build(model_cfg, cfg, rngs=nnx.Rngs(0))
    path = tmp_path / "s.npz"
    np.savez(path, **export.student_arrays(model, stats, model_cfg, cfg))
    runtime = export_runtime.load(path)
    packed = np.asarray(scenario.pack(states))
    np.testing.assert_allclose(runtime.raw_features(packed), raw, rtol=1e-5, atol=1e-5)
    # ... and decides as the JAX student, padding slots on 0 included.
    from offload_jax import runs

    run = runs.LoadedRun(model=model, stats=stats, model_cfg=model_cfg, system=cfg, meta={"kind": "student"})
    jax_pred = np.asarray(policies.make_policy("student_kd", scenario=scenario, runs={"student_kd": run})
                          .fn(jax.random.key(0), states))
    np.testing.assert_array_equal(runtime(packed), jax_pred)
    np.testing.assert_array_equal(runtime(packed[5]), jax_pred[5])


def test_a_run_decides_after_its_training_graphs_are_gone(tmp_path):
    """A run (and a dataset) records the topology file it was made from by path; moved or copied without
    that file, it still loads and decides (deciding draws no graphs), and still refuses data of other
    sizes; drawing states of that system fails, naming the file."""
    from offload_jax import runs
    from offload_jax.scenarios.dag import config as dag_config
    from offload_jax.scenarios.dag import graphs

    graph_file = dag_config.write_topology_file(tmp_path / "train_graphs.json", graphs.mixture(0, 20, 4),
                                                generator="test")
    trained = scenarios.make("dag", {"tasks": 4, "topology": "file", "topology_file": str(graph_file)})
    model_cfg = config.ModelConfig(hidden=(8,), activation="relu", norm="none")
    model = models.build(model_cfg, trained.cfg, rngs=nnx.Rngs(0))
    states = trained.sample(jax.random.key(0), trained.params, jnp.arange(32, dtype=jnp.uint32))
    stats = features.compute_stats(features.raw_features(states))
    runs.save_run(tmp_path / "run", model, stats, model_cfg, trained.cfg, {"kind": "student"})
    layered = scenarios.make("dag", {"tasks": 4})

    def decide(run, scenario):
        policy = policies.make_policy("student_kd", scenario=scenario, runs={"student_kd": run})
        return np.asarray(policy.fn(jax.random.key(0), states))

    before = decide(runs.LoadedRun(model, stats, model_cfg, trained.cfg, {"kind": "student"}), layered)
    graph_file.unlink()
    run = runs.load_run(tmp_path / "run")
    assert run.system.topology_file == str(graph_file)  # the record is left as it was
    np.testing.assert_array_equal(decide(run, layered), before)
    with pytest.raises(config.ConfigError, match="run has scenario=dag, users=1, tasks=4, subcarriers=8, but "
                                                 "the data has scenario=dag, users=1, tasks=5"):
        decide(run, scenarios.make("dag", {"tasks": 5}))
    gone = scenarios.of(trained.cfg)
    assert gone.cfg == trained.cfg and gone.state_shapes() == trained.state_shapes()
    with pytest.raises(config.ConfigError, match=f"topology_file '{graph_file}': not found; states of this "
                                                 "system are drawn from its graphs"):
        gone.sample(jax.random.key(0), gone.params, jnp.arange(2, dtype=jnp.uint32))


def test_a_student_exported_for_one_system_refuses_another_systems_state(tmp_path):
    small, large = scenarios.make("dag", {"tasks": 4}), scenarios.make("dag", {"tasks": 5})
    states = small.sample(jax.random.key(0), small.params, jnp.arange(64, dtype=jnp.uint32))
    stats = features.compute_stats(features.raw_features(states))
    model_cfg = config.ModelConfig(hidden=(8,), activation="relu", norm="none")
    model = models.build(model_cfg, small.cfg, rngs=nnx.Rngs(0))
    np.savez(tmp_path / "s.npz", **export.student_arrays(model, stats, model_cfg, small.cfg))
    runtime = export_runtime.load(tmp_path / "s.npz")
    idx = jnp.arange(2, dtype=jnp.uint32)
    other = np.asarray(large.pack(large.sample(jax.random.key(0), large.params, idx)))
    for packed in (other, other[0]):  # the batch path and the single-state path
        with pytest.raises(ValueError, match=r"exported for scenario dag, users=1, tasks=4.*values\)"):
            runtime(packed)


def test_a_file_exported_with_other_features_is_refused(tmp_path):
    small = scenarios.make("dag", {"tasks": 4})
    states = small.sample(jax.random.key(0), small.params, jnp.arange(64, dtype=jnp.uint32))
    stats = features.compute_stats(features.raw_features(states))
    model_cfg = config.ModelConfig(hidden=(8,), activation="relu", norm="none")
    model = models.build(model_cfg, small.cfg, rngs=nnx.Rngs(0))
    arrays = export.student_arrays(model, stats, model_cfg, small.cfg)
    import json

    meta = json.loads(bytes(arrays["meta"]).decode())
    assert meta["features"] == export_runtime.DAG_FEATURES_VERSION
    np.savez(tmp_path / "now.npz", **arrays)
    export_runtime.load(tmp_path / "now.npz")  # this version's file loads
    meta["features"] = "dag-recipe/1"
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(tmp_path / "old.npz", **arrays)
    with pytest.raises(ValueError, match=r"old.npz: exported with features 'dag-recipe/1', this runtime "
                                         r"computes 'dag-recipe/2'"):
        export_runtime.load(tmp_path / "old.npz")


def test_a_run_trained_on_other_features_is_refused_by_name(tmp_path, monkeypatch):
    """A checkpoint records its feature version; code that computes another one refuses it up front (not
    as an unreadable checkpoint, the arrays' shapes would differ)."""
    from offload_jax import runs

    small = scenarios.make("dag", {"tasks": 3})
    states = small.sample(jax.random.key(0), small.params, jnp.arange(16, dtype=jnp.uint32))
    stats = features.compute_stats(features.raw_features(states))
    model_cfg = config.ModelConfig(hidden=(8,), activation="relu", norm="none")
    model = models.build(model_cfg, small.cfg, rngs=nnx.Rngs(0))
    runs.save_run(tmp_path / "r", model, stats, model_cfg, small.cfg, {"kind": "student"})
    assert runs.load_run(tmp_path / "r").meta["features"]["version"] == export_runtime.DAG_FEATURES_VERSION
    newer = {**features.feature_spec(small.cfg), "version": "dag-recipe/99"}
    monkeypatch.setattr(runs, "feature_spec", lambda cfg: newer)
    with pytest.raises(runs.RunError, match=r"'.*r' was trained on features 'dag-recipe/2'; this version of "
                                            r"offload_jax computes 'dag-recipe/99': train it again"):
        runs.load_run(tmp_path / "r")
