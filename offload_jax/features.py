"""Raw SPEC state (chain or dag) -> normalized network input.

Sizes, speeds and rates span orders of magnitude, so they enter as logs. Chain: the state's fields,
then the stage cost tables of `scenarios/chain/cost.py` (also as logs): what the optimal placement
actually depends on, and cheap to compute on the device. A chain network reads either all features
or only the first `num_fields` of them (`ModelConfig.inputs`: "all" or "fields"); the latter are one
cheap XLA kernel at batch 1 and the network learns the costs from them (the default student).
Dag: per sub-task slot its cycles, compute time on each site, input/result bits and their transfer
times, bits from predecessors and to successors, in- and out-degree; the adjacency (0/1, read
unnormalized); per user its device speed and link rates; the shared edge, cloud and backhaul
(`export_runtime.dag_feature_recipe`, `dag_feature_layout`).

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
from offload_jax.export_runtime import (  # noqa: F401 (COST_EPS and the versions re-exported)
    COST_EPS,
    DAG_FEATURES_VERSION,
    FEATURES_VERSION,
    POOL_CONSTANTS,
    dag_feature_recipe,
    dag_raw_columns,
    feature_recipe,
    field_sources,
)
from offload_jax.scenarios.chain.system import pack
from offload_jax.scenarios.dag.config import DagConfig
from offload_jax.scenarios.dag.state import DagState


class FeatureStats(NamedTuple):
    mean: jax.Array  # (F,)
    std: jax.Array  # (F,)


def _is_dag(cfg) -> bool:
    return isinstance(cfg, DagConfig)


def num_features(cfg) -> int:
    """How many features a state of the system `cfg` (SystemConfig or DagConfig) has."""
    if _is_dag(cfg):
        return dag_feature_recipe(cfg.users, cfg.tasks, cfg.subcarriers)[0].shape[1]
    return 11 * cfg.tasks + 2 * cfg.subcarriers + 5


def num_fields(cfg) -> int:
    """How many features come straight from the state's fields: the chain's first ones, before the
    stage costs (dag features have no cheaper prefix: all of them)."""
    if _is_dag(cfg):
        return num_features(cfg)
    return 2 * cfg.tasks + 2 * cfg.subcarriers + 8


def num_inputs(inputs: str, cfg) -> int:
    """How many features a network with `ModelConfig.inputs` reads: the first ones of `raw_features`."""
    if inputs not in INPUTS:
        raise ValueError(f"inputs must be one of {INPUTS}, got {inputs!r}")
    return (num_features if inputs == "all" else num_fields)(cfg)


def feature_spec(cfg) -> dict:
    """What a checkpoint records so a mismatched dataset can be refused."""
    if _is_dag(cfg):
        return {"version": DAG_FEATURES_VERSION, "scenario": "dag", "users": cfg.users, "tasks": cfg.tasks,
                "subcarriers": cfg.subcarriers, "num_features": num_features(cfg)}
    return {"version": FEATURES_VERSION, "tasks": cfg.tasks, "subcarriers": cfg.subcarriers,
            "num_features": num_features(cfg)}


def raw_columns(cfg) -> np.ndarray:
    """bool (F,): the features a network reads unnormalized (0/1 ones: the dag's adjacency)."""
    if _is_dag(cfg):
        return dag_raw_columns(cfg.users, cfg.tasks)
    return np.zeros(num_features(cfg), bool)


@functools.cache
def _recipe(key: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return dag_feature_recipe(*key[1:]) if key[0] == "dag" else feature_recipe(*key[1:])


def _apply_recipe(packed: jax.Array, num: np.ndarray, den: np.ndarray, logged: np.ndarray) -> jax.Array:
    """feature j = [log] sum_r pool[num[r, j]] / pool[den[r, j]] with pool = (packed, 0, 1, COST_EPS)."""
    consts = jnp.broadcast_to(jnp.asarray(POOL_CONSTANTS, jnp.float32), (*packed.shape[:-1], 3))
    pool = jnp.concatenate([packed, consts], axis=-1)
    # jnp.take with mode="clip" (the indices are in bounds): NumPy-style indexing lowers to a gather
    # that is ~10x slower on a CPU batch of 1024.
    quotients = (jnp.take(pool, num.ravel(), axis=-1, mode="clip")
                 / jnp.take(pool, den.ravel(), axis=-1, mode="clip"))
    s = quotients.reshape(*packed.shape[:-1], *num.shape).sum(axis=-2)
    return jnp.where(logged, jnp.log(jnp.where(logged, s, 1.0)), s)


def raw_features(state, count: int | None = None) -> jax.Array:
    """(n, F) float32 unnormalized features of a batch of states (chain or dag); only the first `count`.

    Computed from the packed states by the scenario's recipe in `export_runtime` (shared with the
    numpy runtime): one gather, a division, a sum and a log, which XLA fuses into a couple of kernels
    (a batch-1 decision pays per kernel). The chain's stage costs it builds equal `cost.stage_costs`
    up to float32 rounding (tests/test_features.py checks it against that). The chain's first
    `num_fields` features (no stage costs) are one vectorized kernel: logs of slices of the packed
    state, the recipe's values to the bit (a field x is x / 1 + 0 / 1 + ... there).
    """
    packed = pack(state)
    if isinstance(state, DagState):
        users, tasks = state.cycles.shape[-2:]
        num, den, logged = _recipe(("dag", users, tasks, state.snr.shape[-1]))
        count = num.shape[1] if count is None else count
        if not 1 <= count <= num.shape[1]:
            raise ValueError(f"count must be in [1, {num.shape[1]}], got {count}")
        return _apply_recipe(packed, num[:, :count], den[:, :count], logged[:count])
    tasks, subcarriers = state.cycles.shape[-1], state.snr.shape[-1]
    cfg = SystemConfig(tasks=tasks, subcarriers=subcarriers)
    total = num_features(cfg)
    count = total if count is None else count
    if not 1 <= count <= total:
        raise ValueError(f"count must be in [1, {total}], got {count}")
    if count <= num_fields(cfg):
        return _field_features(packed, tasks, subcarriers)[..., :count]
    num, den, logged = (a[..., :count] for a in _recipe(("chain", tasks, subcarriers)))
    return _apply_recipe(packed, num, den, logged)


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


def compute_stats(raw: jax.Array | np.ndarray, keep: np.ndarray | None = None) -> FeatureStats:
    """Per-feature mean and std over a training set of raw features (constant features get std 1;
    the columns in `keep` (bool (F,), `raw_columns`) mean 0 and std 1: read as they are)."""
    raw = np.asarray(raw, dtype=np.float64)
    mean = raw.mean(axis=0)
    std = raw.std(axis=0)
    std = np.where(std < 1e-6, 1.0, std)
    if keep is not None:
        mean, std = np.where(keep, 0.0, mean), np.where(keep, 1.0, std)
    return FeatureStats(mean=jnp.asarray(mean, jnp.float32), std=jnp.asarray(std, jnp.float32))


def normalize(raw: jax.Array, stats: FeatureStats) -> jax.Array:
    return (raw - stats.mean) / stats.std


def features(state, stats: FeatureStats, count: int | None = None) -> jax.Array:
    """(n, F) normalized network input; the first `count` features if given (`num_inputs`)."""
    raw = raw_features(state, count)
    return normalize(raw, FeatureStats(stats.mean[:raw.shape[-1]], stats.std[:raw.shape[-1]]))
