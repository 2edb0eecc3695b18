"""Decision-latency timing: the timed programs decide exactly as the policies do (no speed asserts)."""

import io
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from offload_jax import (
    config,
    decoding,
    export,
    export_runtime,
    features,
    models,
    policies,
    scenarios,
    timing,
)
from offload_jax import runs as run_dirs
from offload_jax.droo import DROOConfig
from offload_jax.scenarios.chain import system

CFG = config.SystemConfig(tasks=4, subcarriers=3)
SCENARIO = scenarios.of(CFG)
# tests/test_scenarios.py's dag system: its sampler at 16 states is compiled once.
DAG = scenarios.make("dag", {"tasks": 4, "users": 2, "subcarriers": 3, "w_energy": 0.5})
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


@pytest.mark.parametrize("name", policies.policy_names(SCENARIO))
def test_compiled_batch1_packed_policy_decides_as_the_policy(name, runs, states):
    """The timed program (packed vector, batch 1, BATCH1_COMPILER_OPTIONS) == the policy on states."""
    policy = jax.jit(policies.make_policy(name, scenario=SCENARIO, runs=runs).fn)
    _check_batch1_program(SCENARIO, policy, name, states)


@pytest.mark.parametrize("name", ["local", "greedy"])
def test_compiled_batch1_packed_dag_policy_decides_as_the_policy(name):
    states = DAG.sample(jax.random.key(1), DAG.params, jnp.arange(16, dtype=jnp.uint32))
    _check_batch1_program(DAG, jax.jit(policies.make_policy(name, scenario=DAG).fn), name, states)


def _check_batch1_program(scenario, policy, name, states):
    key = jax.random.key(3)
    vecs = scenario.pack(states)
    one = timing.compile_packed(policy, scenario, key, vecs[0])
    batch = np.asarray(policy(key, states))
    for i in range(0, states.cycles.shape[0], 9):
        got = np.asarray(one(jax.random.key_data(key), vecs[i]))
        assert got.dtype == np.int8 and got.shape == scenario.decision_shape
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
    got = np.asarray(decoding.argmax_sites(jnp.asarray(logits)))
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


def test_interleaved_seconds_warms_slow_callables_once_a_block():
    counts = {"fast": 0, "slow": 0}

    def call(name):
        counts[name] += 1
        if name == "slow":
            time.sleep(0.004)

    timing.interleaved_seconds({n: (lambda n=n: call(n)) for n in counts}, per_callable=4, rounds=2,
                               warmup=2, block_warmup=3, slow_s=0.002)
    assert counts == {"fast": 2 + 2 * (2 + 3), "slow": 2 + 2 * (2 + 1)}


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
    pols = {n: policies.make_policy(n, scenario=SCENARIO, runs=runs) for n in ("local", "student_kd")}
    result = timing.decision_benchmark(pols, SCENARIO, calls=30, batch=16, batch_reps=2, rounds=3,
                                       numpy_student=export_runtime.StudentPolicy(buf), progress=False)
    assert result["tasks"] == CFG.tasks and result["identity"]["calls"] == 30
    assert (result["scenario"], result["decision_shape"]) == ("chain", [CFG.tasks])
    assert set(result["policies"]) == {"local", "student_kd"}
    assert {s["timed_as"] for s in result["policies"].values()} == {"compiled program"}
    for stats in [*result["policies"].values(), result["numpy_student"]]:
        assert stats["calls"] == 30 and 0 < stats["p50_us"] <= stats["p99_us"]
        assert stats["batch_states_per_s"] > 0
    assert result["settings"]["batch1_compiler_options"] == timing.BATCH1_COMPILER_OPTIONS
    assert result["settings"]["timed_call"] in {"returns when done", "block_until_ready"}
    assert len(result["load_avg_1min"]) == 2


def _host_greedy():
    """A host driver standing in for dag's exact search (slow to compile): Python around a compiled
    program, with numpy output."""
    greedy = jax.jit(policies.make_policy("greedy", scenario=DAG).fn)
    return policies.Policy("host_greedy", lambda key, state: np.asarray(greedy(key, state)), host=True)


