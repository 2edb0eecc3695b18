"""Exact labels of the dag scenario: argmin of J over all 3^(U*T) placements, ties to the
lexicographically smallest placement flattened user-major (SPEC).

`solve_enumerate` expands the placement tree level by level in dispatch order (`schedule.dispatch`),
so placements that share a prefix share its schedule: the first levels form a frontier of prefixes,
and a `lax.scan` over that frontier expands each prefix's subtree (3^suffix leaves at a time), so
memory is O(3^suffix) per state whatever U*T is. A padding slot's site never changes J, and the tie
rule gives it label 0: leaves with another site there are skipped.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from offload_jax.scenarios.dag import schedule
from offload_jax.scenarios.dag.config import DagParams
from offload_jax.scenarios.dag.schedule import NUM_SITES, Partial, Tables
from offload_jax.scenarios.dag.state import DagState

# The largest U * T exhaustive search accepts: 3^14 = 4.8M placements per state (about 1 s of CPU
# per state here); the lexicographic index of a placement must also fit in int32 (3^19 < 2^31).
MAX_ENUMERATE_DECISIONS = 14
# Leaves expanded per scan step and state (3^8 = 6561): bounds the memory of one state's search.
SUFFIX_LEVELS = 8


def lex_weights(users: int, tasks: int) -> np.ndarray:
    """(U, T) int32: the weight of x[u, t] in the placement's lexicographic index (user-major)."""
    d = users * tasks
    return (NUM_SITES ** np.arange(d - 1, -1, -1, dtype=np.int64)).reshape(users, tasks).astype(np.int32)


def lex_index(site: jax.Array) -> jax.Array:
    """(...) int32 lexicographic index of placements (..., U, T) (their order under the tie rule)."""
    w = lex_weights(*site.shape[-2:])
    return jnp.sum(site.astype(jnp.int32) * w, axis=(-2, -1))


def from_lex_index(index: jax.Array, users: int, tasks: int) -> jax.Array:
    """(..., U, T) int8 placements of lexicographic indices (...)."""
    w = lex_weights(users, tasks)
    return ((index[..., None, None] // w) % NUM_SITES).astype(jnp.int8)


def expand(tab: Tables, p: Partial, u: int, t: int) -> Partial:
    """Every node (leading axis n) -> its 3 children (n * 3, node-major) with sub-task (u, t) dispatched."""
    n = p.latency.shape[0]
    parents = jax.tree.map(lambda a: jnp.repeat(a, NUM_SITES, axis=0), p)
    return schedule.dispatch(tab, parents, u, t, jnp.tile(jnp.arange(NUM_SITES, dtype=jnp.int8), n))


def _first_minimum(j: jax.Array, index: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(min J, smallest index among the minima) of candidates (n,)."""
    best = jnp.min(j)
    return best, jnp.min(jnp.where(j == best, index, jnp.iinfo(jnp.int32).max))


def _better(j_a, i_a, j_b, i_b) -> jax.Array:
    """(J_a, index_a) before (J_b, index_b) in the label's order."""
    return (j_a < j_b) | ((j_a == j_b) & (i_a < i_b))


def enumerate_one(params: DagParams, state: DagState, suffix_levels: int = SUFFIX_LEVELS
                  ) -> tuple[jax.Array, jax.Array]:
    """Exhaustive search for one state: (label (U, T) int8, J of the label)."""
    users, tasks = state.cycles.shape
    if users * tasks > MAX_ENUMERATE_DECISIONS:
        raise ValueError(f"exhaustive search accepts U*T <= {MAX_ENUMERATE_DECISIONS}, got {users * tasks}")
    tab = schedule.tables(state, params)
    nrm = schedule.norm(tab, params)
    order = schedule.dispatch_order(users, tasks)
    split = max(0, len(order) - suffix_levels)
    front = schedule.empty(users, tasks, (1,))
    for u, t in order[:split]:
        front = expand(tab, front, u, t)

    def leaves_best(prefix: Partial) -> tuple[jax.Array, jax.Array]:
        leaves = jax.tree.map(lambda a: a[None], prefix)
        for u, t in order[split:]:
            leaves = expand(tab, leaves, u, t)
        j = schedule.objective_of(tab, params, nrm, leaves)[0]
        valid = jnp.all((leaves.site == 0) | tab.real, axis=(-2, -1))
        return _first_minimum(jnp.where(valid, j, jnp.inf), lex_index(leaves.site))

    def body(carry, prefix):
        j, i = leaves_best(prefix)
        keep = _better(j, i, *carry)
        return (jnp.where(keep, j, carry[0]), jnp.where(keep, i, carry[1])), None

    init = (jnp.float32(jnp.inf), jnp.int32(jnp.iinfo(jnp.int32).max))
    (best_j, best_i), _ = jax.lax.scan(body, init, front)
    return from_lex_index(best_i, users, tasks), best_j


def solve_enumerate(params: DagParams, state: DagState, *, states_per_step: int = 16
                    ) -> tuple[jax.Array, jax.Array]:
    """Exhaustive search for a batch of states (n, ...): (labels (n, U, T) int8, J (n,)).

    States go `states_per_step` at a time (`lax.map`), so memory does not grow with n.
    """
    return jax.lax.map(lambda s: enumerate_one(params, s), state, batch_size=states_per_step)
