"""Losses for placement networks: logits (n, *decision_shape, 3), one 3-way softmax per decision.

* `cross_entropy`: imitation of the optimal labels (the paper's multi-label loss).
* `distillation_loss`: `alpha * CE(labels) + (1 - alpha) * temp^2 * KL(softmax(teacher/temp) ||
  softmax(student/temp))`, both terms averaged over decisions and batch (Hinton et al.'s temp^2
  keeps the soft term's gradient scale independent of the temperature).
* objective-aware terms, beyond the paper:
  - `latency_loss` (chain): the exact expected latency of the factorized placement distribution
    softmax(student) (`cost.expected_latency`) divided by the optimal latency;
  - `sampled_objective_loss` (any scenario, no closed form needed): the expected J / J* of placements
    drawn from softmax(student), whose gradient is estimated by the score function (REINFORCE with a
    leave-one-out baseline over the samples of each state).
With a `mask` (n, *decision_shape) the averages run over the decisions that matter only (dag padding
slots do not: their label is 0 by the tie rule and their site changes nothing).

`alpha`, `temperature` and the objective weight may be traced scalars, so a sweep can vmap over them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from offload_jax.scenarios.base import NUM_SITES
from offload_jax.scenarios.chain.cost import StageCosts, expected_latency


class LossWeights(NamedTuple):
    """Scalars (float32, possibly traced) that weigh the loss terms."""

    alpha: jax.Array | float = 1.0  # weight of CE on labels vs. the KD term
    temperature: jax.Array | float = 1.0
    latency_weight: jax.Array | float = 0.0  # weight of the objective-aware term
    regret_weight: jax.Array | float = 0.0  # weight of the single-change regret term


def _mean(values: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Mean over all entries, or over the entries where `mask`."""
    if mask is None:
        return jnp.mean(values)
    return jnp.sum(jnp.where(mask, values, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


def cross_entropy(logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean over batch and decisions of -log softmax(logits)[label]. logits (n, *D, 3), labels (n, *D)."""
    chex.assert_shape(logits, (*labels.shape, NUM_SITES))
    log_p = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(log_p, labels.astype(jnp.int32)[..., None], axis=-1)[..., 0]
    return -_mean(picked, mask)


def kd_divergence(student_logits: jax.Array, teacher_logits: jax.Array, temperature,
                  mask: jax.Array | None = None) -> jax.Array:
    """Mean over batch and decisions of KL(softmax(teacher/temp) || softmax(student/temp))."""
    chex.assert_equal_shape([student_logits, teacher_logits])
    log_q = jax.nn.log_softmax(student_logits / temperature, axis=-1)
    log_p = jax.nn.log_softmax(teacher_logits / temperature, axis=-1)
    return _mean(jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1), mask)


def distillation_loss(student_logits: jax.Array, teacher_logits: jax.Array, labels: jax.Array,
                      alpha, temperature, mask: jax.Array | None = None) -> jax.Array:
    """alpha * CE(labels) + (1 - alpha) * temp^2 * KL(teacher || student) (alpha = 1: CE only)."""
    ce = cross_entropy(student_logits, labels, mask)
    kd = kd_divergence(student_logits, jax.lax.stop_gradient(teacher_logits), temperature, mask)
    return alpha * ce + (1.0 - alpha) * temperature**2 * kd


def latency_loss(logits: jax.Array, costs: StageCosts, optimal_latency: jax.Array) -> jax.Array:
    """Chain: mean over the batch of E[latency] under softmax(logits), over the optimal latency (>= 1)."""
    probs = jax.nn.softmax(logits, axis=-1)
    return jnp.mean(expected_latency(costs, probs) / optimal_latency)


def sample_sites(key: jax.Array, logits: jax.Array, samples: int) -> jax.Array:
    """`samples` draws of a site per decision from softmax(logits) (..., 3): (samples, ...) int8.

    By the inverse CDF, one uniform per decision (u >= p0, u >= p0 + p1 counted): on the 2-core CPU
    1.3 ms for 16 x 512 x 10 draws, where `jax.random.categorical` (Gumbel-max: three uniforms and
    two logs per draw) took 6.0 ms (benchmarks/profile_objective.py), more than the dag schedules the
    draws are scored by."""
    probs = jax.nn.softmax(jax.lax.stop_gradient(logits), axis=-1)
    u = jax.random.uniform(key, (samples, *logits.shape[:-1]))
    below_edge = probs[..., 0]
    return (u >= below_edge).astype(jnp.int8) + (u >= below_edge + probs[..., 1]).astype(jnp.int8)


def sampled_objective_loss(logits: jax.Array, key: jax.Array, objective: Callable[[jax.Array], jax.Array],
                           optimal: jax.Array, samples: int = 4,
                           mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Score-function surrogate of E[J(x)] / J*, x drawn from softmax(logits) decision by decision.

    `objective(x)` maps placements (n, samples, *D) to J (n, samples) (a state's samples valued
    together: its tables are built once). Returns (surrogate, mean sampled J / J*): the
    surrogate's gradient is the leave-one-out REINFORCE estimate of the gradient of E[J / J*]
    (its value is not that expectation; the second output is, for logs). Masked decisions (padding)
    take part in no log-probability: their site changes nothing.
    """
    if samples < 2:
        raise ValueError(f"samples must be >= 2 (a leave-one-out baseline), got {samples}")
    x = sample_sites(key, logits, samples)
    ratio = jnp.swapaxes(objective(jnp.swapaxes(x, 0, 1)), 0, 1) / optimal  # (samples, n)
    baseline = (jnp.sum(ratio, axis=0, keepdims=True) - ratio) / (samples - 1)
    advantage = jax.lax.stop_gradient(ratio - baseline)
    log_p = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(log_p[None], x.astype(jnp.int32)[..., None], axis=-1)[..., 0]
    if mask is not None:
        picked = jnp.where(mask[None], picked, 0.0)
    log_prob = jnp.sum(picked.reshape(samples, picked.shape[1], -1), axis=-1)  # (samples, n)
    return jnp.mean(advantage * log_prob), jnp.mean(ratio)


def regret_loss(logits: jax.Array, regret: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean over states of sum over decisions of E_{s ~ softmax(logits)}[regret[s]].

    `regret` (n, *D, 3) holds J(label with that one decision moved to site s) / J(label) - 1 (zero at the
    label's site; `single_change_regret`), so the term is the first-order expected excess of J / J* of
    the factorized distribution around the label: exact when one decision at a time is wrong, and a
    cost-sensitive loss that weighs each possible mistake by what it costs. Deterministic (no samples).
    """
    chex.assert_equal_shape([logits, regret])
    per_decision = jnp.sum(jax.nn.softmax(logits, axis=-1) * regret, axis=-1)
    if mask is not None:
        per_decision = jnp.where(mask, per_decision, 0.0)
    return jnp.mean(jnp.sum(per_decision.reshape(per_decision.shape[0], -1), axis=-1))


def total_loss(logits: jax.Array, labels: jax.Array, weights: LossWeights, *,
               teacher_logits: jax.Array | None = None, objective_term: jax.Array | None = None,
               regret: jax.Array | None = None, mask: jax.Array | None = None) -> jax.Array:
    """The training objective: CE (or the distillation loss if teacher logits are given), plus
    `latency_weight * objective_term` if an objective-aware term (computed from these logits) is given,
    plus `regret_weight * regret_loss` if the labels' single-change regrets are given."""
    if teacher_logits is None:
        loss = cross_entropy(logits, labels, mask)
    else:
        loss = distillation_loss(logits, teacher_logits, labels, weights.alpha, weights.temperature, mask)
    if objective_term is not None:
        loss = loss + weights.latency_weight * objective_term
    if regret is not None:
        loss = loss + weights.regret_weight * regret_loss(logits, regret, mask)
    return loss
