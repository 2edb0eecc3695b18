"""States of the dag scenario (SPEC "Scenario `dag`"): a pytree of per-sample arrays and a pure sampler.

Every state's randomness comes from `fold_in(key, index)`, so state i is bit-identical whatever the
batch it is sampled in, or the device it runs on.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from offload_jax.config import ConfigError
from offload_jax.scenarios import sampling
from offload_jax.scenarios.dag import graphs
from offload_jax.scenarios.dag.config import DagParams, DagStatic


class DagState(NamedTuple):
    """One state (unbatched shapes below) or a batch (leading axis n). Names, shapes, dtypes: SPEC."""

    cycles: jax.Array  # (U, T) float32; 0 for padding slots
    adj: jax.Array  # (U, T, T) bool, adj[u, i, j]: j needs i's output (i < j)
    edge_bits: jax.Array  # (U, T, T) float32, > 0 exactly where adj
    in_bits: jax.Array  # (U, T) float32, > 0 exactly for real sub-tasks without a predecessor
    out_bits: jax.Array  # (U, T) float32, > 0 exactly for real sub-tasks without a successor
    f_local: jax.Array  # (U,) float32, Hz
    edge_cores_free: jax.Array  # () int32
    f_edge: jax.Array  # () float32, Hz
    f_cloud: jax.Array  # () float32, Hz
    snr: jax.Array  # (U, N) float32, linear
    subcarrier_free: jax.Array  # (U, N) bool
    rate_up: jax.Array  # (U,) float32, bit/s
    rate_down: jax.Array  # (U,) float32, bit/s
    backhaul_rate: jax.Array  # () float32, bit/s
    cloud_delay: jax.Array  # () float32, seconds


STATE_FIELDS: tuple[str, ...] = DagState._fields


def state_shapes(static: DagStatic) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Per-sample shape and dtype of every field (no batch axis), in SPEC order."""
    u, t, n = static.users, static.tasks, static.subcarriers
    f32, i32, b = np.dtype(np.float32), np.dtype(np.int32), np.dtype(np.bool_)
    return {"cycles": ((u, t), f32), "adj": ((u, t, t), b), "edge_bits": ((u, t, t), f32),
            "in_bits": ((u, t), f32), "out_bits": ((u, t), f32), "f_local": ((u,), f32),
            "edge_cores_free": ((), i32), "f_edge": ((), f32), "f_cloud": ((), f32),
            "snr": ((u, n), f32), "subcarrier_free": ((u, n), b), "rate_up": ((u,), f32),
            "rate_down": ((u,), f32), "backhaul_rate": ((), f32), "cloud_delay": ((), f32)}


def _graph(key: jax.Array, static: DagStatic, params: DagParams) -> tuple[jax.Array, jax.Array]:
    """One application graph (adj (T, T), real sub-tasks ()) of the static's family."""
    if static.topology == "chain":
        return graphs.chain(static.tasks)
    if static.topology == "layered":
        return graphs.layered(key, static.tasks, params.fat, params.density, params.jump)
    if static.missing_file is not None:
        raise ConfigError(f"topology_file {static.missing_file!r}: not found; states of this system are "
                          f"drawn from its graphs (stored states load and score without it)")
    adj_bank, sizes = graphs.bank(static.graphs, static.tasks)
    return graphs.from_bank(jax.random.uniform(key), adj_bank, sizes)


