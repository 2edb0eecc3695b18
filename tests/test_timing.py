"""Decision-latency timing: the timed programs decide exactly as the policies do (no speed asserts)."""

import io
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from offload_jax import config, export, export_runtime, features, models, policies, timing
from offload_jax import runs as run_dirs
from offload_jax.droo import DROOConfig
from offload_jax.scenarios.chain import system

CFG = config.SystemConfig(tasks=4, subcarriers=3)
SMALL = config.ModelConfig(hidden=(16, 16), activation="gelu", norm="layer")


@pytest.fixture(scope="module")
def runs():
    states = system.sample(jax.random.key(0), CFG, 512)
    stats = features.compute_stats(jax.jit(features.raw_features)(states))
    out = {}
    for i, name in enumerate(policies.LEARNED_NAMES):
        model = models.PlacementMLP(features.num_features(CFG), (CFG.tasks,), SMALL,
                                    rngs=nnx.Rngs(i))
        meta = {"kind": name}
        if name == "droo":
            meta["droo"] = DROOConfig(model=SMALL).to_dict()
        out[name] = run_dirs.LoadedRun(model=model, stats=stats, model_cfg=SMALL, system=CFG, meta=meta)
    return out


@pytest.fixture(scope="module")
def states():
    return system.sample(jax.random.key(1), CFG, 64)


@pytest.mark.parametrize("name", policies.POLICY_NAMES)
def test_compiled_batch1_packed_policy_decides_as_the_policy(name, runs, states):
    """The timed program (packed vector, batch 1, BATCH1_COMPILER_OPTIONS) == the policy on states."""
    policy = jax.jit(policies.make_policy(name, cfg=CFG, runs=runs).fn)
    key = jax.random.key(3)
    vecs = system.pack(states)
    one = timing.compile_packed(policy, CFG, key, vecs[0])
    batch = np.asarray(policy(key, states))
    for i in range(0, 64, 9):
        got = np.asarray(one(jax.random.key_data(key), vecs[i]))
        assert got.dtype == np.int8 and got.shape == (CFG.tasks,)
        if name == "random":  # its draws depend on the batch shape: compare with a batch of one state
            np.testing.assert_array_equal(got, np.asarray(policy(key, jax.tree.map(lambda a, i=i: a[i:i + 1],
                                                                                   states)))[0])
        else:
            np.testing.assert_array_equal(got, batch[i])


def test_argmax_sites_equals_argmax():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 7, 3)).astype(np.float32)
    logits[:50, :, 1] = logits[:50, :, 0]  # exact ties go to the lowest label
    logits[50:100] = 0.0
    logits[100:150, :, 2] = -np.inf
    logits[150:200, :, 0] = np.inf
    got = np.asarray(policies.argmax_sites(jnp.asarray(logits)))
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, np.argmax(logits, axis=-1))


def test_interleaved_seconds_counts_calls():
    counts = {"a": 0, "b": 0}

    def call(name):
        counts[name] += 1

    times = timing.interleaved_seconds({"a": lambda: call("a"), "b": lambda: call("b")}, per_callable=25,
                                       rounds=4, warmup=2, block_warmup=3)
    assert set(times) == {"a", "b"} and all(t.shape == (25,) and np.all(t >= 0) for t in times.values())
    assert counts["a"] == counts["b"] == 2 + 4 * (7 + 3)  # warmup + rounds * (ceil(25 / 4) + 3 per block)


def test_interleaved_rounds_change_the_order():
    log = []
    calls = {name: (lambda name=name: log.append(name)) for name in "abcd"}
    timing.interleaved_seconds(calls, per_callable=8, rounds=8, warmup=0, block_warmup=0)
    firsts = {tuple(log[i:i + 4]) for i in range(0, 32 * 1, 4)}  # each round: 4 blocks of one call
    assert all(sorted(f) == list("abcd") for f in firsts) and len(firsts) > 1


def test_decision_benchmark_smoke(runs):
    buf = io.BytesIO()
    st = runs["student_kd"]
    np.savez(buf, **export.student_arrays(st.model, st.stats, st.model_cfg, st.system))
    buf.seek(0)
    fns = {n: policies.make_policy(n, cfg=CFG, runs=runs).fn for n in ("local", "student_kd")}
    result = timing.decision_benchmark(fns, CFG, calls=30, batch=16, batch_reps=2, rounds=3,
                                       numpy_student=export_runtime.StudentPolicy(buf), progress=False)
    assert result["tasks"] == CFG.tasks and result["identity"]["calls"] == 30
    assert set(result["policies"]) == {"local", "student_kd"}
    for stats in [*result["policies"].values(), result["numpy_student"]]:
        assert stats["calls"] == 30 and 0 < stats["p50_us"] <= stats["p99_us"]
        assert stats["batch_states_per_s"] > 0
    assert result["settings"]["batch1_compiler_options"] == timing.BATCH1_COMPILER_OPTIONS
    assert result["settings"]["timed_call"] in {"returns when done", "block_until_ready"}
    assert len(result["load_avg_1min"]) == 2


def test_configure_for_latency_before_and_after_backend_start():
    code = ("from offload_jax import timing; import jax, jax.numpy as jnp; "
            "s = timing.configure_for_latency(); assert s['jax_cpu_enable_async_dispatch'] is False, s; "
            "jnp.ones(2).block_until_ready(); timing.configure_for_latency(); "  # same settings: fine
            "jax.config.update('jax_cpu_enable_async_dispatch', True)\n"
            "try:\n    timing.configure_for_latency()\nexcept RuntimeError as e:\n    print('refused:', e)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert "refused: configure_for_latency: JAX's backend already started" in out.stdout


_READY_CODE = """
import sys, jax, jax.numpy as jnp
from offload_jax import timing
if sys.argv[1] == "sync":
    timing.configure_for_latency()
x = jnp.ones((384, 384), jnp.float32)
heavy = jax.jit(lambda a: jnp.tanh(a @ a @ a @ a)).lower(x).compile()  # ~0.2 GFLOP: async if allowed
cheap = jax.jit(lambda a: a[0, :3]).lower(x).compile()
print(timing.returns_when_done({"cheap": cheap}, x),
      timing.returns_when_done({"cheap": cheap, "heavy": heavy}, x))
"""


@pytest.mark.parametrize("mode, expected", [("sync", "True True"), ("async", "True False")])
def test_returns_when_done_tells_synchronous_from_asynchronous_dispatch(mode, expected):
    """The benchmark times calls without block_until_ready only where results are ready on return."""
    out = subprocess.run([sys.executable, "-c", _READY_CODE, mode], check=True, capture_output=True,
                         text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert out.stdout.split() == expected.split()

