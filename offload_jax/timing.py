"""Decision latency: how long a policy takes to decide, measured the same way for every policy.

The timed input is one state packed into a single float32 vector already on the
device (`Scenario.pack`): what an end device holds after measuring. Every JAX policy is
AOT-compiled (`jax.jit(...).lower(...).compile()`), warmed up, then called many times,
each call timed alone until its result is ready: with synchronous dispatch (the CPU with
`LATENCY_SETTINGS`) a call returns when its program has run, which the benchmark checks
before timing (`returns_when_done`); otherwise each call ends with `block_until_ready()`.
Every program (the identity too) takes the
random key as its raw bits (uint32), then the vector. A compiled identity function on the
same input gives the overhead floor. The exported numpy student, and every host driver (a policy
that cannot be jitted, `Policy.host`: dag's exact search), are timed as Python callables on the same
vector as a numpy array. The callables are timed in interleaved rounds (identity,
policy 1, policy 2, ..., numpy student, then again), so that a change of machine
load during the run moves every policy alike and the ratios hold.
Used by `benchmarks/bench_decision.py` and the quickstart.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import platform
import time
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from offload_jax.policies import Policy, PolicyFn, packed
from offload_jax.scenarios.base import Scenario

# JAX settings of a decision-latency process, the same for every policy. JAX's CPU client
# runs a program it deems expensive (one with a dot, or over ~1000 elements: every learned
# policy, not the identity) on a worker thread while the caller waits: a thread hand-off per
# call, measured at +50 to +100 us per call on the loaded 2-core CPU here (openxla/xla#18608).
# A device deciding one state at a time runs the program on the calling thread.
LATENCY_SETTINGS = {"jax_cpu_enable_async_dispatch": False}
# XLA options of every batch-1 program (policies and identity alike). The tree reduction
# rewriter splits each reduction into a reduce-window and a reduce, which pays off on long
# rows; at batch 1 the reductions are tiny (LayerNorm over 64 units) and the split only adds
# kernels (61 -> 44 in the default student, about 10% of its time; decisions unchanged).
BATCH1_COMPILER_OPTIONS = {"xla_disable_hlo_passes": "tree_reduction_rewriter"}


def _backend_started() -> bool:
    from jax._src import xla_bridge  # noqa: PLC0415 (no public API tells whether the backend started)

    started = getattr(xla_bridge, "backends_are_initialized", None)
    return started() if started is not None else bool(getattr(xla_bridge, "_backends", None))


def configure_for_latency() -> dict:
    """Apply LATENCY_SETTINGS to this process; call it before JAX's backend starts (first array/jit).

    Raises RuntimeError if the backend already runs with other settings (they would not apply).
    Returns the settings in effect.
    """
    # An option this JAX no longer has is skipped (nothing to set).
    values = jax.config.values
    differ = {k: v for k, v in LATENCY_SETTINGS.items() if k in values and values[k] != v}
    if differ and _backend_started():
        raise RuntimeError(f"configure_for_latency: JAX's backend already started; {differ} must be set "
                           "before the first JAX computation of the process")
    for name, value in differ.items():
        jax.config.update(name, value)
    return settings()


def settings(batch1_options: Mapping[str, object] = BATCH1_COMPILER_OPTIONS) -> dict:
    """The process settings a decision-latency result depends on (recorded in its JSON)."""
    return {**{k: jax.config.values.get(k) for k in LATENCY_SETTINGS},
            "batch1_compiler_options": dict(batch1_options), "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}


def device_description() -> str:
    d = jax.devices()[0]
    kind = getattr(d, "device_kind", d.platform)
    cpu = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores"
    return f"{d.platform}: {kind} x{jax.device_count()} ({cpu}); jax {jax.__version__}"


def per_call_seconds(call: Callable[[], object], calls: int, warmup: int = 50) -> np.ndarray:
    """Wall time of each of `calls` calls (after `warmup` untimed ones); `call` must return when its
    work is done."""
    for _ in range(warmup):
        call()
    out = np.empty(calls)
    clock = time.perf_counter
    for i in range(calls):
        t0 = clock()
        call()
        out[i] = clock() - t0
    return out


def interleaved_seconds(calls: Mapping[str, Callable[[], object]], per_callable: int, rounds: int,
                        warmup: int = 50, progress: bool = False, block_warmup: int = 10,
                        seed: int = 0, slow_s: float = 1e-3) -> dict[str, np.ndarray]:
    """Per-call wall times of every callable, `per_callable` calls each, in `rounds` interleaved blocks.

    Each block starts with `block_warmup` untimed calls, and every round takes the callables in a new
    (seeded) order: a call right after a heavy one (the teacher evicts ~2 MB of weights) runs cold,
    measured +30% for the first calls of a block, and a fixed order would always charge it to the
    same callable. A callable whose `warmup` calls take `slow_s` or more (median) gets one untimed
    call a block: a cold start's tens of microseconds are noise there, and ten untimed calls of the
    exact search (~10 ms each) a block cost ~20 s per 200 blocks in the dag quickstart.
    """
    block = math.ceil(per_callable / rounds)
    names = list(calls)
    times: dict[str, list[np.ndarray]] = {name: [] for name in names}
    block_warmups = {}
    for name, call in calls.items():
        first = per_call_seconds(call, warmup, warmup=0)
        slow = warmup > 0 and float(np.median(first)) >= slow_s
        block_warmups[name] = min(block_warmup, 1) if slow else block_warmup
    order_rng = np.random.default_rng(seed)
    for _ in tqdm(range(rounds), desc="timing rounds", disable=not progress, unit="round"):
        for i in order_rng.permutation(len(names)):
            name = names[i]
            times[name].append(per_call_seconds(calls[name], block, warmup=block_warmups[name]))
    return {name: np.concatenate(t)[:per_callable] for name, t in times.items()}


def returns_when_done(programs: Mapping[str, Callable], *args, tries: int = 3) -> bool:
    """Whether every compiled program's result is ready the moment its call returns (`tries` calls each).

    True with synchronous dispatch (the CPU client with `jax_cpu_enable_async_dispatch=False`,
    `LATENCY_SETTINGS`), where a call runs its program on the calling thread: a timed call then
    needs no `block_until_ready()`, a Python method (~1.2 us here) that would only find the
    result ready. False where a program runs asynchronously (a GPU, or the CPU client's worker
    thread): then every timed call blocks.
    """
    return all(program(*args).is_ready() for program in programs.values() for _ in range(tries))


def latency_stats(seconds: np.ndarray) -> dict[str, float]:
    us = seconds * 1e6
    return {"p50_us": float(np.percentile(us, 50)), "p99_us": float(np.percentile(us, 99)),
            "mean_us": float(us.mean()), "calls": int(us.size)}


def _raw_key(fn: Callable, impl) -> Callable:
    """`fn(key, vec)` as a program of the key's raw bits: a typed key array costs ~1 us more per call."""
    return lambda key_data, vec: fn(jax.random.wrap_key_data(key_data, impl=impl), vec)


