"""Decision latency: how long a policy takes to decide, measured the same way for every policy.

The timed input is one state packed into a single float32 vector already on the
device (`system.pack`): what an end device holds after measuring. Every JAX policy is
AOT-compiled (`jax.jit(...).lower(...).compile()`), warmed up, then called many times,
each call timed alone until its result is ready. A compiled identity function on the
same input gives the overhead floor. The exported numpy student is timed on the same
vector as a numpy array. Used by `benchmarks/bench_decision.py` and the quickstart.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Mapping

import jax
import numpy as np
from tqdm import tqdm

from offload_jax.config import SystemConfig
from offload_jax.policies import PolicyFn, packed
from offload_jax.system import pack, sample


def device_description() -> str:
    d = jax.devices()[0]
    kind = getattr(d, "device_kind", d.platform)
    cpu = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores"
    return f"{d.platform}: {kind} x{jax.device_count()} ({cpu}); jax {jax.__version__}"


def per_call_seconds(call: Callable[[], object], calls: int, warmup: int = 50) -> np.ndarray:
    """Wall time of each of `calls` calls (after `warmup` untimed ones); `call` must block."""
    for _ in range(warmup):
        call()
    out = np.empty(calls)
    clock = time.perf_counter
    for i in range(calls):
        t0 = clock()
        call()
        out[i] = clock() - t0
    return out


def latency_stats(seconds: np.ndarray) -> dict[str, float]:
    us = seconds * 1e6
    return {"p50_us": float(np.percentile(us, 50)), "p99_us": float(np.percentile(us, 99)),
            "mean_us": float(us.mean()), "calls": int(us.size)}


def _batch1(fn: Callable[[jax.Array, jax.Array], jax.Array]):
    return lambda key, vec: fn(key, vec[None])[0]


def compile_packed(policy: PolicyFn, cfg: SystemConfig, key: jax.Array, vec: jax.Array):
    """AOT-compiled `policy` on packed input: one vector (P,) -> (T,), or a batch (n, P) -> (n, T)."""
    fn = packed(policy, cfg)
    fn = _batch1(fn) if vec.ndim == 1 else fn
    return jax.jit(fn).lower(key, vec).compile()


def decision_benchmark(policies: Mapping[str, PolicyFn], cfg: SystemConfig, *, calls: int = 2000,
                       batch: int = 1024, batch_reps: int = 20, numpy_student=None, seed: int = 0,
                       progress: bool = True) -> dict:
    """Batch-1 latency (p50/p99 over `calls` calls) and batch throughput of every policy, in one run.

    `numpy_student` (optional): an `export_runtime.StudentPolicy`, timed on the same vector.
    Returns {"device", "tasks", "identity": {...}, "policies": {name: {p50_us, p99_us, mean_us,
    calls, batch, batch_states_per_s, p50_over_identity}}, "numpy_student": {...}}.
    """
    key = jax.random.key(seed)
    states = sample(jax.random.fold_in(key, 1), cfg, batch)
    batch_vec = jax.device_put(pack(states))
    vec = jax.device_put(batch_vec[0])
    jax.block_until_ready((batch_vec, vec))

    ident = jax.jit(lambda key, vec: vec).lower(key, vec).compile()
    identity = latency_stats(per_call_seconds(lambda: ident(key, vec).block_until_ready(), calls))
    result = {"device": device_description(), "tasks": cfg.tasks, "batch": batch,
              "identity": identity, "policies": {}}
    bar = tqdm(policies.items(), desc="decision latency", disable=not progress, unit="policy")
    for name, policy in bar:
        bar.set_postfix_str(name)
        one = compile_packed(policy, cfg, key, vec)
        stats = latency_stats(per_call_seconds(lambda one=one: one(key, vec).block_until_ready(), calls))
        many = compile_packed(policy, cfg, key, batch_vec)
        batch_s = per_call_seconds(lambda many=many: many(key, batch_vec).block_until_ready(),
                                   batch_reps, warmup=2)
        stats["batch_states_per_s"] = float(batch / np.median(batch_s))
        stats["p50_over_identity"] = stats["p50_us"] / identity["p50_us"]
        result["policies"][name] = stats
    if numpy_student is not None:
        host_vec = np.asarray(vec, dtype=np.float32)
        host_batch = np.asarray(batch_vec, dtype=np.float32)
        stats = latency_stats(per_call_seconds(lambda: numpy_student(host_vec), calls))
        batch_s = per_call_seconds(lambda: numpy_student(host_batch), batch_reps, warmup=2)
        stats["batch_states_per_s"] = float(batch / np.median(batch_s))
        result["numpy_student"] = stats
    return result

