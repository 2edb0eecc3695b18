"""System states of SPEC.md: a pytree of per-sample arrays and a pure, jittable sampler.

Every state's randomness comes from `fold_in(key, index)`, so state i is
bit-identical whatever the batch it is sampled in, or the device it runs on.
"""

from __future__ import annotations

import functools
import operator
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from offload_jax.config import SystemConfig


class SystemState(NamedTuple):
    """One state (unbatched shapes below) or a batch of them (leading axis n).

    Field names, shapes and dtypes are fixed by SPEC.md.
    """

    cycles: jax.Array  # (T,) float32, CPU cycles per sub-task
    data_bits: jax.Array  # (T+1,) float32, bits entering sub-task t; [T] = result
    f_local: jax.Array  # () float32, Hz
    edge_cores_free: jax.Array  # () int32
    f_edge: jax.Array  # () float32, Hz = edge_cores_free * edge_core_hz
    f_cloud: jax.Array  # () float32, Hz
    snr: jax.Array  # (N,) float32, linear
    subcarrier_free: jax.Array  # (N,) bool
    rate_up: jax.Array  # () float32, bit/s
    rate_down: jax.Array  # () float32, bit/s
    backhaul_rate: jax.Array  # () float32, bit/s
    cloud_delay: jax.Array  # () float32, seconds


STATE_FIELDS: tuple[str, ...] = SystemState._fields