def compile_packed(policy: PolicyFn, scenario: Scenario, key: jax.Array, vec: jax.Array,
                   batch1_options: Mapping[str, object] = BATCH1_COMPILER_OPTIONS):
    """AOT-compiled `policy` (jittable) on packed input (`scenario.pack`): one vector (P,) ->
    (*decision_shape) (compiled with `batch1_options`), or a batch (n, P) -> (n, *decision_shape)
    (XLA's defaults).

    The program takes the key as its raw bits, `jax.random.key_data(key)` (what a device keeps
    of its random state), then the packed vector(s).
    """
    fn, impl = packed(policy, scenario), jax.random.key_impl(key)
    key_data = jax.random.key_data(key)
    if vec.ndim == 1:
        one = _raw_key(lambda k, v: fn(k, v[None])[0], impl)
        return jax.jit(one).lower(key_data, vec).compile(dict(batch1_options) or None)
    return jax.jit(_raw_key(fn, impl)).lower(key_data, vec).compile()


def host_packed(policy: Policy, scenario: Scenario, key: jax.Array, vec: jax.Array) -> Callable[[], object]:
    """A call of host driver `policy` on packed input, timed as a Python callable: it unpacks `vec`
    (one vector (P,), or a batch (n, P)) with a compiled `scenario.unpack`, decides, and returns
    when the decision is ready."""
    return host_packed_cycle(policy, scenario, key, [vec])


