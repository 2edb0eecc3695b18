"""Decision quality metrics, shared by training, evaluation, sweeps and experiments.

All are jittable and take a batch: placements `pred` and `label` (n, T) in {0,1,2},
the states' stage cost tables and their optimal latency (n,).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from offload_jax.scenarios.chain.cost import StageCosts, path_latency


def per_task_accuracy(pred: jax.Array, label: jax.Array) -> jax.Array:
    """(T,) share of states whose sub-task t is placed as in the optimal label."""
    return jnp.mean(pred == label, axis=0)


def accuracy(pred: jax.Array, label: jax.Array) -> jax.Array:
    """Mean per-sub-task accuracy (the paper's multi-label accuracy)."""
    return jnp.mean(pred == label)


def exact_match(pred: jax.Array, label: jax.Array) -> jax.Array:
    """Share of states whose whole placement equals the optimal one."""
    return jnp.mean(jnp.all(pred == label, axis=-1))


def latency_ratios(costs: StageCosts, pred: jax.Array, optimal_latency: jax.Array) -> jax.Array:
    """(n,) latency of `pred` divided by the optimal latency, per state (>= 1 up to rounding)."""
    return path_latency(costs, pred) / optimal_latency


def summary(costs: StageCosts, pred: jax.Array, label: jax.Array,
            optimal_latency: jax.Array) -> dict[str, jax.Array]:
    """The metrics every table reports, as scalars (plus `per_task_accuracy`, (T,))."""
    lat = path_latency(costs, pred)
    return {
        "accuracy": accuracy(pred, label),
        "per_task_accuracy": per_task_accuracy(pred, label),
        "exact_match": exact_match(pred, label),
        "latency_ratio_mean": jnp.mean(lat / optimal_latency),
        "latency_ratio_of_means": jnp.mean(lat) / jnp.mean(optimal_latency),
        "latency_mean_s": jnp.mean(lat),
    }
