"""System states of SPEC.md: a pytree of per-sample arrays and a pure, jittable sampler.

Every state's randomness comes from `fold_in(key, index)`, so state i is
bit-identical whatever the batch it is sampled in, or the device it runs on.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from offload_jax.config import SystemConfig
from offload_jax.scenarios import sampling
from offload_jax.scenarios.base import pack  # noqa: F401 (features' import; its one home is scenarios.base)


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


class ChainStatic(NamedTuple):
    """What fixes the chain's shapes (hashable: a static jit argument)."""

    tasks: int
    subcarriers: int


class ChainParams(NamedTuple):
    """The values of a chain system (a pytree passed at call time: one compiled sampler serves them all)."""

    cycles_range: sampling.Range
    data_bits_range: sampling.Range
    f_local_range: sampling.Range
    edge_cores: jax.Array  # () int32
    edge_core_hz: jax.Array  # () float32
    f_cloud_range: sampling.Range
    subcarrier_bandwidth: jax.Array
    subcarrier_free_prob: jax.Array
    mean_snr_db_range: sampling.Range
    downlink_factor: jax.Array
    backhaul_rate_range: sampling.Range
    cloud_delay_range: sampling.Range


def static_of(cfg: SystemConfig) -> ChainStatic:
    return ChainStatic(tasks=cfg.tasks, subcarriers=cfg.subcarriers)


def params_of(cfg: SystemConfig) -> ChainParams:
    f32 = np.float32
    r = sampling.make_range
    return ChainParams(
        cycles_range=r(cfg.cycles_range), data_bits_range=r(cfg.data_bits_range),
        f_local_range=r(cfg.f_local_range), edge_cores=np.int32(cfg.edge_cores),
        edge_core_hz=f32(cfg.edge_core_hz), f_cloud_range=r(cfg.f_cloud_range),
        subcarrier_bandwidth=f32(cfg.subcarrier_bandwidth),
        subcarrier_free_prob=f32(cfg.subcarrier_free_prob),
        mean_snr_db_range=r(cfg.mean_snr_db_range), downlink_factor=f32(cfg.downlink_factor),
        backhaul_rate_range=r(cfg.backhaul_rate_range), cloud_delay_range=r(cfg.cloud_delay_range))


def _sample_one(key: jax.Array, static: ChainStatic, params: ChainParams) -> SystemState:
    t, n = static.tasks, static.subcarriers
    p = params
    # One vector of uniforms per state, cut into named pieces: cheaper than
    # splitting the key once per field, and fixes the layout of the randomness.
    sizes = {"cycles": t, "data_bits": t + 1, "f_local": 1, "cores": 1, "f_cloud": 1,
             "mean_snr": 1, "fading": n, "free": n, "fallback": 1, "backhaul": 1, "delay": 1}
    u_all = jax.random.uniform(key, (sum(sizes.values()),), dtype=jnp.float32)
    u, start = {}, 0
    for name, size in sizes.items():
        u[name] = u_all[start:start + size]
        start += size

    cores = sampling.edge_cores_free(u["cores"][0], p.edge_cores)
    link = sampling.wireless_link(u["mean_snr"][0], u["fading"], u["free"], u["fallback"][0],
                                  p.mean_snr_db_range, p.subcarrier_free_prob, p.subcarrier_bandwidth,
                                  p.downlink_factor)
    return SystemState(cycles=sampling.log_uniform(u["cycles"], p.cycles_range),
                       data_bits=sampling.log_uniform(u["data_bits"], p.data_bits_range),
                       f_local=sampling.uniform(u["f_local"][0], p.f_local_range),
                       edge_cores_free=cores, f_edge=cores.astype(jnp.float32) * p.edge_core_hz,
                       f_cloud=sampling.uniform(u["f_cloud"][0], p.f_cloud_range), snr=link.snr,
                       subcarrier_free=link.subcarrier_free, rate_up=link.rate_up, rate_down=link.rate_down,
                       backhaul_rate=sampling.log_uniform(u["backhaul"][0], p.backhaul_rate_range),
                       cloud_delay=sampling.uniform(u["delay"][0], p.cloud_delay_range))


# Jitted here, not only by callers: op-by-op (eager) execution rounds some results
# differently from the compiled program and differently for different batch sizes.
@functools.partial(jax.jit, static_argnames=("static",))
def sample_with(key: jax.Array, static: ChainStatic, params: ChainParams, indices: jax.Array) -> SystemState:
    """States number `indices` (int array (n,)) of the stream of `key`, for the values `params`.

    Pure and jitted (`static` static, `params` traced: one program for every value). State i depends
    only on (key, i): it is bit-identical whatever the batch or the program it is sampled in (on one
    platform). Called inside another jitted function with constant values, XLA would fold them into
    the arithmetic and round some results differently; the barrier keeps them opaque.
    """
    params = jax.lax.optimization_barrier(params)
    return jax.vmap(lambda i: _sample_one(jax.random.fold_in(key, i), static, params))(indices)


def sample_indices(key: jax.Array, cfg: SystemConfig, indices: jax.Array) -> SystemState:
    """States number `indices` (int array (n,)) of the stream of `key` for the system `cfg`."""
    return sample_with(key, static_of(cfg), params_of(cfg), indices)


def sample(key: jax.Array, cfg: SystemConfig, n: int) -> SystemState:
    """States 0..n-1 of the stream defined by `key`."""
    return sample_indices(key, cfg, jnp.arange(n, dtype=jnp.uint32))


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
