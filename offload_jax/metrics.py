"""Decision quality metrics, shared by training, evaluation, sweeps and experiments.

All are jittable and take a batch: placements `pred` and `label` (n, *decision_shape) in {0,1,2}
((n, T) chain, (n, U, T) dag) and, where a scenario has padding slots, `mask` (same shape, bool):
the decisions that matter (`Scenario.real_mask`); None means every decision matters. Per-state
values are totals over users: seconds of latency, joules of device energy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from offload_jax.scenarios.base import Objective
from offload_jax.scenarios.chain.cost import StageCosts, path_latency


def per_task_accuracy(pred: jax.Array, label: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """(*decision_shape,) share of states whose decision d is as in the optimal label, among the states
    where d matters (NaN where it matters in none)."""
    if mask is None:
        return jnp.mean(pred == label, axis=0)
    return jnp.sum((pred == label) & mask, axis=0) / jnp.sum(mask, axis=0)


def accuracy(pred: jax.Array, label: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Share of the decisions that matter placed as in the optimal label (the paper's multi-label
    accuracy)."""
    if mask is None:
        return jnp.mean(pred == label)
    return jnp.sum((pred == label) & mask) / jnp.sum(mask)


def exact_match(pred: jax.Array, label: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Share of states whose every decision that matters equals the optimal label's."""
    same = pred == label if mask is None else (pred == label) | ~mask
    return jnp.mean(jnp.all(same.reshape(same.shape[0], -1), axis=1))


def _per_state(a: jax.Array) -> jax.Array:
    """(n,) total over users of per-state, per-user values ((n,) or (n, U))."""
    return a if a.ndim == 1 else jnp.sum(a.reshape(a.shape[0], -1), axis=1)


def scores(pred: jax.Array, label: jax.Array, mask: jax.Array | None, value: Objective,
           optimal: Objective) -> dict[str, jax.Array]:
    """The metrics of placements `pred` whose objective is `value`, against the optimal `label` whose
    objective is `optimal` (`Scenario.objective`'s fields, per state). Means of per-state ratios:
    `objective_ratio_mean` (J / optimal J), `latency_ratio_mean` and, where the scenario has energy,
    `energy_ratio_mean` (totals over users); `objective_ratio_excess_sq`, the mean of (J / optimal J -
    1)^2 (with the ratio's mean, over batches, its standard error over states); `accuracy`,
    `per_task_accuracy`, `exact_match` over the decisions that matter; and `latency_s`, `energy_j`:
    `value`'s latency and energy as they are (per state, and per user where the scenario has users),
    for sums over states."""
    latency, optimal_latency = _per_state(value.latency), _per_state(optimal.latency)
    ratio = value.value / optimal.value
    out = {
        "objective_ratio_mean": jnp.mean(ratio),
        "objective_ratio_excess_sq": jnp.mean(jnp.square(ratio - 1.0)),  # for the standard error
        "latency_ratio_mean": jnp.mean(latency / optimal_latency),
        "accuracy": accuracy(pred, label, mask),
        "per_task_accuracy": per_task_accuracy(pred, label, mask),
        "exact_match": exact_match(pred, label, mask),
        "latency_s": value.latency,
        "objective_ratio": ratio,  # per state, for paired comparisons (`paired_difference`)
    }
    if value.energy is not None:
        out["energy_ratio_mean"] = jnp.mean(_per_state(value.energy) / _per_state(optimal.energy))
        out["energy_j"] = value.energy
    return out


def paired_difference(ratio: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """A policy's per-state J / J* minus a reference policy's on the same states (n,): the mean
    difference (negative: the policy is better), its standard error (sample variance over the states),
    and the shares of states where the policy is strictly better and strictly worse. On the same states
    the difference's error is not the two means' errors combined: it is smaller where the two
    policies err on the same states, larger where they err on different ones."""
    d = np.asarray(ratio, np.float64) - np.asarray(reference, np.float64)
    n = d.shape[0]
    sem = float(np.std(d, ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    return {"objective_ratio_diff_mean": float(np.mean(d)), "objective_ratio_diff_sem": sem,
            "better_share": float(np.mean(d < 0)), "worse_share": float(np.mean(d > 0))}


def summary(costs: StageCosts, pred: jax.Array, label: jax.Array,
            optimal_latency: jax.Array) -> dict[str, jax.Array]:
    """The chain's metrics from its stage cost tables (training's held-out evaluation), as scalars
    (plus `per_task_accuracy`, (T,)): accuracy, exact match, latency ratio (mean of per-state
    ratios, and of means), mean latency in seconds."""
    lat = path_latency(costs, pred)
    return {
        "accuracy": accuracy(pred, label),
        "per_task_accuracy": per_task_accuracy(pred, label),
        "exact_match": exact_match(pred, label),
        "latency_ratio_mean": jnp.mean(lat / optimal_latency),
        "latency_ratio_of_means": jnp.mean(lat) / jnp.mean(optimal_latency),
        "latency_mean_s": jnp.mean(lat),
    }
