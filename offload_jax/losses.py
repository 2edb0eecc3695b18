"""Losses for placement networks: logits (n, T, 3), one 3-way softmax per sub-task.

* `cross_entropy`: imitation of the optimal labels (the paper's multi-label loss).
* `distillation_loss`: `alpha * CE(labels) + (1 - alpha) * temp^2 * KL(softmax(teacher/temp) ||
  softmax(student/temp))`, both terms averaged over sub-tasks and batch (Hinton et al.'s temp^2
  keeps the soft term's gradient scale independent of the temperature).
* `latency_loss`: beyond the paper, the exact expected latency of the factorized placement
  distribution softmax(student) (`cost.expected_latency`) divided by the optimal latency.

`alpha`, `temperature` and the latency weight may be traced scalars, so a sweep can vmap over them.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from offload_jax.scenarios.chain.cost import NUM_SITES, StageCosts, expected_latency


class LossWeights(NamedTuple):
    """Scalars (float32, possibly traced) that weigh the loss terms."""

    alpha: jax.Array | float = 1.0  # weight of CE on labels vs. the KD term
    temperature: jax.Array | float = 1.0
    latency_weight: jax.Array | float = 0.0


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean over batch and sub-tasks of -log softmax(logits)[label]. logits (n, T, 3), labels (n, T)."""
    chex.assert_shape(logits, (*labels.shape, NUM_SITES))
    log_p = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(log_p, labels.astype(jnp.int32)[..., None], axis=-1)[..., 0]
    return -jnp.mean(picked)


def kd_divergence(student_logits: jax.Array, teacher_logits: jax.Array, temperature) -> jax.Array:
    """Mean over batch and sub-tasks of KL(softmax(teacher/temp) || softmax(student/temp))."""
    chex.assert_equal_shape([student_logits, teacher_logits])
    log_q = jax.nn.log_softmax(student_logits / temperature, axis=-1)
    log_p = jax.nn.log_softmax(teacher_logits / temperature, axis=-1)
    return jnp.mean(jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1))


def distillation_loss(student_logits: jax.Array, teacher_logits: jax.Array, labels: jax.Array,
                      alpha, temperature) -> jax.Array:
    """alpha * CE(labels) + (1 - alpha) * temp^2 * KL(teacher || student) (alpha = 1: CE only)."""
    ce = cross_entropy(student_logits, labels)
    kd = kd_divergence(student_logits, jax.lax.stop_gradient(teacher_logits), temperature)
    return alpha * ce + (1.0 - alpha) * temperature**2 * kd


def latency_loss(logits: jax.Array, costs: StageCosts, optimal_latency: jax.Array) -> jax.Array:
    """Mean over the batch of E[latency] under softmax(logits), divided by the optimal latency (>= 1)."""
    probs = jax.nn.softmax(logits, axis=-1)
    return jnp.mean(expected_latency(costs, probs) / optimal_latency)


def total_loss(logits: jax.Array, labels: jax.Array, weights: LossWeights, *,
               teacher_logits: jax.Array | None = None, costs: StageCosts | None = None,
               optimal_latency: jax.Array | None = None) -> jax.Array:
    """The training objective: CE (or the distillation loss if teacher logits are given), plus
    `latency_weight * latency_loss` if the stage costs are given."""
    if teacher_logits is None:
        loss = cross_entropy(logits, labels)
    else:
        loss = distillation_loss(logits, teacher_logits, labels, weights.alpha, weights.temperature)
    if costs is not None:
        loss = loss + weights.latency_weight * latency_loss(logits, costs, optimal_latency)
    return loss
