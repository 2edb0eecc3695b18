"""From logits to placements: the per-decision argmax, and iterative decoding of a network that also
reads a partial placement (`ModelConfig.decode_steps` > 1).

A factorized network (one softmax per decision) takes every decision at once, so where two sub-tasks
are best placed together (both on the edge, or both in the cloud) it may split them. A conditional
network reads the decisions already taken: `decide` runs it `steps` times, each pass fixing the most
confident of the open decisions given those fixed before (MaskGIT-style decoding; Chang et al. 2022),
so later decisions see earlier ones. Padding decisions (`real` False) are fixed on site 0 from the
start, as the labels have them, and never given to the network (their input stays zeros). Training
(`train.py`) gives the network the label's sites on a subset of the real decisions and scores it on
the others: a random subset, or (`TrainConfig.partials` "confident") the ones the network is most
confident of, the subsets `decide` gives it.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from offload_jax.scenarios.base import NUM_SITES


def argmax_sites(logits: jax.Array) -> jax.Array:
    """Argmax over the last axis (sites), ties to the lowest label: jnp.argmax for non-NaN logits.

    Written as a chain of compares, which XLA fuses into one elementwise loop; jnp.argmax is a
    variadic reduce that costs about 3 us more per batch-1 decision on CPU (benchmarks/RESULTS.md).
    """
    best, arg = logits[..., 0], jnp.zeros(logits.shape[:-1], jnp.int8)
    for site in range(1, logits.shape[-1]):
        better = logits[..., site] > best
        best = jnp.where(better, logits[..., site], best)
        arg = jnp.where(better, jnp.int8(site), arg)
    return arg


def real_or_all(mask: jax.Array | None, shape: tuple[int, ...]) -> jax.Array:
    """The decisions that matter: `mask` (dag: the real slots), or all of `shape` when None (the chain)."""
    return jnp.ones(shape, bool) if mask is None else mask


def partial_placement(sites: jax.Array, known: jax.Array) -> jax.Array:
    """(n, *D, 3) float32 network input: the one-hot site of each known decision, zeros elsewhere."""
    return jax.nn.one_hot(sites, NUM_SITES, dtype=jnp.float32) * known[..., None]


def per_step(decisions: int, steps: int) -> int:
    """Decisions fixed by each pass but the last (which fixes all that are left)."""
    return -(-decisions // steps)


def most_confident(confidence: jax.Array, take: int | jax.Array) -> jax.Array:
    """(n, d) -> (n, d) bool: the `take` largest of each row (`take` an int, or (n, 1) ints: one per
    row), equal values by lower index (the set `jax.lax.top_k` returns), by rank: decision i is chosen
    when fewer than `take` decisions j beat it (c_j > c_i, or c_j == c_i and j < i). One fused
    compare-and-count where top_k is a sort call and its indices one more loop (at batch 1 each kernel
    call is the time)."""
    d = confidence.shape[-1]
    ci, cj = confidence[..., :, None], confidence[..., None, :]
    lower = jnp.arange(d)[None, :] < jnp.arange(d)[:, None]  # [i, j]: j < i
    beats = (cj > ci) | ((cj == ci) & lower)
    return jnp.sum(beats, axis=-1, dtype=jnp.int32) < take


def confidence(logits: jax.Array) -> jax.Array:
    """(..., 3) logits -> (...) the softmax's largest probability, 1 / sum(exp(logits - max)) (the max's
    own term is exp(0) = 1): how sure the network is of its argmax, which `decide` fixes first."""
    top = jnp.max(logits, axis=-1, keepdims=True)
    return 1.0 / jnp.sum(jnp.exp(logits - top), axis=-1)


def decide(logits_of: Callable[[jax.Array], jax.Array], real: jax.Array, steps: int) -> jax.Array:
    """(n, *D) int8 placements of a conditional network in `steps` passes (padding on 0).

    `logits_of(partial)` maps a partial placement (n, *D, 3) (`partial_placement`) to logits (n, *D, 3).
    Each pass but the last fixes its argmax on the `per_step(D, steps)` open decisions whose softmax is
    most confident (max probability; equal ones by lower index), or on all open ones if fewer are
    left; the last fixes all that are left. steps = 1: the argmax of one pass with nothing known but
    the padding.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    shape = real.shape
    n, d = shape[0], real.size // shape[0]
    known = ~real.reshape(n, d)
    sites = jnp.zeros((n, d), jnp.int8)
    take = per_step(d, steps)
    real = real.reshape(n, d)
    for step in range(steps):
        given = partial_placement(sites, known & real)  # padding stays zeros, as in training
        logits = logits_of(given.reshape(*shape, NUM_SITES)).reshape(n, d, NUM_SITES)
        pick = argmax_sites(logits)
        if step == steps - 1:
            return jnp.where(known, sites, pick).reshape(shape)
        fix = most_confident(jnp.where(known, -1.0, confidence(logits)), take) & ~known
        sites = jnp.where(fix, pick, sites)
        known = known | fix
    raise AssertionError("unreachable")  # the last pass returns
