"""Raw SPEC state -> normalized network input.

Sizes, speeds and rates span orders of magnitude, so they enter as logs. The
stage cost tables of `cost.py` (also as logs) are included too: they are what
the optimal placement actually depends on, and they are cheap to compute on the device.

Normalization statistics are computed on the training set and saved with every
checkpoint, so inference needs nothing else. The numpy-only export
(`export_runtime.py`) restates `raw_features` in numpy; a test keeps them equal.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from offload_jax.config import SystemConfig
from offload_jax.cost import stage_costs
from offload_jax.system import SystemState

FEATURES_VERSION = "logs+stage-costs/1"
COST_EPS = 1e-6  # seconds; some stage costs are exactly 0 (e.g. returning from local to local)


class FeatureStats(NamedTuple):
    mean: jax.Array  # (F,)
    std: jax.Array  # (F,)


def num_features(tasks: int, subcarriers: int) -> int:
    return 11 * tasks + 2 * subcarriers + 5


def feature_spec(cfg: SystemConfig) -> dict:
    """What a checkpoint records so a mismatched dataset can be refused."""
    return {"version": FEATURES_VERSION, "tasks": cfg.tasks, "subcarriers": cfg.subcarriers,
            "num_features": num_features(cfg.tasks, cfg.subcarriers)}


def raw_features(state: SystemState) -> jax.Array:
    """(n, F) float32 unnormalized features of a batch of states."""
    n = state.cycles.shape[0]
    costs = stage_costs(state)
    scalars = jnp.stack([state.f_local, state.f_edge, state.f_cloud, state.rate_up,
                         state.rate_down, state.backhaul_rate], axis=-1)
    parts = [
        jnp.log(state.cycles),
        jnp.log(state.data_bits),
        jnp.log(scalars),
        state.cloud_delay[:, None],
        jnp.log1p(state.snr),
        state.subcarrier_free.astype(jnp.float32),
        jnp.log(costs.first + COST_EPS),
        jnp.log(costs.step.reshape(n, -1) + COST_EPS),
        jnp.log(costs.last + COST_EPS),
    ]
    return jnp.concatenate(parts, axis=-1).astype(jnp.float32)


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
