"""The numpy-only exported student equals the JAX student."""

import io
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from offload_jax import config, export, export_runtime, features, models, system


def _student(cfg, model_cfg, seed=0):
    states = system.sample(jax.random.key(seed), cfg, 4096)
    stats = features.compute_stats(features.raw_features(states))
    model = models.PlacementMLP(features.num_features(cfg.tasks, cfg.subcarriers), cfg.tasks,
                                model_cfg, rngs=nnx.Rngs(seed))
    return model, stats


def _runtime(model, stats, model_cfg, cfg):
    buf = io.BytesIO()
    np.savez(buf, **export.student_arrays(model, stats, model_cfg, cfg))
    buf.seek(0)
    return export_runtime.StudentPolicy(buf)


@pytest.mark.parametrize("model_cfg", [
    config.STUDENT_MODEL,
    config.ModelConfig(hidden=(32, 16), activation="gelu", norm="layer"),
    config.ModelConfig(hidden=(24,), activation="silu", norm="none"),
])
def test_numpy_student_equals_jax_student(model_cfg):
    cfg = config.SystemConfig(tasks=6, subcarriers=5)
    model, stats = _student(cfg, model_cfg)
    runtime = _runtime(model, stats, model_cfg, cfg)
    states = system.sample(jax.random.key(123), cfg, 10_000)
    packed = np.asarray(system.pack(states))

    feats_jax = np.asarray(features.features(states, stats))
    np.testing.assert_allclose(runtime.features(packed), feats_jax, rtol=1e-4, atol=1e-4)

    logits_jax = np.asarray(jax.jit(lambda s: model(features.features(s, stats)))(states))
    np.testing.assert_allclose(runtime.logits(packed), logits_jax, rtol=1e-3, atol=1e-3)

    pred_jax = np.argmax(logits_jax, axis=-1).astype(np.int8)
    pred_np = runtime(packed)
    assert pred_np.dtype == np.int8 and pred_np.shape == (10_000, cfg.tasks)
    differ = pred_np != pred_jax
    # Placements may differ only where the JAX student's two best logits (nearly) tie.
    top2 = np.sort(logits_jax, axis=-1)[..., -2:]
    gap = top2[..., 1] - top2[..., 0]
    assert np.all(gap[differ] < 1e-3), f"{differ.sum()} decisions differ beyond a tie"
    assert differ.mean() < 1e-3
    # A single packed vector gives a single placement.
    np.testing.assert_array_equal(runtime(packed[7]), pred_np[7])


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


def test_packed_layout_matches_system_pack():
    cfg = config.SystemConfig(tasks=4, subcarriers=3)
    model, stats = _student(cfg, config.STUDENT_MODEL)
    runtime = _runtime(model, stats, config.STUDENT_MODEL, cfg)
    assert runtime.packed_size == system.packed_size(cfg)
    states = system.sample(jax.random.key(5), cfg, 3)
    packed = np.asarray(system.pack(states))
    np.testing.assert_array_equal(packed[:, runtime.slices["cloud_delay"]][:, 0],
                                  np.asarray(states.cloud_delay))
    assert jnp.all(system.unpack(jnp.asarray(packed), cfg).subcarrier_free == states.subcarrier_free)
