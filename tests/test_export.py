"""The numpy-only exported student equals the JAX student."""

import dataclasses
import functools
import io
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from offload_jax import config, export, export_runtime, features, models, scenarios
from offload_jax.scenarios.chain import system


@functools.cache
def _stats(cfg):
    return features.compute_stats(features.raw_features(system.sample(jax.random.key(0), cfg, 4096)))


def _student(cfg, model_cfg, seed=0):
    model = models.PlacementMLP(features.num_inputs(model_cfg.inputs, cfg), (cfg.tasks,),
                                model_cfg, rngs=nnx.Rngs(seed))
    return model, _stats(cfg)


def _runtime(model, stats, model_cfg, cfg):
    buf = io.BytesIO()
    np.savez(buf, **export.student_arrays(model, stats, model_cfg, cfg))
    buf.seek(0)
    return export_runtime.StudentPolicy(buf)


@pytest.mark.parametrize(("model_cfg", "num_states"), [
    (config.STUDENT_MODEL, 10_000),
    (dataclasses.replace(config.STUDENT_MODEL, inputs="all"), 2_000),
    (dataclasses.replace(config.STUDENT_MODEL, inputs="fields"), 2_000),
    (config.ModelConfig(hidden=(32, 16), activation="gelu", norm="layer"), 2_000),
    (config.ModelConfig(hidden=(16,), activation="gelu", norm="layer", inputs="fields"), 2_000),
    (config.ModelConfig(hidden=(24,), activation="silu", norm="none"), 2_000),
    (config.ModelConfig(hidden=(24, 24), activation="relu", norm="none"), 2_000),
    (config.ModelConfig(hidden=(24,), activation="tanh", norm="layer"), 2_000),
])
def test_numpy_student_equals_jax_student(model_cfg, num_states):
    cfg = config.SystemConfig(tasks=6, subcarriers=5)
    model, stats = _student(cfg, model_cfg)
    runtime = _runtime(model, stats, model_cfg, cfg)
    states = system.sample(jax.random.key(123), cfg, num_states)
    packed = np.asarray(scenarios.of(cfg).pack(states))
    n_in = features.num_inputs(model_cfg.inputs, cfg)

    np.testing.assert_allclose(runtime.raw_features(packed), np.asarray(features.raw_features(states, n_in)),
                               rtol=1e-5, atol=1e-5)
    feats_jax = np.asarray(features.features(states, stats, n_in))
    np.testing.assert_allclose(runtime.features(packed), feats_jax, rtol=1e-4, atol=1e-4)

    logits_jax = np.asarray(jax.jit(lambda s: model(features.features(s, stats, n_in)))(states))
    np.testing.assert_allclose(runtime.logits(packed), logits_jax, rtol=1e-3, atol=1e-3)

    pred_jax = np.argmax(logits_jax, axis=-1).astype(np.int8)
    pred_np = runtime(packed)
    assert pred_np.dtype == np.int8 and pred_np.shape == (num_states, cfg.tasks)
    differ = pred_np != pred_jax
    # Placements may differ only where the JAX student's two best logits (nearly) tie.
    top2 = np.sort(logits_jax, axis=-1)[..., -2:]
    gap = top2[..., 1] - top2[..., 0]
    assert np.all(gap[differ] < 1e-3), f"{differ.sum()} decisions differ beyond a tie"
    assert differ.mean() < 1e-3
    # One packed vector at a time (the batch-1 path) decides as the batch does.
    for i in range(0, 50, 7):
        np.testing.assert_allclose(runtime.logits(packed[i]), runtime.logits(packed[i:i + 1])[0],
                                   rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(runtime(packed[i]), pred_np[i])


@pytest.mark.parametrize(("tasks", "subcarriers"), [(1, 1), (10, 8)])
def test_raw_features_any_size(tasks, subcarriers):
    cfg = config.SystemConfig(tasks=tasks, subcarriers=subcarriers)
    model_cfg = config.ModelConfig(hidden=(8,), activation="relu", norm="none")
    states = system.sample(jax.random.key(7), cfg, 256)
    model = models.PlacementMLP(features.num_features(cfg), (tasks,), model_cfg, rngs=nnx.Rngs(0))
    runtime = _runtime(model, features.compute_stats(features.raw_features(states)), model_cfg, cfg)
    assert runtime.num_features == features.num_features(cfg)
    np.testing.assert_allclose(runtime.raw_features(np.asarray(scenarios.of(cfg).pack(states))),
                               np.asarray(features.raw_features(states)), rtol=1e-5, atol=1e-5)


def _reference_activation(name, x):
    if name == "gelu":
        return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))
    return {"relu": lambda v: np.maximum(v, 0.0), "silu": lambda v: v / (1.0 + np.exp(-v)),
            "tanh": np.tanh}[name](x)


@pytest.mark.parametrize("name", ["relu", "gelu", "silu", "tanh"])
@pytest.mark.parametrize("bound", [None, 12.5])
def test_activation_tables_match_formulas(name, bound):
    x = np.linspace(-40.0, 40.0, 200_001) if bound is None else np.linspace(-bound, bound, 200_001)
    got = export_runtime._activation(name, bound)(x.copy())
    np.testing.assert_allclose(got, _reference_activation(name, x), rtol=0, atol=2e-7)


