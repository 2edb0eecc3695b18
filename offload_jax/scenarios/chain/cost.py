"""The cost model of SPEC.md: the one place where the latency formula lives.

A placement's latency is a sum of per-stage terms along the chain of sub-tasks,
so each state is first turned into three stage cost tables (`StageCosts`):

    first[s]        = move(data_bits[0], 0 -> s) + cycles[0] / f[s]
    step[t-1, a, b] = move(data_bits[t], a -> b) + cycles[t] / f[b]     (1 <= t < T)
    last[s]         = move(data_bits[T], s -> 0)

and latency(x) = first[x0] + step[0, x0, x1] + ... + step[T-2, x_{T-2}, x_{T-1}] + last[x_{T-1}],
added in exactly that order. The solvers (enumeration, DP), policies, losses and
evaluation all work from these tables; the enumeration and the DP add the same
float32 numbers in the same order as `path_latency`, so their values agree bit for bit
when they are given the same StageCosts arrays. Computed inside different jitted
programs, `stage_costs` itself may differ in the last bit (XLA turns division by a
broadcast into a multiply by a reciprocal and contracts a * b + c into an FMA
depending on fusion): compare latencies from different programs with rtol ~1e-6.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from offload_jax.scenarios.chain.system import SystemState

LOCAL, EDGE, CLOUD = 0, 1, 2
SITES = ("local", "edge", "cloud")
NUM_SITES = 3


class StageCosts(NamedTuple):
    """Stage cost tables in seconds; any leading batch axes ("...")."""

    first: jax.Array  # (..., 3)
    step: jax.Array  # (..., T-1, 3, 3)
    last: jax.Array  # (..., 3)


def speeds(state: SystemState) -> jax.Array:
    """(..., 3) Hz of (local, edge, cloud)."""
    return jnp.stack([state.f_local, state.f_edge, state.f_cloud], axis=-1)


def transfer_matrices(state: SystemState) -> tuple[jax.Array, jax.Array]:
    """(K, F), each (..., 3, 3): moving D bits from a to b takes D * K[a, b] + F[a, b] seconds."""
    inv_up = 1.0 / state.rate_up
    inv_down = 1.0 / state.rate_down
    inv_back = 1.0 / state.backhaul_rate
    zero = jnp.zeros_like(inv_up)
    tau = state.cloud_delay
    k = jnp.stack([
        jnp.stack([zero, inv_up, inv_up + inv_back], axis=-1),
        jnp.stack([inv_down, zero, inv_back], axis=-1),
        jnp.stack([inv_back + inv_down, inv_back, zero], axis=-1),
    ], axis=-2)
    f = jnp.stack([
        jnp.stack([zero, zero, tau], axis=-1),
        jnp.stack([zero, zero, tau], axis=-1),
        jnp.stack([tau, tau, zero], axis=-1),
    ], axis=-2)
    return k, f


def compute_times(state: SystemState) -> jax.Array:
    """(..., T, 3) seconds to run sub-task t on each site."""
    return state.cycles[..., :, None] / speeds(state)[..., None, :]


def stage_costs(state: SystemState) -> StageCosts:
    """Stage cost tables of a state or a batch of states."""
    k, f = transfer_matrices(state)
    compute = compute_times(state)
    bits = state.data_bits
    first = bits[..., 0, None] * k[..., 0, :] + f[..., 0, :] + compute[..., 0, :]
    step = (bits[..., 1:-1, None, None] * k[..., None, :, :] + f[..., None, :, :]
            + compute[..., 1:, None, :])
    last = bits[..., -1, None] * k[..., :, 0] + f[..., :, 0]
    return StageCosts(first=first, step=step, last=last)


def num_tasks(costs: StageCosts) -> int:
    return costs.step.shape[-3] + 1


def path_latency(costs: StageCosts, x: jax.Array) -> jax.Array:
    """Latency (seconds) of placements x (..., T) in {0,1,2}; the SPEC formula.

    `costs` and `x` share their leading axes.
    """
    t_len = num_tasks(costs)
    chex.assert_shape(x, (*costs.first.shape[:-1], t_len))
    x = x.astype(jnp.int32)

    def pick(table, idx):
        return jnp.take_along_axis(table, idx[..., None], axis=-1)[..., 0]

    acc = pick(costs.first, x[..., 0])
    flat_step = costs.step.reshape(*costs.step.shape[:-2], NUM_SITES * NUM_SITES)
    for t in range(1, t_len):
        acc = acc + pick(flat_step[..., t - 1, :], x[..., t - 1] * NUM_SITES + x[..., t])
    return acc + pick(costs.last, x[..., -1])


def latency(state: SystemState, x: jax.Array) -> jax.Array:
    """Latency (seconds) of placements x (..., T) for states of the same leading shape."""
    return path_latency(stage_costs(state), x)


def fixed_site_latency(costs: StageCosts, site: int) -> jax.Array:
    """Latency of running every sub-task on one site, (...,)."""
    x = jnp.full((*costs.first.shape[:-1], num_tasks(costs)), site, dtype=jnp.int32)
    return path_latency(costs, x)


def expected_latency(costs: StageCosts, probs: jax.Array) -> jax.Array:
    """Exact expected latency (...,) when sub-task t runs on site s with probability probs[..., t, s],
    independently across sub-tasks (a factorized placement distribution)."""
    t_len = num_tasks(costs)
    chex.assert_shape(probs, (*costs.first.shape[:-1], t_len, NUM_SITES))
    # Stage by stage in the order of `path_latency`, so one-hot probs give exactly its value.
    out = jnp.sum(probs[..., 0, :] * costs.first, axis=-1)
    for t in range(1, t_len):
        pair = probs[..., t - 1, :, None] * probs[..., t, None, :]
        out = out + jnp.sum(pair * costs.step[..., t - 1, :, :], axis=(-2, -1))
    return out + jnp.sum(probs[..., -1, :] * costs.last, axis=-1)
