"""Exact solvers: label = argmin over all 3^T placements of `cost.path_latency`.

Two independent algorithms that must agree on every state:

* `solve_enumerate`: exhaustive enumeration, vmapped over states, chunked over
  placements (a lax.scan over fixed prefixes) so memory stays bounded for large T.
* `solve_dp`: exact dynamic program over the chain (min-plus / Viterbi over the 3 sites).

Ties go to the lexicographically smallest placement in both. Both add the same
float32 terms in the same order as `path_latency`, so for the same StageCosts arrays
the optimal latency they return equals `path_latency(costs, label)` exactly, and the
two return the same latency bit for bit (if `stage_costs` is computed in the same
jitted program, XLA may round it differently for each consumer: see cost.py).

Their labels are the same except in one case a chain DP cannot see: two placements
whose float32 partial sums differ where they meet at a site and whose totals later
round to the same value. Enumeration then returns the lexicographically smaller one,
the DP the one with the smaller partial sum; both are optimal, with equal latency
(tests/test_solvers.py builds such a case).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from offload_jax.config import ConfigError
from offload_jax.scenarios.chain.cost import NUM_SITES, StageCosts, num_tasks

SOLVERS = ("dp", "enumerate")
# The largest T each solver accepts: at these T, labeling 1024 default-system states with
# `offload-jax generate` (compilation included, fresh process) took, on the idle 2-core CPU VM:
#   dp:        T=300 19.8 s, peak RSS 1.3 GiB (T=100 6.8 s; T=500 52 s; T=800 98 s, 2.5 GiB): compiling
#              the DP, unrolled over T, grows faster than linearly; the default batch of 65536 at
#              T=300 peaked at 2.5 GiB (40 s).
#   enumerate: T=13 18.5 s, 0.33 GiB (T=12 7.2 s; T=14 47.7 s): 3^T work per state; memory stays
#              O(batch * 3^8) whatever T, so its default batch need not shrink with T.
MAX_TASKS = {"dp": 300, "enumerate": 13}


def check_tasks(solver: str, tasks: int) -> None:
    """Raise ConfigError if `solver` does not accept `tasks` sub-tasks (MAX_TASKS)."""
    if tasks > MAX_TASKS[solver]:
        raise ConfigError(f"tasks: the {solver} solver accepts at most {MAX_TASKS[solver]} sub-tasks, "
                          f"got {tasks}")


def _digits(index: jax.Array, length: int) -> jax.Array:
    """Base-3 digits of `index`, most significant first (lexicographic order = index order)."""
    powers = NUM_SITES ** np.arange(length - 1, -1, -1)
    return (index // powers) % NUM_SITES


def _enumerate_one(costs: StageCosts, suffix_tasks: int) -> tuple[jax.Array, jax.Array]:
    """Enumeration for one state (no batch axis)."""
    t_len = num_tasks(costs)
    suffix = min(suffix_tasks, t_len)
    prefix = t_len - suffix

    def suffix_values(prefix_index: jax.Array) -> jax.Array:
        """Latencies of the 3^suffix placements that start with prefix number `prefix_index`."""
        if prefix == 0:
            vals = costs.first  # (3,): partial placements of length 1
            start = 1
        else:
            dig = _digits(prefix_index, prefix)
            acc = costs.first[dig[0]]
            for t in range(1, prefix):
                acc = acc + costs.step[t - 1, dig[t - 1], dig[t]]
            vals = acc + costs.step[prefix - 1, dig[prefix - 1]]  # (3,)
            start = prefix + 1
        for t in range(start, t_len):
            vals = (vals.reshape(-1, NUM_SITES)[:, :, None] + costs.step[t - 1][None]).reshape(-1)
        return (vals.reshape(-1, NUM_SITES) + costs.last[None]).reshape(-1)

    if prefix == 0:
        vals = suffix_values(jnp.int32(0))
        best = jnp.argmin(vals)  # first minimum = lexicographically smallest
        return best.astype(jnp.int32), vals[best]

    def body(carry, p):
        best_idx, best_val = carry
        vals = suffix_values(p)
        local = jnp.argmin(vals)
        val = vals[local]
        better = val < best_val  # strict: an earlier (smaller) prefix wins ties
        idx = p * NUM_SITES**suffix + local.astype(jnp.int32)
        return (jnp.where(better, idx, best_idx), jnp.where(better, val, best_val)), None

    init = (jnp.int32(0), jnp.asarray(jnp.inf, costs.first.dtype))
    (best_idx, best_val), _ = jax.lax.scan(body, init, jnp.arange(NUM_SITES**prefix, dtype=jnp.int32))
    return best_idx, best_val


def solve_enumerate(costs: StageCosts, suffix_tasks: int = 8) -> tuple[jax.Array, jax.Array]:
    """Exhaustive search. costs with batch axis (n,) -> (labels (n, T) int8, latency (n,)).

    Placements are scanned in chunks of 3^suffix_tasks (all placements sharing a
    prefix), so memory is O(n * 3^suffix_tasks) whatever T is.
    """
    if isinstance(suffix_tasks, bool) or not isinstance(suffix_tasks, int) or suffix_tasks < 1:
        raise ValueError(f"suffix_tasks must be an integer >= 1, got {suffix_tasks!r}")
    t_len = num_tasks(costs)
    check_tasks("enumerate", t_len)
    idx, val = jax.vmap(lambda c: _enumerate_one(c, suffix_tasks))(costs)
    labels = _digits(idx[:, None], t_len).astype(jnp.int8)
    return labels, val


def solve_dp(costs: StageCosts) -> tuple[jax.Array, jax.Array]:
    """Chain dynamic program. costs with batch axis (n,) -> (labels (n, T) int8, latency (n,)).

    value[s] is the least latency of a partial placement ending at site s; among
    equal values the lexicographically smallest partial placement is kept, which
    is decided from `rank` (the lexicographic order of the 3 kept partial placements).
    """
    check_tasks("dp", num_tasks(costs))
    return jax.vmap(_dp_one)(costs)


def _dp_one(costs: StageCosts) -> tuple[jax.Array, jax.Array]:
    t_len = num_tasks(costs)
    sites = jnp.arange(NUM_SITES)
    value = costs.first
    rank = sites
    preds = []

    for t in range(1, t_len):
        cand = value[:, None] + costs.step[t - 1]  # (a, b)
        value = jnp.min(cand, axis=0)
        pred = jnp.argmin(jnp.where(cand == value[None, :], rank[:, None], NUM_SITES), axis=0)
        key = rank[pred] * NUM_SITES + sites
        rank = jnp.sum(key[None, :] < key[:, None], axis=1)
        preds.append(pred)
    total = value + costs.last
    best = jnp.min(total)
    site = jnp.argmin(jnp.where(total == best, rank, NUM_SITES))
    x = [site]
    for pred in reversed(preds):
        x.append(pred[x[-1]])
    return jnp.stack(x[::-1]).astype(jnp.int8), best


def solve(costs: StageCosts, solver: str = "dp") -> tuple[jax.Array, jax.Array]:
    if solver == "dp":
        return solve_dp(costs)
    if solver == "enumerate":
        return solve_enumerate(costs)
    raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