def state_shapes(cfg: SystemConfig) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Per-sample shape and dtype of every field (no batch axis)."""
    t, n = cfg.tasks, cfg.subcarriers
    f32, i32 = np.dtype(np.float32), np.dtype(np.int32)
    return {
        "cycles": ((t,), f32),
        "data_bits": ((t + 1,), f32),
        "f_local": ((), f32),
        "edge_cores_free": ((), i32),
        "f_edge": ((), f32),
        "f_cloud": ((), f32),
        "snr": ((n,), f32),
        "subcarrier_free": ((n,), np.dtype(np.bool_)),
        "rate_up": ((), f32),
        "rate_down": ((), f32),
        "backhaul_rate": ((), f32),
        "cloud_delay": ((), f32),
    }


# Both samplers clip to the float32 bounds: float32 rounding (of exp(log(low)), or near
# u = 1) could otherwise put a sample one ulp outside its range.
def _log_uniform(u: jax.Array, bounds: tuple[float, float]) -> jax.Array:
    lo, hi = np.float32(bounds[0]), np.float32(bounds[1])
    log_lo, log_hi = np.log(lo), np.log(hi)
    return jnp.clip(jnp.exp(log_lo + u * (log_hi - log_lo)), lo, hi)


def _uniform(u: jax.Array, bounds: tuple[float, float]) -> jax.Array:
    lo, hi = np.float32(bounds[0]), np.float32(bounds[1])
    return jnp.clip(lo + u * (hi - lo), lo, hi)


def rates(
    snr: jax.Array, subcarrier_free: jax.Array, cfg: SystemConfig
) -> tuple[jax.Array, jax.Array]:
    """(rate_up, rate_down) in bit/s from the sub-carriers (last axis), as SPEC.md defines them."""
    # log1p: log2(1 + snr) in float32 is 0 for snr < 6e-8, and a lone free carrier must keep a rate > 0.
    bits_per_hz = jnp.log1p(snr) / np.float32(np.log(2.0))
    per_carrier = jnp.where(subcarrier_free, np.float32(cfg.subcarrier_bandwidth) * bits_per_hz, 0.0)
    # A left fold in carrier order, not jnp.sum: XLA may reorder a reduction depending on
    # the batch shape, and a state must be bit-identical whatever batch it is sampled in.
    rate_up = functools.reduce(operator.add, [per_carrier[..., i] for i in range(per_carrier.shape[-1])])
    return rate_up, np.float32(cfg.downlink_factor) * rate_up


def _sample_one(key: jax.Array, cfg: SystemConfig) -> SystemState:
    t, n = cfg.tasks, cfg.subcarriers
    # One vector of uniforms per state, cut into named pieces: cheaper than
    # splitting the key once per field, and fixes the layout of the randomness.
    sizes = {"cycles": t, "data_bits": t + 1, "f_local": 1, "cores": 1, "f_cloud": 1,
             "mean_snr": 1, "fading": n, "free": n, "fallback": 1, "backhaul": 1, "delay": 1}
    u_all = jax.random.uniform(key, (sum(sizes.values()),), dtype=jnp.float32)
    u, start = {}, 0
    for name, size in sizes.items():
        u[name] = u_all[start:start + size]
        start += size

    cycles = _log_uniform(u["cycles"], cfg.cycles_range)
    data_bits = _log_uniform(u["data_bits"], cfg.data_bits_range)
    f_local = _uniform(u["f_local"][0], cfg.f_local_range)
    cores = jnp.minimum(jnp.floor(u["cores"][0] * cfg.edge_cores).astype(jnp.int32) + 1,
                        cfg.edge_cores)
    f_edge = cores.astype(jnp.float32) * np.float32(cfg.edge_core_hz)
    f_cloud = _uniform(u["f_cloud"][0], cfg.f_cloud_range)
    mean_snr_db = _uniform(u["mean_snr"][0], cfg.mean_snr_db_range)
    # Exp(1): Rayleigh fading power gain. u = 0 has probability 2^-23 and would give g = 0,
    # hence a zero rate when that carrier is the only free one; the floor keeps snr > 0.
    fading = jnp.maximum(-jnp.log1p(-u["fading"]), np.float32(2.0**-24))
    snr = jnp.power(np.float32(10.0), mean_snr_db / 10.0) * fading
    free = u["free"] < np.float32(cfg.subcarrier_free_prob)
    fallback = jnp.minimum(jnp.floor(u["fallback"][0] * n).astype(jnp.int32), n - 1)
    free = jnp.where(jnp.any(free), free, jnp.arange(n) == fallback)
    rate_up, rate_down = rates(snr, free, cfg)
    backhaul = _log_uniform(u["backhaul"][0], cfg.backhaul_rate_range)
    delay = _uniform(u["delay"][0], cfg.cloud_delay_range)
    return SystemState(cycles=cycles, data_bits=data_bits, f_local=f_local,
                       edge_cores_free=cores, f_edge=f_edge, f_cloud=f_cloud, snr=snr,
                       subcarrier_free=free, rate_up=rate_up, rate_down=rate_down,
                       backhaul_rate=backhaul, cloud_delay=delay)


# Jitted here, not only by callers: op-by-op (eager) execution rounds some results
# differently from the compiled program and differently for different batch sizes.
@functools.partial(jax.jit, static_argnames=("cfg",))
def sample_indices(key: jax.Array, cfg: SystemConfig, indices: jax.Array) -> SystemState:
    """States number `indices` (int array (n,)) of the stream defined by `key`.

    Pure and jitted (`cfg` static). State i depends only on (key, i): it is
    bit-identical whatever the batch it is sampled in (on one platform).
    """
    return jax.vmap(lambda i: _sample_one(jax.random.fold_in(key, i), cfg))(indices)


@functools.partial(jax.jit, static_argnames=("cfg", "n"))
def sample(key: jax.Array, cfg: SystemConfig, n: int) -> SystemState:
    """States 0..n-1 of the stream defined by `key` (jitted; `cfg` and `n` static)."""
    return sample_indices(key, cfg, jnp.arange(n, dtype=jnp.uint32))


def num_states(state: SystemState) -> int:
    return state.cycles.shape[0]


def tasks_of(state: SystemState) -> int:
    return state.cycles.shape[-1]


def to_numpy(state: SystemState) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in state._asdict().items()}


def from_arrays(arrays) -> SystemState:
    """SystemState from any mapping holding (at least) the SPEC fields, e.g. an npz shard."""
    missing = [k for k in STATE_FIELDS if k not in arrays]
    if missing:
        raise KeyError(f"state arrays missing fields {missing}")
    return SystemState(**{k: jnp.asarray(arrays[k]) for k in STATE_FIELDS})


def packed_size(cfg: SystemConfig) -> int:
    """Length of the float32 vector `pack` makes of one state."""
    return sum(int(np.prod(shape)) for shape, _ in state_shapes(cfg).values())


def pack(state: SystemState) -> jax.Array:
    """States (n, ...) -> (n, packed_size) float32: one vector per state, fields in SPEC order.

    This is what an end device holds after measuring; decision benchmarks time
    policies from this vector so that every policy pays the same input overhead.
    """
    n = state.cycles.shape[0]
    return jnp.concatenate(
        [jnp.reshape(v, (n, -1)).astype(jnp.float32) for v in state], axis=1)


def unpack(vec: jax.Array, cfg: SystemConfig) -> SystemState:
    """Inverse of `pack` (exact: booleans and small integers survive float32)."""
    n = vec.shape[0]
    fields, start = {}, 0
    for name, (shape, dtype) in state_shapes(cfg).items():
        size = int(np.prod(shape))
        fields[name] = vec[:, start:start + size].reshape((n, *shape)).astype(dtype)
        start += size
    return SystemState(**fields)