def test_runtime_rejects_other_files(tmp_path):
    path = tmp_path / "not_a_student.npz"
    np.savez(path, meta=np.frombuffer(b'{"format": "something-else"}', dtype=np.uint8))
    with pytest.raises(ValueError, match="not an exported student"):
        export_runtime.StudentPolicy(path)


def test_runtime_imports_no_jax():
    code = ("import sys, offload_jax.export_runtime; "
            "heavy = [m for m in ('jax', 'flax', 'optax', 'orbax') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_packed_layout_matches_scenario_pack():
    cfg = config.SystemConfig(tasks=6, subcarriers=5)
    scenario = scenarios.of(cfg)
    runtime = _runtime(*_student(cfg, config.STUDENT_MODEL), config.STUDENT_MODEL, cfg)
    assert runtime.packed_size == scenario.packed_size
    states = jax.tree.map(lambda a: a[:3], system.sample(jax.random.key(5), cfg, 2_000))
    packed = np.asarray(scenario.pack(states))
    np.testing.assert_array_equal(packed[:, runtime.slices["cloud_delay"]][:, 0],
                                  np.asarray(states.cloud_delay))
    assert jnp.all(scenario.unpack(jnp.asarray(packed)).subcarrier_free == states.subcarrier_free)


def test_single_state_path_decides_as_the_batch_path():
    """The default student's batch-1 path (preallocated buffers) on many states in a row."""
    cfg = config.SystemConfig(tasks=10, subcarriers=8)
    model, stats = _student(cfg, config.STUDENT_MODEL, seed=3)
    runtime = _runtime(model, stats, config.STUDENT_MODEL, cfg)
    assert runtime._one is not None  # the fast path is the one under test
    packed = np.asarray(scenarios.of(cfg).pack(system.sample(jax.random.key(9), cfg, 500)))
    batch = runtime(packed)
    one_by_one = np.stack([runtime(v) for v in packed])
    np.testing.assert_array_equal(one_by_one, batch)
    assert runtime(packed[0]) is not runtime(packed[0])  # a fresh array per decision
    assert runtime(packed[0].astype(np.float64)).tolist() == batch[0].tolist()  # any float input


@pytest.mark.parametrize(("scenario_name", "model_cfg"), [  # the batch-1 fast path, and the general one
    ("dag", config.ModelConfig(hidden=(32, 32), activation="relu", norm="none", decode_steps=3)),
    ("chain", config.ModelConfig(hidden=(16,), activation="gelu", norm="layer", decode_steps=10)),
    ("dag", config.ModelConfig(arch="slots", graph_width=16, graph_layers=2, activation="relu", norm="none",
                               decode_steps=3)),
    ("dag", config.ModelConfig(arch="slots", graph_width=8, graph_layers=1, activation="gelu", norm="none")),
    ("dag", config.ModelConfig(arch="slots", graph_width=16, graph_layers=2, activation="relu", norm="none",
                               decode_steps=4, earlier_mean=True)),
])
def test_numpy_student_decoding_in_steps_equals_jax(scenario_name, model_cfg):
    """A student that decodes in steps: the same logits for any partial placement, and the same
    placements as the JAX policy (`decoding.decide`) but where a confidence or logit nearly ties."""
    from offload_jax import policies  # noqa: PLC0415

    if scenario_name == "chain":
        sc = scenarios.of(config.SystemConfig(tasks=6, subcarriers=5))
    else:
        sc = scenarios.make("dag", {"tasks": 5, "users": 2, "subcarriers": 3, "topology": "file",
                                    "topology_file": "/work/shared/data/alibaba_dags.json"})
    states = jax.jit(sc.sample)(jax.random.key(4), sc.params, jnp.arange(1000, dtype=jnp.uint32))
    stats = features.compute_stats(jax.jit(features.raw_features)(states))
    model = models.build(model_cfg, sc.cfg, rngs=nnx.Rngs(1))
    runtime = _runtime(model, stats, model_cfg, sc.cfg)
    packed = np.asarray(sc.pack(states))
    partial = np.asarray(jax.nn.one_hot(jax.random.randint(jax.random.key(5), states.cycles.shape, 0, 3), 3)
                         * (jax.random.uniform(jax.random.key(6), states.cycles.shape) < 0.5)[..., None])
    want = np.asarray(jax.jit(lambda s, p: model(features.features(s, stats), p))(states, partial))
    np.testing.assert_allclose(runtime.logits(packed, partial), want, rtol=1e-3, atol=1e-3)
    jax_x = np.asarray(jax.jit(policies.model_policy(model, stats).fn)(None, states))
    np_x = runtime(packed)
    assert np_x.dtype == np.int8 and np_x.shape == jax_x.shape
    differ = np.any((np_x != jax_x).reshape(len(np_x), -1), axis=1)
    assert differ.mean() < 5e-3, differ.sum()
    assert np.all(np_x[np.asarray(states.cycles) == 0] == 0)
    # One packed vector decides as the batch does (the single-state path adds the partial kernel's rows
    # as it goes, the batch path multiplies: float32 sums in another order, so a near-tie may differ).
    one = np.stack([runtime(v) for v in packed])
    assert one.dtype == np.int8 and one.shape == np_x.shape
    assert np.any((one != np_x).reshape(len(one), -1), axis=1).sum() <= 2
