"""Sampling primitives shared by the scenarios: ranges as call-time values, and the SPEC's wireless link.

A range is passed as a `Range` of float32 scalars (bounds and, for log-uniform draws, their logs
computed once on the host with numpy), so a sampler compiled once serves every range value.
"""

from __future__ import annotations

import functools
import operator
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Range(NamedTuple):
    """[lo, hi] as float32 scalars, with log(lo), log(hi) (numpy float32, for log-uniform draws)."""

    lo: jax.Array
    hi: jax.Array
    log_lo: jax.Array
    log_hi: jax.Array


def make_range(bounds) -> Range:
    """Range of a (low, high) pair; the logs of non-positive bounds are NaN (never used for them)."""
    lo, hi = np.float32(bounds[0]), np.float32(bounds[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        return Range(lo, hi, np.log(lo), np.log(hi))


# Both samplers clip to the float32 bounds: float32 rounding (of exp(log(low)), or near
# u = 1) could otherwise put a sample one ulp outside its range.
def log_uniform(u: jax.Array, r: Range) -> jax.Array:
    return jnp.clip(jnp.exp(r.log_lo + u * (r.log_hi - r.log_lo)), r.lo, r.hi)


def uniform(u: jax.Array, r: Range) -> jax.Array:
    return jnp.clip(r.lo + u * (r.hi - r.lo), r.lo, r.hi)


def rates(snr: jax.Array, subcarrier_free: jax.Array, subcarrier_bandwidth,
          downlink_factor) -> tuple[jax.Array, jax.Array]:
    """(rate_up, rate_down) in bit/s from the sub-carriers (last axis), as SPEC.md defines them."""
    # log1p: log2(1 + snr) in float32 is 0 for snr < 6e-8, and a lone free carrier must keep a rate > 0.
    bits_per_hz = jnp.log1p(snr) / np.float32(np.log(2.0))
    per_carrier = jnp.where(subcarrier_free, subcarrier_bandwidth * bits_per_hz, 0.0)
    # A left fold in carrier order, not jnp.sum: XLA may reorder a reduction depending on
    # the batch shape, and a state must be bit-identical whatever batch it is sampled in.
    rate_up = functools.reduce(operator.add, [per_carrier[..., i] for i in range(per_carrier.shape[-1])])
    return rate_up, downlink_factor * rate_up


class Link(NamedTuple):
    snr: jax.Array  # (N,) float32, linear
    subcarrier_free: jax.Array  # (N,) bool
    rate_up: jax.Array  # () float32
    rate_down: jax.Array  # () float32


def wireless_link(u_mean_snr, u_fading, u_free, u_fallback, mean_snr_db_range: Range, free_prob,
                  subcarrier_bandwidth, downlink_factor) -> Link:
    """One device's sub-carriers from uniforms: mean SNR, Rayleigh fading, free carriers, rates (SPEC)."""
    n = u_fading.shape[-1]
    mean_snr_db = uniform(u_mean_snr, mean_snr_db_range)
    # Exp(1): Rayleigh fading power gain. u = 0 has probability 2^-23 and would give g = 0,
    # hence a zero rate when that carrier is the only free one; the floor keeps snr > 0.
    fading = jnp.maximum(-jnp.log1p(-u_fading), np.float32(2.0**-24))
    snr = jnp.power(np.float32(10.0), mean_snr_db / 10.0) * fading
    free = u_free < free_prob
    fallback = jnp.minimum(jnp.floor(u_fallback * n).astype(jnp.int32), n - 1)
    free = jnp.where(jnp.any(free), free, jnp.arange(n) == fallback)
    rate_up, rate_down = rates(snr, free, subcarrier_bandwidth, downlink_factor)
    return Link(snr, free, rate_up, rate_down)


def edge_cores_free(u, edge_cores):
    """Free edge cores, uniform integer in [1, edge_cores]."""
    return jnp.minimum(jnp.floor(u * edge_cores).astype(jnp.int32) + 1, edge_cores)
