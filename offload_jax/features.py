"""Raw SPEC state -> normalized network input.

Sizes, speeds and rates span orders of magnitude, so they enter as logs. The
stage cost tables of `cost.py` (also as logs) are included too: they are what
the optimal placement actually depends on, and they are cheap to compute on the device.

Normalization statistics are computed on the training set and saved with every
checkpoint, so inference needs nothing else. Which features, and how each is computed
from the packed state, is written once, as index arrays (`export_runtime.feature_recipe`,
numpy only); `raw_features` applies them with jax.numpy, the numpy runtime with numpy.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from offload_jax.config import SystemConfig
from offload_jax.export_runtime import COST_EPS, POOL_CONSTANTS, feature_recipe  # noqa: F401 (COST_EPS re-exported)
from offload_jax.system import SystemState, pack

FEATURES_VERSION = "logs+stage-costs/1"


class FeatureStats(NamedTuple):
    mean: jax.Array  # (F,)
    std: jax.Array  # (F,)


def num_features(tasks: int, subcarriers: int) -> int:
    return 11 * tasks + 2 * subcarriers + 5


def feature_spec(cfg: SystemConfig) -> dict:
    """What a checkpoint records so a mismatched dataset can be refused."""
    return {"version": FEATURES_VERSION, "tasks": cfg.tasks, "subcarriers": cfg.subcarriers,
            "num_features": num_features(cfg.tasks, cfg.subcarriers)}


@functools.cache
def _recipe(tasks: int, subcarriers: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return feature_recipe(tasks, subcarriers)


def raw_features(state: SystemState) -> jax.Array:
    """(n, F) float32 unnormalized features of a batch of states.

    Computed from the packed states by `export_runtime.feature_recipe` (shared with the numpy
    runtime): one gather, a division, a sum and a log, which XLA fuses into a couple of kernels
    (a batch-1 decision pays per kernel). The stage costs it builds equal `cost.stage_costs`
    up to float32 rounding (tests/test_features.py checks it against that).
    """
    tasks, subcarriers = state.cycles.shape[-1], state.snr.shape[-1]
    num, den, logged = _recipe(tasks, subcarriers)
    packed = pack(state)
    consts = jnp.broadcast_to(jnp.asarray(POOL_CONSTANTS, jnp.float32), (*packed.shape[:-1], 3))
    pool = jnp.concatenate([packed, consts], axis=-1)
    # jnp.take with mode="clip" (the indices are in bounds): NumPy-style indexing lowers to a gather
    # that is ~10x slower on a CPU batch of 1024.
    quotients = (jnp.take(pool, num.ravel(), axis=-1, mode="clip")
                 / jnp.take(pool, den.ravel(), axis=-1, mode="clip"))
    s = quotients.reshape(*packed.shape[:-1], *num.shape).sum(axis=-2)
    return jnp.where(logged, jnp.log(jnp.where(logged, s, 1.0)), s)


def compute_stats(raw: jax.Array | np.ndarray) -> FeatureStats:
    """Per-feature mean and std over a training set of raw features (constant features get std 1)."""
    raw = np.asarray(raw, dtype=np.float64)
    mean = raw.mean(axis=0)
    std = raw.std(axis=0)
    std = np.where(std < 1e-6, 1.0, std)
    return FeatureStats(mean=jnp.asarray(mean, jnp.float32), std=jnp.asarray(std, jnp.float32))


def normalize(raw: jax.Array, stats: FeatureStats) -> jax.Array:
    return (raw - stats.mean) / stats.std


def features(state: SystemState, stats: FeatureStats) -> jax.Array:
    """(n, F) normalized network input."""
    return normalize(raw_features(state), stats)
