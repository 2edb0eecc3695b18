"""Raw SPEC state -> normalized network input.

Sizes, speeds and rates span orders of magnitude, so they enter as logs. The
stage cost tables of `cost.py` (also as logs) are included too: they are what
the optimal placement actually depends on, and they are cheap to compute on the device.

A network reads either all features or only the first `num_fields` of them, the logs of the
state's fields (`ModelConfig.inputs`: "all" or "fields"); the latter are one cheap XLA kernel at
batch 1 and the network learns the costs from them (the default student reads them).

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

from offload_jax.config import INPUTS, SystemConfig
from offload_jax.export_runtime import (  # noqa: F401 (COST_EPS re-exported)
    COST_EPS,
    POOL_CONSTANTS,
    feature_recipe,
    field_sources,
)
from offload_jax.scenarios.chain.system import SystemState, pack

FEATURES_VERSION = "logs+stage-costs/1"


class FeatureStats(NamedTuple):
    mean: jax.Array  # (F,)
    std: jax.Array  # (F,)


def num_features(tasks: int, subcarriers: int) -> int:
    return 11 * tasks + 2 * subcarriers + 5


def num_fields(tasks: int, subcarriers: int) -> int:
    """How many features come straight from the state's fields: the first ones, before the stage costs."""
    return 2 * tasks + 2 * subcarriers + 8


def num_inputs(inputs: str, tasks: int, subcarriers: int) -> int:
    """How many features a network with `ModelConfig.inputs` reads: the first ones of `raw_features`."""
    if inputs not in INPUTS:
        raise ValueError(f"inputs must be one of {INPUTS}, got {inputs!r}")
    return (num_features if inputs == "all" else num_fields)(tasks, subcarriers)


def feature_spec(cfg: SystemConfig) -> dict:
    """What a checkpoint records so a mismatched dataset can be refused."""
    return {"version": FEATURES_VERSION, "tasks": cfg.tasks, "subcarriers": cfg.subcarriers,
            "num_features": num_features(cfg.tasks, cfg.subcarriers)}


@functools.cache
def _recipe(tasks: int, subcarriers: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return feature_recipe(tasks, subcarriers)


def raw_features(state: SystemState, count: int | None = None) -> jax.Array:
    """(n, F) float32 unnormalized features of a batch of states; only the first `count` if given.

    Computed from the packed states by `export_runtime.feature_recipe` (shared with the numpy
    runtime): one gather, a division, a sum and a log, which XLA fuses into a couple of kernels
    (a batch-1 decision pays per kernel). The stage costs it builds equal `cost.stage_costs`
    up to float32 rounding (tests/test_features.py checks it against that).
    The first `num_fields` features (no stage costs) are one vectorized kernel: logs of slices of the
    packed state, the recipe's values to the bit (a field x is x / 1 + 0 / 1 + ... there).
    """
    tasks, subcarriers = state.cycles.shape[-1], state.snr.shape[-1]
    packed = pack(state)
    total = num_features(tasks, subcarriers)
    count = total if count is None else count
    if not 1 <= count <= total:
        raise ValueError(f"count must be in [1, {total}], got {count}")
    if count <= num_fields(tasks, subcarriers):
        return _field_features(packed, tasks, subcarriers)[..., :count]
    num, den, logged = (a[..., :count] for a in _recipe(tasks, subcarriers))
    consts = jnp.broadcast_to(jnp.asarray(POOL_CONSTANTS, jnp.float32), (*packed.shape[:-1], 3))
    pool = jnp.concatenate([packed, consts], axis=-1)
    # jnp.take with mode="clip" (the indices are in bounds): NumPy-style indexing lowers to a gather
    # that is ~10x slower on a CPU batch of 1024.
    quotients = (jnp.take(pool, num.ravel(), axis=-1, mode="clip")
                 / jnp.take(pool, den.ravel(), axis=-1, mode="clip"))
    s = quotients.reshape(*packed.shape[:-1], *num.shape).sum(axis=-2)
    return jnp.where(logged, jnp.log(jnp.where(logged, s, 1.0)), s)


def _field_features(packed: jax.Array, tasks: int, subcarriers: int) -> jax.Array:
    """The first `num_fields` features from the packed states (`export_runtime.field_sources`), as
    slices of runs of consecutive indices: XLA fuses them into one kernel (a gather makes two)."""
    logs, plain, log1p = field_sources(tasks, subcarriers)

    def take(idx: np.ndarray) -> jax.Array:
        cuts = np.flatnonzero(np.diff(idx) != 1) + 1
        runs = np.split(idx, cuts)
        return jnp.concatenate([packed[..., r[0]:r[-1] + 1] for r in runs], axis=-1)

    return jnp.concatenate([jnp.log(take(logs)), take(plain[:1]),  # cloud_delay
                            jnp.log(take(log1p) + 1.0),  # log(snr / 1 + 1 / 1)
                            take(plain[1:])], axis=-1)  # subcarrier_free


def compute_stats(raw: jax.Array | np.ndarray) -> FeatureStats:
    """Per-feature mean and std over a training set of raw features (constant features get std 1)."""
    raw = np.asarray(raw, dtype=np.float64)
    mean = raw.mean(axis=0)
    std = raw.std(axis=0)
    std = np.where(std < 1e-6, 1.0, std)
    return FeatureStats(mean=jnp.asarray(mean, jnp.float32), std=jnp.asarray(std, jnp.float32))


def normalize(raw: jax.Array, stats: FeatureStats) -> jax.Array:
    return (raw - stats.mean) / stats.std


def features(state: SystemState, stats: FeatureStats, count: int | None = None) -> jax.Array:
    """(n, F) normalized network input; the first `count` features if given (`num_inputs`)."""
    raw = raw_features(state, count)
    return normalize(raw, FeatureStats(stats.mean[:raw.shape[-1]], stats.std[:raw.shape[-1]]))
