"""The scenario interface (both scenarios behind it), the dag sampler, and dag datasets on disk."""

import json
import os
import subprocess
import sys

import dag_reference as ref
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import four_cpu_devices_env

from offload_jax import dataset, scenarios
from offload_jax.config import ConfigError
from offload_jax.scenarios.chain import system
from offload_jax.scenarios.dag import state as dag_state
from offload_jax.scenarios.dag.config import DagConfig

ALIBABA = "/work/shared/data/alibaba_dags.json"
SCENARIOS = [
    scenarios.make("chain", {"tasks": 4, "subcarriers": 3}),
    scenarios.make("dag", {"tasks": 3, "users": 2, "subcarriers": 2, "w_energy": 0.5}),
]


# The dag case compiles every dag baseline (~37 s, the default run's slowest test): slow. By default its
# parts are covered elsewhere: the dag baselines against the reference (test_evaluate), the packed
# vectors (test_dag_features, test_timing), the exact search against enumeration (test_dag_search).
@pytest.mark.parametrize("scenario", [SCENARIOS[0], pytest.param(SCENARIOS[1], marks=pytest.mark.slow)],
                         ids=lambda s: s.name)
def test_interface_shapes_objective_and_baselines(scenario):
    params, key = scenario.params, jax.random.key(0)
    state = scenario.sample(key, params, jnp.arange(16, dtype=jnp.uint32))
    for name, (shape, dtype) in scenario.state_shapes().items():
        assert getattr(state, name).shape == (16, *shape) and getattr(state, name).dtype == dtype, name
    assert scenario.result_shapes()["label"][0] == scenario.decision_shape
    back = scenario.unpack(scenario.pack(state))  # packed vectors hold states exactly
    assert scenario.pack(state).shape == (16, scenario.packed_size)
    for name in state._fields:
        assert getattr(back, name).dtype == getattr(state, name).dtype, name
        np.testing.assert_array_equal(np.asarray(getattr(back, name)), np.asarray(getattr(state, name)))
    local = scenario.fixed(0, 16)
    obj = scenario.objective(params, state, local)
    assert obj.value.shape == (16,) and np.all(np.isfinite(np.asarray(obj.value)))
    values = {}
    for name, policy in scenario.baselines().items():
        run = policy if getattr(policy, "host", False) else jax.jit(policy)
        x = run(params, key, state)
        assert x.shape == (16, *scenario.decision_shape) and x.dtype == jnp.int8, name
        assert np.all(np.asarray(x)[~np.asarray(scenario.real_mask(state))] == 0), name
        values[name] = np.asarray(scenario.objective(params, state, x).value)
    best = np.min(np.stack(list(values.values())), axis=0)  # the exact ones reach every baseline's least J
    for name in (n for n in values if n.startswith("optimal")):
        np.testing.assert_array_equal(values[name], best)


def test_values_are_call_time_inputs_one_program_for_a_sweep():
    """A sweep over the mean SNR is one vmapped program, not one compilation per point."""
    scenario = SCENARIOS[1]
    points = [scenario.cfg.with_overrides({"mean_snr_db_range": [v, v]}).params() for v in (0.0, 10.0, 20.0)]
    stacked = jax.tree.map(lambda *a: np.stack(a), *points)
    idx = jnp.arange(64, dtype=jnp.uint32)
    before = dag_state.sample_indices._cache_size()
    many = jax.vmap(lambda p: dag_state.sample_indices(jax.random.key(1), scenario.static, p, idx))(stacked)
    for k, p in enumerate(points):  # each point alone: the same program (no new compilation)
        one = dag_state.sample_indices(jax.random.key(1), scenario.static, p, idx)
        np.testing.assert_allclose(np.asarray(many.rate_up[k]), np.asarray(one.rate_up), rtol=1e-6)
    assert dag_state.sample_indices._cache_size() - before <= 2  # the vmapped one and the single one
    assert np.mean(np.asarray(many.rate_up[2])) > 3 * np.mean(np.asarray(many.rate_up[0]))


