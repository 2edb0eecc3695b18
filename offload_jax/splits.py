"""Training data on the device: a dataset split into a training and a held-out part, features
computed once with the statistics of the training part, for any scenario."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from offload_jax import scenarios
from offload_jax.config import ConfigError
from offload_jax.features import FeatureStats, compute_stats, normalize, raw_columns, raw_features
from offload_jax.scenarios.base import Scenario


class DataError(ConfigError):
    """Data that does not fit the request; the message names what differs."""


class Split(NamedTuple):
    """One part of the data on the device."""

    x: jax.Array  # (n, F) float32, normalized features
    label: jax.Array  # (n, *decision_shape) int8
    mask: jax.Array | None  # (n, *decision_shape) bool: the decisions that matter; None: all (the chain)
    state: Any  # the scenario's states (n, ...), for the objective
    optimal: jax.Array  # (n,) the label's objective J (the chain's: latency, seconds)


@dataclasses.dataclass(frozen=True)
class Prepared:
    """Training and held-out data, normalized with statistics of the training split only."""

    scenario: Scenario
    stats: FeatureStats
    train: Split
    eval: Split
    info: dict  # where the data came from and the split sizes (recorded in run.json)

    @property
    def system(self):
        """The scenario's system configuration (SystemConfig or DagConfig)."""
        return self.scenario.cfg


_FEATURE_CHUNK = 65_536  # states per jitted feature batch: bounds the intermediate memory


def _raw_features_np(states) -> np.ndarray:
    n = states.cycles.shape[0]
    fn = jax.jit(raw_features)
    parts = []
    for start in range(0, n, _FEATURE_CHUNK):
        chunk = type(states)(*(jnp.asarray(np.asarray(v)[start:start + _FEATURE_CHUNK]) for v in states))
        parts.append(np.asarray(fn(chunk)))
    return np.concatenate(parts, axis=0)


def _take(states, sl: slice):
    return type(states)(*(np.asarray(v)[sl] for v in states))


def default_holdout(num_states: int) -> int:
    """min(5%, 50k) of the data, at least 1."""
    return max(1, min(num_states // 20, 50_000))


def _split(scenario: Scenario, states, label, optimal, stats: FeatureStats, raw: np.ndarray) -> Split:
    state = type(states)(*(jnp.asarray(v) for v in states))
    mask = None if scenario.name == "chain" else jnp.asarray(scenario.real_mask(state))
    return Split(x=normalize(jnp.asarray(raw), stats), label=jnp.asarray(label, jnp.int8), mask=mask,
                 state=state, optimal=jnp.asarray(optimal, jnp.float32))


def prepare(states, label, optimal, scenario: Scenario, *, holdout: int | None = None,
            val: tuple[Any, Any, Any] | None = None, info: dict | None = None) -> Prepared:
    """Split (the last `holdout` states are held out, unless `val` = (states, label, optimal) is given),
    compute features once, and put both splits on the device. `optimal` is the label's objective J;
    `scenario` may be given as its system configuration."""
    scenario = scenarios.as_scenario(scenario)
    n = int(np.asarray(label).shape[0])
    for part, what in ((states, "states"), (val[0] if val else states, "validation states")):
        shapes = {k: np.shape(v)[1:] for k, v in part._asdict().items()}
        want = {k: s for k, (s, _) in scenario.state_shapes().items()}
        if shapes != want:
            raise DataError(f"{what} have shapes {shapes}; the system says {want}")
    if np.shape(label) != (n, *scenario.decision_shape):
        raise DataError(f"labels have shape {np.shape(label)}, expected {(n, *scenario.decision_shape)}")
    if val is None:
        holdout = default_holdout(n) if holdout is None else int(holdout)
        if not 1 <= holdout < n:
            raise ConfigError(f"--holdout must be in [1, {n - 1}] for {n} states, got {holdout}")
        tr, ev = slice(0, n - holdout), slice(n - holdout, n)
        train_part = (_take(states, tr), np.asarray(label)[tr], np.asarray(optimal)[tr])
        eval_part = (_take(states, ev), np.asarray(label)[ev], np.asarray(optimal)[ev])
    else:
        train_part = (states, np.asarray(label), np.asarray(optimal))
        eval_part = (val[0], np.asarray(val[1]), np.asarray(val[2]))
    raw_train = _raw_features_np(train_part[0])
    stats = compute_stats(raw_train, keep=raw_columns(scenario.cfg))
    train = _split(scenario, *train_part, stats, raw_train)
    del raw_train
    evald = _split(scenario, *eval_part, stats, _raw_features_np(eval_part[0]))
    info = {**(info or {}), "num_train": int(train.x.shape[0]), "num_eval": int(evald.x.shape[0])}
    return Prepared(scenario=scenario, stats=stats, train=train, eval=evald, info=info)


def data_source(data_dir: str | os.PathLike, *, holdout: int | None = None,
                val_data: str | os.PathLike | None = None, max_states: int | None = None) -> dict:
    """What decides the data of a run trained on `data_dir`, read from the manifests alone (no shard is
    loaded): the datasets' fingerprints and how they are cut. Part of the run's identity."""
    from offload_jax import dataset  # noqa: PLC0415

    manifest = dataset.read_manifest(data_dir)
    states = manifest["num_states"] if max_states is None else min(max_states, manifest["num_states"])
    source = {"dataset": dataset.fingerprint(manifest), "states": states}
    if val_data is None:
        source["holdout"] = default_holdout(states) if holdout is None else holdout
    else:
        source["val_dataset"] = dataset.fingerprint(dataset.read_manifest(val_data))
    return source


def load_data(data_dir: str | os.PathLike, *, holdout: int | None = None,
              val_data: str | os.PathLike | None = None, max_states: int | None = None) -> Prepared:
    """A dataset written by `offload-jax generate` (any scenario), split and prepared for training."""
    from offload_jax import dataset  # noqa: PLC0415 (only the CLI path reads from disk)

    source = data_source(data_dir, holdout=holdout, val_data=val_data, max_states=max_states)
    ds = dataset.load(data_dir, verify=True, max_states=max_states)
    scenario = ds.scenario
    info = {"data": os.fspath(data_dir), "seed": ds.manifest.get("seed"), "source": source}
    val = None
    if val_data is not None:
        vd = dataset.load(val_data, verify=True)
        if vd.scenario != scenario:
            raise DataError(f"--val-data {os.fspath(val_data)!r} has another system than --data")
        val = (vd.states, vd.label, vd.objective)
        info["val_data"] = os.fspath(val_data)
    else:
        info["holdout"] = default_holdout(ds.num_states) if holdout is None else int(holdout)
    return prepare(ds.states, ds.label, ds.objective, scenario, holdout=holdout, val=val, info=info)