def _sample_one(key: jax.Array, static: DagStatic, params: DagParams) -> DagState:
    u_n, t, n = static.users, static.tasks, static.subcarriers
    key_graph, key_values = jax.random.split(key)
    if static.topology_per_state:
        adj, size = jax.vmap(lambda u: _graph(jax.random.fold_in(key_graph, u), static, params))(
            jnp.arange(u_n, dtype=jnp.uint32))
    else:  # one application for every user of every state
        adj, size = _graph(jax.random.key(static.topology_seed), static, params)
        adj, size = jnp.broadcast_to(adj, (u_n, t, t)), jnp.broadcast_to(size, (u_n,))
    real = jnp.arange(t)[None, :] < size[:, None]  # (U, T)
    # One vector of uniforms per state, cut into named pieces (fixes the layout of the randomness).
    sizes = {"cycles": u_n * t, "edge_bits": u_n * t * t, "in_bits": u_n * t, "out_bits": u_n * t,
             "f_local": u_n, "mean_snr": u_n, "fading": u_n * n, "free": u_n * n, "fallback": u_n,
             "cores": 1, "f_cloud": 1, "backhaul": 1, "delay": 1}
    u_all = jax.random.uniform(key_values, (sum(sizes.values()),), dtype=jnp.float32)
    u, start = {}, 0
    for name, size_ in sizes.items():
        u[name] = u_all[start:start + size_]
        start += size_
    p = params
    cycles = jnp.where(real, sampling.log_uniform(u["cycles"].reshape(u_n, t), p.cycles_range), 0.0)
    edge_bits = jnp.where(adj, sampling.log_uniform(u["edge_bits"].reshape(u_n, t, t), p.edge_bits_range),
                          0.0)
    has_pred, has_succ = jnp.any(adj, axis=1), jnp.any(adj, axis=2)
    in_bits = jnp.where(real & ~has_pred, sampling.log_uniform(u["in_bits"].reshape(u_n, t), p.io_bits_range),
                        0.0)
    out_bits = jnp.where(real & ~has_succ,
                         sampling.log_uniform(u["out_bits"].reshape(u_n, t), p.io_bits_range), 0.0)
    f_local = sampling.uniform(u["f_local"], p.f_local_range)
    link = jax.vmap(sampling.wireless_link, in_axes=(0, 0, 0, 0, None, None, None, None))(
        u["mean_snr"], u["fading"].reshape(u_n, n), u["free"].reshape(u_n, n), u["fallback"],
        p.mean_snr_db_range, p.subcarrier_free_prob, p.subcarrier_bandwidth, p.downlink_factor)
    cores = sampling.edge_cores_free(u["cores"][0], p.edge_cores)
    return DagState(
        cycles=cycles, adj=adj, edge_bits=edge_bits, in_bits=in_bits, out_bits=out_bits, f_local=f_local,
        edge_cores_free=cores, f_edge=cores.astype(jnp.float32) * p.edge_core_hz,
        f_cloud=sampling.uniform(u["f_cloud"][0], p.f_cloud_range), snr=link.snr,
        subcarrier_free=link.subcarrier_free, rate_up=link.rate_up, rate_down=link.rate_down,
        backhaul_rate=sampling.log_uniform(u["backhaul"][0], p.backhaul_rate_range),
        cloud_delay=sampling.uniform(u["delay"][0], p.cloud_delay_range))


# Jitted here, not only by callers: op-by-op execution rounds some results differently from the
# compiled program.
@functools.partial(jax.jit, static_argnames=("static",))
def sample_indices(key: jax.Array, static: DagStatic, params: DagParams, indices: jax.Array) -> DagState:
    """States number `indices` (int array (n,)) of the stream of `key`; state i depends only on (key, i),
    whatever the batch or the program around (the barrier keeps constant values from being folded
    into the arithmetic, as `chain.system.sample_with`)."""
    params = jax.lax.optimization_barrier(params)
    return jax.vmap(lambda i: _sample_one(jax.random.fold_in(key, i), static, params))(indices)


def sample(key: jax.Array, static: DagStatic, params: DagParams, n: int) -> DagState:
    """States 0..n-1 of the stream of `key`."""
    return sample_indices(key, static, params, jnp.arange(n, dtype=jnp.uint32))


def real_mask(state: DagState) -> jax.Array:
    """(..., U, T) bool: the slots that hold a sub-task (cycles > 0)."""
    return state.cycles > 0