@pytest.mark.parametrize("overrides", [
    {"topology": "layered", "users": 2},
    {"topology": "chain"},
    {"topology": "file", "topology_file": ALIBABA, "tasks": 8},
    {"topology": "file", "topology_file": ALIBABA, "tasks": 12, "topology_per_state": False, "users": 3},
    {"topology": "layered", "topology_per_state": False, "users": 2, "fat": 0.3, "density": 0.2, "jump": 0},
])
def test_dag_states_obey_the_spec(overrides):
    cfg = DagConfig().with_overrides(overrides)
    states = dag_state.sample(jax.random.key(2), cfg.static(), cfg.params(), 200)
    arrays = {k: np.asarray(v) for k, v in states._asdict().items()}
    for i in range(200):
        ref.check_state(ref.sample(arrays, i), edge_core_hz=cfg.edge_core_hz,
                        subcarrier_bandwidth=cfg.subcarrier_bandwidth, downlink_factor=cfg.downlink_factor)
    real = arrays["cycles"] > 0
    if cfg.topology == "layered":
        assert real.all()  # layered graphs have exactly T sub-tasks
        has_pred = arrays["adj"].any(axis=-2)
        assert has_pred.any(axis=-1).all() and not has_pred[..., 0].any()
    if cfg.topology == "chain":
        np.testing.assert_array_equal(arrays["adj"], np.broadcast_to(np.eye(cfg.tasks, k=1, dtype=bool),
                                                                      arrays["adj"].shape))
    if not cfg.topology_per_state:  # one application for every user of every state
        assert (arrays["adj"] == arrays["adj"][:1, :1]).all()
    elif cfg.topology != "chain":
        assert len({a.tobytes() for a in arrays["adj"].reshape(-1, cfg.tasks, cfg.tasks)}) > 20
    if cfg.topology == "file":
        sizes = real.sum(-1).ravel()
        eligible = {g.tasks for g in cfg.static().graphs}
        assert set(sizes) <= eligible and max(sizes) <= cfg.tasks


def test_states_do_not_depend_on_batch_or_program():
    scenario = SCENARIOS[1]
    key, params = jax.random.key(5), scenario.params
    big = scenario.sample(key, params, jnp.arange(300, dtype=jnp.uint32))
    idx = jnp.asarray([299, 3, 3, 0, 150], jnp.uint32)
    picked = scenario.sample(key, params, idx)
    inside = jax.jit(lambda k: (lambda s: (s, s.cycles.sum()))(
        dag_state.sample_indices(k, scenario.static, scenario.cfg.params(), idx)))(key)[0]
    for name in big._fields:
        np.testing.assert_array_equal(np.asarray(getattr(picked, name)), np.asarray(getattr(big, name))[idx])
        np.testing.assert_array_equal(np.asarray(getattr(inside, name)), np.asarray(getattr(picked, name)))


def test_chain_values_are_call_time_inputs_too():
    cfg = SCENARIOS[0].cfg
    idx = jnp.arange(8, dtype=jnp.uint32)
    a = system.sample_with(jax.random.key(0), system.static_of(cfg), system.params_of(cfg), idx)
    size = system.sample_with._cache_size()
    other = cfg.with_overrides({"backhaul_rate_range": "1e6,2e6"})
    b = system.sample_with(jax.random.key(0), system.static_of(other), system.params_of(other), idx)
    assert system.sample_with._cache_size() == size
    assert np.all(np.asarray(b.backhaul_rate) <= 2e6) and not np.array_equal(a.backhaul_rate, b.backhaul_rate)


# ---------------------------------------------------------------------------------------- dag datasets

DAG = DagConfig(tasks=3, users=2, subcarriers=2, w_energy=0.5)
N, SHARD, SEED = 300, 100, 7


def _gen(out, cfg=DAG, **kw):
    args = dict(num_states=N, seed=SEED, shard_size=SHARD, progress=False)
    args.update(kw)
    return dataset.generate(out, cfg, **args)


@pytest.fixture(scope="module")
def dag_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("dag") / "data"
    _gen(out)
    return out


def _bytes(d):
    names = sorted(f for f in os.listdir(d) if f.endswith(".npz") or f == "manifest.json")
    return {f: (d / f).read_bytes() for f in names}


def test_dag_dataset_follows_the_spec(dag_data):
    manifest = json.loads((dag_data / "manifest.json").read_text())
    assert manifest["format"] == "offload-jax-dataset/2" and manifest["scenario"] == "dag"
    assert (manifest["users"], manifest["tasks"], manifest["solver"]) == (2, 3, "bnb")
    assert set(manifest["system"]) >= {*DagConfig().to_dict(), "topology_file_sha256"}
    ds = dataset.load(dag_data)
    assert ds.label.shape == (N, 2, 3) and ds.label.dtype == np.int8
    assert ds.objective.shape == (N,) and ds.latency.shape == (N, 2) and ds.values["energy"].shape == (N, 2)
    params = DAG.params()
    states = jax.tree.map(jnp.asarray, ds.states)
    for i in range(0, N, 37):  # labels, objective, latency and energy against the slow reference
        d = ref.sample({k: np.asarray(v) for k, v in ds.states._asdict().items()}, i)
        w = {k: getattr(DAG, k) for k in ("w_latency", "w_energy", "kappa", "p_tx", "p_rx")}
        label_ref, j_ref = ref.brute_force_label(d, w)
        np.testing.assert_allclose(ds.objective[i], j_ref, rtol=1e-5)
        j, lat, en = ref.objective(d, ds.label[i], w)
        np.testing.assert_allclose(ds.latency[i], lat, rtol=1e-5)
        np.testing.assert_allclose(ds.values["energy"][i], en, rtol=1e-5)
    obj = scenarios.of(DAG).objective(params, states, jnp.asarray(ds.label))
    np.testing.assert_array_equal(np.asarray(obj.value), ds.objective)  # J(label), bit for bit


