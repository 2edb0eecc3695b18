"""Heuristic placements of the dag scenario: the SPEC's greedy, and local search from it.

Both work on one state (vmap for a batch) and score placements with `schedule` (the one home of J).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from offload_jax.scenarios.dag import schedule
from offload_jax.scenarios.dag.config import DagParams
from offload_jax.scenarios.dag.schedule import NUM_SITES, Norm, Partial, Tables
from offload_jax.scenarios.dag.state import DagState


def greedy_complete(tab: Tables, params: DagParams, nrm: Norm, p: Partial, first: int = 0) -> Partial:
    """Dispatch the sub-tasks from dispatch position `first` on, each on the site minimizing J over the
    sub-tasks dispatched so far (ties to the lowest label; padding slots on 0): the SPEC greedy's rule.
    A loop: unrolled (each step's choice a gather of every field, ~14 kernels a step) it took 80 us at
    batch 1 against the loop's 55 (T = 10)."""
    users, tasks = tab.real.shape

    def step(k, p):
        u, t = k % users, k // users
        trio = jax.tree.map(lambda a: jnp.broadcast_to(a, (NUM_SITES, *a.shape)), p)
        trio = schedule.dispatch(tab, trio, u, t, jnp.arange(NUM_SITES, dtype=jnp.int8))
        j = schedule.objective_of(tab, params, nrm, trio)[0]
        pick = jnp.where(tab.real[u, t], jnp.argmin(j), 0)
        return jax.tree.map(lambda a: a[pick], trio)

    return jax.lax.fori_loop(first, users * tasks, step, p)


def greedy_from(tab: Tables, params: DagParams, nrm: Norm) -> jax.Array:
    """SPEC greedy: in dispatch order, each sub-task takes the site minimizing J over the sub-tasks
    dispatched so far (normalized by the full all-local L_u(0), E_u(0)); ties to the lowest label.
    Padding slots get 0. Returns (U, T) int8."""
    users, tasks = tab.real.shape
    return greedy_complete(tab, params, nrm, schedule.empty(users, tasks)).site


def local_search_from(tab: Tables, params: DagParams, nrm: Norm, x0: jax.Array,
                      rounds: int | None = None) -> jax.Array:
    """From x0, repeatedly take the single sub-task site change that lowers J most (first in the order
    (slot user-major, new site ascending) among equal ones) until none lowers it, or after `rounds`
    changes when given (rounds=1: the best of x0 and its single changes). Returns (U, T) int8."""
    _check_rounds(rounds)
    users, tasks = tab.real.shape
    d = users * tasks
    # Neighbor k = 3 * slot + site: slot (user-major) moved to `site` (the current site: no move).
    slot_of = jnp.arange(NUM_SITES * d) // NUM_SITES
    site_of = (jnp.arange(NUM_SITES * d) % NUM_SITES).astype(jnp.int8)
    movable = jnp.repeat(tab.real.reshape(d), NUM_SITES)

    unroll = schedule.unrolls(tab.real.size)  # faster at these sizes (see `schedule.run`)

    def j_of(x):
        return schedule.objective_of(tab, params, nrm, schedule.run(tab, x, unroll))[0]

    def neighbors(x):
        flat = jnp.broadcast_to(x.reshape(d), (NUM_SITES * d, d))
        moved = flat.at[jnp.arange(NUM_SITES * d), slot_of].set(site_of)
        return moved.reshape(NUM_SITES * d, users, tasks)

    def step(carry):
        x, j, _, done = carry
        cand = neighbors(x)
        changed = movable & (site_of != x.reshape(d)[slot_of])
        jc = jnp.where(changed, j_of(cand), jnp.inf)
        k = jnp.argmin(jc)
        better = jc[k] < j
        return jnp.where(better, cand[k], x), jnp.where(better, jc[k], j), better, done + 1

    def go_on(carry):
        return carry[2] if rounds is None else carry[2] & (carry[3] < rounds)

    x0 = x0.astype(jnp.int8)
    x, _, _, _ = jax.lax.while_loop(go_on, step, (x0, j_of(x0), jnp.bool_(True), jnp.int32(0)))
    return x


def _check_rounds(rounds: int | None) -> None:
    if rounds is not None and rounds < 1:
        raise ValueError(f"rounds must be >= 1 or None (until no change lowers J), got {rounds}")


def _tables_and_norm(state: DagState, params: DagParams) -> tuple[Tables, Norm]:
    """One state's tables and normalizers, the all-local schedule unrolled where `schedule.unrolls`."""
    tab = schedule.tables(state, params)
    return tab, schedule.norm(tab, params, schedule.unrolls(tab.real.size))


def greedy(params: DagParams, state: DagState) -> jax.Array:
    """SPEC greedy placements (n, U, T) int8 of a batch of states."""
    def one(s):
        tab, nrm = _tables_and_norm(s, params)
        return greedy_from(tab, params, nrm)
    return jax.vmap(one)(state)


def local_search(params: DagParams, state: DagState, x0: jax.Array | None = None,
                 rounds: int | None = None) -> jax.Array:
    """Local search from the greedy placement, or from `x0` (n, U, T) when given, for at most `rounds`
    changes when given: (n, U, T) int8 for a batch of states."""
    _check_rounds(rounds)

    def one(s, x):
        tab, nrm = _tables_and_norm(s, params)
        start = greedy_from(tab, params, nrm) if x is None else x
        return local_search_from(tab, params, nrm, start, rounds)
    return jax.vmap(one)(state, x0)