def test_decision_benchmark_times_host_drivers_on_the_packed_vector():
    pols = {"local": policies.make_policy("local", scenario=DAG), "host_greedy": _host_greedy()}
    result = timing.decision_benchmark(pols, DAG, calls=20, batch=16, batch_reps=2, rounds=2, progress=False)
    assert (result["scenario"], result["decision_shape"], result["tasks"]) == ("dag", [2, 4], 4)
    assert result["policies"]["local"]["timed_as"] == "compiled program"
    assert result["policies"]["host_greedy"]["timed_as"] == "host driver (Python callable)"
    for stats in result["policies"].values():
        assert stats["calls"] == 20 and 0 < stats["p50_us"] <= stats["p99_us"]
        assert stats["batch_states_per_s"] > 0
    # host_batch=False: the host driver's batch throughput left out, the compiled program's measured
    lean = timing.decision_benchmark(pols, DAG, calls=4, batch=16, batch_reps=1, rounds=1, host_batch=False,
                                     progress=False)["policies"]
    assert lean["host_greedy"]["batch_states_per_s"] is None and lean["host_greedy"]["calls"] == 4
    assert lean["local"]["batch_states_per_s"] > 0
    # The timed call decides from the packed vector as the policy does from the state.
    states = DAG.sample(jax.random.key(1), DAG.params, jnp.arange(16, dtype=jnp.uint32))
    vecs = np.asarray(DAG.pack(states))
    key = jax.random.key(0)
    want = np.asarray(pols["host_greedy"](key, states))
    np.testing.assert_array_equal(timing.host_packed(pols["host_greedy"], DAG, key, vecs[3])(), want[3:4])
    np.testing.assert_array_equal(timing.host_packed(pols["host_greedy"], DAG, key, vecs)(), want)


def test_decision_benchmark_cycles_through_states():
    """With states=K every batch-1 callable decides the batch's first K states in turn (a search's
    time depends on the state); a bad K is refused."""
    greedy = jax.jit(policies.make_policy("greedy", scenario=DAG).fn)
    seen = []

    def spy(key, state):
        seen.append((state.cycles.shape[0], round(float(np.asarray(state.cycles).sum()), -3)))
        return np.asarray(greedy(key, state))

    pols = {"local": policies.make_policy("local", scenario=DAG),
            "spy": policies.Policy("spy", spy, host=True)}
    result = timing.decision_benchmark(pols, DAG, calls=20, batch=16, batch_reps=2, rounds=2, states=4,
                                       progress=False)
    assert result["settings"]["states"] == 4 and result["policies"]["spy"]["calls"] == 20
    idx = jnp.arange(16, dtype=jnp.uint32)
    states = DAG.sample(jax.random.fold_in(jax.random.key(0), 1), DAG.params, idx)
    want = {(1, round(float(c), -3)) for c in np.asarray(states.cycles).reshape(16, -1).sum(axis=1)[:4]}
    assert {s for s in seen if s[0] == 1} == want
    for bad in (0, 17, True):
        with pytest.raises(ValueError, match=r"states must be an integer in \[1, batch=16\]"):
            timing.decision_benchmark(pols, DAG, calls=2, batch=16, states=bad, progress=False)


@pytest.mark.slow  # compiles the exact search for 1 and 16 states (~1-2 min on 2 shared cores), times it
def test_decision_benchmark_times_the_dag_optimum():
    optimal = policies.make_policy("optimal", scenario=DAG)
    result = timing.decision_benchmark({"optimal": optimal}, DAG, calls=10, batch=16, batch_reps=2, rounds=2,
                                       progress=False)
    assert result["policies"]["optimal"]["timed_as"] == "host driver (Python callable)"
    states = DAG.sample(jax.random.key(1), DAG.params, jnp.arange(16, dtype=jnp.uint32))
    one = timing.host_packed(optimal, DAG, jax.random.key(0), np.asarray(DAG.pack(states))[5])()
    np.testing.assert_array_equal(one, np.asarray(optimal(None, states))[5:6])


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