@pytest.mark.slow  # the sampler and the search compiled for another batch (~20 s)
def test_dag_dataset_same_bytes_other_batch_size(dag_data, tmp_path):
    _gen(tmp_path / "b64", batch_size=64)
    assert _bytes(tmp_path / "b64") == _bytes(dag_data)


def test_dag_dataset_same_bytes_after_resume(dag_data, tmp_path, monkeypatch):
    real_write, calls = dataset._write_shard, []

    def failing_write(path, arrays):
        calls.append(path)
        if len(calls) > 1:
            raise RuntimeError("injected interruption")
        return real_write(path, arrays)

    monkeypatch.setattr(dataset, "_write_shard", failing_write)
    with pytest.raises(RuntimeError, match="injected"):
        _gen(tmp_path / "resumed")
    monkeypatch.undo()
    _gen(tmp_path / "resumed")
    assert _bytes(tmp_path / "resumed") == _bytes(dag_data)


@pytest.mark.slow  # ~20 s of compiles; the default run compares the two searches directly (test_dag_search)
def test_dag_dataset_of_the_exhaustive_solver_has_the_same_labels(dag_data, tmp_path):
    out = tmp_path / "enum"
    _gen(out, solver="enumerate")
    a, b = dataset.load(dag_data), dataset.load(out)
    np.testing.assert_array_equal(a.label, b.label)  # the pruned search's labels are exhaustive search's
    np.testing.assert_array_equal(a.objective, b.objective)


@pytest.mark.slow  # a fresh process compiles the sharded search (~20 s); two processes: test_multiprocess
def test_dag_dataset_on_four_devices_gives_the_same_bytes(dag_data, tmp_path):
    script = ("import json, sys, jax\n"
              "from offload_jax import dataset\n"
              "from offload_jax.scenarios.dag.config import DagConfig\n"
              "assert jax.device_count() == 4, jax.devices()\n"
              "cfg = DagConfig.from_dict(json.loads(sys.argv[2]))\n"
              f"dataset.generate(sys.argv[1], cfg, {N}, {SEED}, shard_size={SHARD}, batch_size=40, "
              "progress=False)\n")
    env = four_cpu_devices_env()
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "d4"), json.dumps(DAG.to_dict())],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert _bytes(tmp_path / "d4") == _bytes(dag_data)


@pytest.mark.parametrize("overrides, named", [
    ({"users": 0}, "users"), ({"topology": "tree"}, "topology"), ({"w_latency": 0}, "w_latency"),
    ({"w_energy": -1}, "w_energy"), ({"kappa": 0, "w_energy": 1}, "kappa"), ({"density": 2}, "density"),
    ({"topology": "file"}, "topology_file"), ({"edge_bits_range": "5,1"}, "edge_bits_range"),
    ({"nonsense": 1}, "nonsense"), ({"topology_per_state": "maybe"}, "topology_per_state"),
])
def test_bad_dag_systems_are_refused_naming_the_field(overrides, named):
    with pytest.raises(ConfigError, match=named):
        scenarios.make("dag", overrides)


def test_bad_topology_files_are_refused_before_anything_is_written(tmp_path):
    cases = {"missing": None, "not json": "nope", "format": '{"format": "x", "graphs": []}',
             "edge": '{"format": "offload-jax-topologies/1", "graphs": [{"name": "g", "tasks": 3, '
                     '"edges": [[2, 1]]}]}',
             "range": '{"format": "offload-jax-topologies/1", "graphs": [{"name": "g", "tasks": 3, '
                      '"edges": [[0, 3]]}]}',
             "too big": '{"format": "offload-jax-topologies/1", "graphs": [{"name": "g", "tasks": 30, '
                        '"edges": []}]}'}
    for name, text in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.json"
        if text is not None:
            path.write_text(text)
        with pytest.raises(ConfigError, match="topology_file"):
            cfg = DagConfig().with_overrides({"topology": "file", "topology_file": str(path)})
            dataset.generate(tmp_path / "out", cfg, 10, 0, progress=False)
        assert not (tmp_path / "out").exists(), name
    with pytest.raises(ConfigError, match="enumerate solver accepts at most 14"):
        dataset.generate(tmp_path / "out", DagConfig(tasks=8, users=2), 10, 0, "enumerate")
    with pytest.raises(ConfigError, match="one of"):
        dataset.generate(tmp_path / "out", DagConfig(), 10, 0, "dp")
    assert not (tmp_path / "out").exists()