def host_packed_cycle(policy: Policy, scenario: Scenario, key: jax.Array, vecs) -> Callable[[], object]:
    """`host_packed` whose successive calls take the vectors of `vecs` in turn (all of one shape)."""
    batches = [v[None] if v.ndim == 1 else v for v in vecs]
    unpack = jax.jit(scenario.unpack).lower(batches[0]).compile()
    if len(batches) == 1:
        batch = batches[0]
        return lambda: jax.block_until_ready(policy.fn(key, unpack(batch)))
    return _in_turn(lambda b: jax.block_until_ready(policy.fn(key, unpack(b))), batches)


def _in_turn(call: Callable, items) -> Callable[[], object]:
    """A callable whose successive calls are call(item) for the items in turn, cycling."""
    turn = itertools.cycle(items)
    return lambda: call(next(turn))


def decision_benchmark(policies: Mapping[str, Policy], scenario: Scenario, *, calls: int = 2000,
                       batch: int = 1024, batch_reps: int = 20, numpy_student=None, seed: int = 0,
                       rounds: int = 400, batch1_options: Mapping[str, object] = BATCH1_COMPILER_OPTIONS,
                       block: bool = False, states: int = 1, host_batch: bool = True,
                       progress: bool = True) -> dict:
    """Batch-1 latency (p50/p99 over `calls` calls) and batch throughput of every policy, in one run.

    States are `scenario`'s (sampled with its configured values), packed (`scenario.pack`).
    `numpy_student` (optional): an `export_runtime.StudentPolicy`, timed on the same vector.
    `rounds`: many short blocks (400 of 5 calls by default), because this VM's speed changes every
    few tens of ms: with 40 blocks of 50 calls, the p50s of the three fixed sites (the same program)
    differed by up to 1.54x within a run (13 runs), with 400 blocks of 5 by at most 1.05x (8 runs).
    The batch-1 calls of the identity, every policy and the numpy student are interleaved in
    `rounds` rounds; the batch-1 programs (identity included) are compiled with `batch1_options`.
    A timed call ends when the program returns if `returns_when_done` (synchronous dispatch), with
    `block_until_ready()` otherwise or if `block` (as the benchmark timed every call before).
    Host drivers (`Policy.host`) are timed as Python callables (`host_packed`), on the same vector.
    `states`: the batch-1 calls of every callable cycle through this many states (the batch's first),
    so a policy whose time depends on the state (a search: local search, the exact one) is timed over
    that many, not on one; 1 times every call on the first state.
    `host_batch`: False leaves out the host drivers' batch throughput (their `batch_states_per_s` is
    None): the exact search compiles its programs again for the batch's shapes (dag quickstart: ~40 s of
    compiling and ~15 s of timing; its throughput at scale is the labeling benchmark's).
    Call `configure_for_latency()` first, at the start of the process.
    Returns {"device", "scenario", "decision_shape", "tasks", "batch", "settings", "load_avg_1min":
    [start, end], "rounds", "identity": {...}, "policies": {name: {p50_us, p99_us, mean_us, calls,
    batch_states_per_s, p50_over_identity, timed_as}}, "numpy_student": {...}}; `timed_as` is
    "compiled program" or "host driver (Python callable)".
    """
    load_start = os.getloadavg()[0]
    key = jax.random.key(seed)
    if isinstance(states, bool) or not isinstance(states, int) or not 1 <= states <= batch:
        raise ValueError(f"states must be an integer in [1, batch={batch}], got {states!r}")
    count = states
    indices = jnp.arange(batch, dtype=jnp.uint32)
    sampled = scenario.sample(jax.random.fold_in(key, 1), scenario.params, indices)
    batch_vec = jax.device_put(scenario.pack(sampled))
    vecs = [jax.device_put(batch_vec[i]) for i in range(count)]
    vec = vecs[0]
    jax.block_until_ready((batch_vec, vecs))

    key_data = jax.random.key_data(key)
    lowered_identity = jax.jit(lambda k, vec: vec).lower(key_data, vec)
    ones = {"identity": lowered_identity.compile(dict(batch1_options) or None)}
    compiled = {name: policy for name, policy in policies.items() if not policy.host}
    bar = tqdm(compiled.items(), desc="compile policies", disable=not progress, unit="policy")
    for name, policy in bar:
        bar.set_postfix_str(name)
        ones[name] = compile_packed(policy.fn, scenario, key, vec, batch1_options)
    sync = not block and returns_when_done(ones, key_data, vec)
    if count == 1:
        batch1 = {name: (functools.partial(one, key_data, vec) if sync
                         else (lambda one=one: one(key_data, vec).block_until_ready()))
                  for name, one in ones.items()}
    else:  # each callable its own cycle over the states
        batch1 = {name: _in_turn((lambda v, one=one: one(key_data, v)) if sync
                                 else (lambda v, one=one: one(key_data, v).block_until_ready()), vecs)
                  for name, one in ones.items()}
    # Host drivers and the numpy student read a copy the process owns, as on a device without JAX:
    # numpy reading a read-only view of a JAX buffer (np.asarray of a jax.Array) measured ~1.5x
    # slower per call here.
    host_vec, host_vecs_batch = np.array(vec, dtype=np.float32), np.array(batch_vec, dtype=np.float32)
    host_vecs = [np.array(v, dtype=np.float32) for v in vecs]
    for name, policy in policies.items():
        if policy.host:
            batch1[name] = host_packed_cycle(policy, scenario, key, host_vecs)
    if numpy_student is not None:
        batch1["numpy_student"] = ((lambda: numpy_student(host_vec)) if count == 1
                                   else _in_turn(numpy_student, host_vecs))
    seconds = interleaved_seconds(batch1, calls, rounds, progress=progress)
    identity = latency_stats(seconds["identity"])
    result = {"device": device_description(), "scenario": scenario.name,
              "decision_shape": list(scenario.decision_shape), "tasks": scenario.cfg.tasks, "batch": batch,
              "settings": {**settings(batch1_options),
                           "timed_call": "returns when done" if sync else "block_until_ready",
                           "states": count},
              "rounds": rounds, "identity": identity, "policies": {}}

    bar = tqdm(policies.items(), desc="batch throughput", disable=not progress, unit="policy")
    for name, policy in bar:
        bar.set_postfix_str(name)
        stats = latency_stats(seconds[name])
        stats["p50_over_identity"] = stats["p50_us"] / identity["p50_us"]
        stats["timed_as"] = "host driver (Python callable)" if policy.host else "compiled program"
        result["policies"][name] = stats
        if policy.host and not host_batch:
            stats["batch_states_per_s"] = None
            continue
        if policy.host:
            many = host_packed(policy, scenario, key, host_vecs_batch)
        else:
            program = compile_packed(policy.fn, scenario, key, batch_vec)
            many = lambda program=program: program(key_data, batch_vec).block_until_ready()
        batch_s = per_call_seconds(many, batch_reps, warmup=2)
        stats["batch_states_per_s"] = float(batch / np.median(batch_s))
    if numpy_student is not None:
        stats = latency_stats(seconds["numpy_student"])
        batch_s = per_call_seconds(lambda: numpy_student(host_vecs_batch), batch_reps, warmup=2)
        stats["batch_states_per_s"] = float(batch / np.median(batch_s))
        result["numpy_student"] = stats
    result["load_avg_1min"] = [load_start, os.getloadavg()[0]]
    return result
