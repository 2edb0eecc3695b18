"""Training runs on disk: Orbax checkpoints plus a small `run.json`.

A run directory holds

    RUN/run.json                 what the run is (kind, step, params, configs, last metrics); atomic writes
    RUN/checkpoints/<step>/      Orbax items: params, opt_state (optional), stats, config (JSON)

`save_run` / `load_run` / `predict_logits` are the inference-side API used by
evaluation, policies and export.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from offload_jax import __version__
from offload_jax.config import ConfigError, ModelConfig, SystemConfig, TrainConfig
from offload_jax.features import FeatureStats, feature_spec, features, num_features
from offload_jax.models import PlacementMLP, count_params
from offload_jax.system import SystemState, tasks_of

RUN_JSON = "run.json"
CHECKPOINTS = "checkpoints"
RUN_FORMAT = "offload-jax-run/1"


class RunError(ConfigError):
    """A run directory is missing, corrupt, or does not fit the data; the message names the directory."""


@dataclasses.dataclass
class LoadedRun:
    """A trained model ready for inference."""

    model: PlacementMLP
    stats: FeatureStats
    model_cfg: ModelConfig
    system: SystemConfig
    meta: dict  # run.json: {"kind": ..., "step": ..., "params": ..., ...}


# --- params <-> model ---------------------------------------------------------------------------


def abstract_model(model_cfg: ModelConfig, system: SystemConfig) -> PlacementMLP:
    """The model's structure with ShapeDtypeStruct leaves (no allocation)."""
    in_features = num_features(system.tasks, system.subcarriers)
    return nnx.eval_shape(lambda: PlacementMLP(in_features, system.tasks, model_cfg, rngs=nnx.Rngs(0)))


def init_params(key: jax.Array, model_cfg: ModelConfig, system: SystemConfig) -> dict:
    """Fresh parameters as a pure dict (jittable and vmappable in `key`)."""
    in_features = num_features(system.tasks, system.subcarriers)
    model = PlacementMLP(in_features, system.tasks, model_cfg, rngs=nnx.Rngs(params=key))
    return nnx.to_pure_dict(nnx.state(model))


def graphdef_of(model_cfg: ModelConfig, system: SystemConfig) -> nnx.GraphDef:
    return nnx.split(abstract_model(model_cfg, system))[0]


def model_from_params(params: dict, model_cfg: ModelConfig, system: SystemConfig) -> PlacementMLP:
    return nnx.merge(graphdef_of(model_cfg, system), params)


def params_of(model: PlacementMLP) -> dict:
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


# --- run directory --------------------------------------------------------------------------------


def _write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _manager(run_dir: Path, read_only: bool = False) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=2, enable_async_checkpointing=False, read_only=read_only,
        create=not read_only, cleanup_tmp_directories=not read_only)
    return ocp.CheckpointManager(run_dir.resolve() / CHECKPOINTS, options=options)


def _config_item(model_cfg: ModelConfig, system: SystemConfig, kind: str,
                 train_cfg: TrainConfig | None, extra: dict | None = None) -> dict:
    return {"format": RUN_FORMAT, "kind": kind, "model": model_cfg.to_dict(), "system": system.to_dict(),
            "features": feature_spec(system), "train": train_cfg.to_dict() if train_cfg else None,
            **(extra or {})}


def _save_checkpoint(mgr: ocp.CheckpointManager, step: int, params: dict, stats: FeatureStats,
                     config_item: dict, opt_state: Any = None) -> None:
    items = {
        "params": ocp.args.StandardSave(params),
        "stats": ocp.args.StandardSave({"mean": stats.mean, "std": stats.std}),
        "config": ocp.args.JsonSave(config_item),
    }
    if opt_state is not None:
        items["opt_state"] = ocp.args.StandardSave(opt_state)
    mgr.save(step, args=ocp.args.Composite(**items), force=True)
    mgr.wait_until_finished()


def _base_meta(kind: str, step: int, model_cfg: ModelConfig, system: SystemConfig,
               train_cfg: TrainConfig | None, n_params: int) -> dict:
    return {"format": RUN_FORMAT, "kind": kind, "step": int(step), "params": int(n_params),
            "model": model_cfg.to_dict(), "system": system.to_dict(), "features": feature_spec(system),
            "train": train_cfg.to_dict() if train_cfg else None,
            "versions": {"offload_jax": __version__, "jax": jax.__version__}}


def save_run(run_dir: str | os.PathLike, model: PlacementMLP, stats: FeatureStats, model_cfg: ModelConfig,
             system_cfg: SystemConfig, meta: dict, *, train_cfg: TrainConfig | None = None,
             opt_state: Any = None, step: int | None = None) -> Path:
    """Save a model (final weights for inference, optionally optimizer state) as a run directory.

    `meta` must hold "kind"; "step" defaults to meta.get("step", 0). Returns the run dir.
    """
    if "kind" not in meta:
        raise ValueError("save_run: meta must hold 'kind' (e.g. 'teacher', 'student', 'distill')")
    run_dir = Path(run_dir)
    step = int(meta.get("step", 0) if step is None else step)
    params = params_of(model)
    with _manager(run_dir) as mgr:
        config_item = _config_item(model_cfg, system_cfg, meta["kind"], train_cfg)
        _save_checkpoint(mgr, step, params, stats, config_item, opt_state)
    full = _base_meta(meta["kind"], step, model_cfg, system_cfg, train_cfg, count_params(model))
    full.update(meta)
    full["step"] = step
    _write_json_atomic(run_dir / RUN_JSON, full)
    return run_dir


def latest_step(run_dir: str | os.PathLike) -> int | None:
    """Step of the newest complete checkpoint in `run_dir`, None if there is none."""
    ckpt = Path(run_dir) / CHECKPOINTS
    if not ckpt.is_dir():
        return None
    with _manager(Path(run_dir), read_only=True) as mgr:
        return mgr.latest_step()


def _restore(run_dir: Path, step: int, with_opt_state: Any = None) -> tuple[dict, dict, FeatureStats, Any]:
    """(config item, params, stats, opt_state or None); `with_opt_state` is the abstract optimizer state."""
    with _manager(run_dir, read_only=True) as mgr:
        cfg_item = mgr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
        model_cfg = ModelConfig.from_dict(cfg_item["model"])
        system = SystemConfig.from_dict(cfg_item["system"])
        abstract_params = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                                       nnx.to_pure_dict(nnx.state(abstract_model(model_cfg, system))))
        f = num_features(system.tasks, system.subcarriers)
        abstract_stats = {k: jax.ShapeDtypeStruct((f,), jnp.float32) for k in ("mean", "std")}
        items = {"params": ocp.args.StandardRestore(abstract_params),
                 "stats": ocp.args.StandardRestore(abstract_stats)}
        if with_opt_state is not None:
            items["opt_state"] = ocp.args.StandardRestore(with_opt_state)
        out = mgr.restore(step, args=ocp.args.Composite(**items))
    stats = FeatureStats(mean=jnp.asarray(out["stats"]["mean"]), std=jnp.asarray(out["stats"]["std"]))
    return cfg_item, out["params"], stats, out["opt_state"] if with_opt_state is not None else None


def load_run(run_dir: str | os.PathLike) -> LoadedRun:
    """The newest checkpoint of a run, as a model ready for inference. Raises RunError naming the dir."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run directory {str(run_dir)!r} does not exist")
    try:
        step = latest_step(run_dir)
    except Exception as exc:  # noqa: BLE001 (any Orbax failure means an unreadable run)
        raise RunError(f"run directory {str(run_dir)!r}: cannot read checkpoints ({exc})") from exc
    if step is None:
        raise RunError(f"run directory {str(run_dir)!r} holds no checkpoint (expected {CHECKPOINTS}/<step>/)")
    try:
        cfg_item, params, stats, _ = _restore(run_dir, step)
        model_cfg = ModelConfig.from_dict(cfg_item["model"])
        system = SystemConfig.from_dict(cfg_item["system"])
        model = model_from_params(params, model_cfg, system)
    except Exception as exc:  # noqa: BLE001
        raise RunError(f"run directory {str(run_dir)!r}: checkpoint {step} is corrupt or unreadable "
                       f"({type(exc).__name__}: {exc})") from exc
    meta_path = run_dir / RUN_JSON
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise RunError(f"run directory {str(run_dir)!r}: {RUN_JSON} is unreadable ({exc})") from exc
    else:
        meta = _base_meta(cfg_item.get("kind", "unknown"), step, model_cfg, system, None, count_params(model))
    meta = {**meta, "step": int(step), "params": count_params(model)}
    return LoadedRun(model=model, stats=stats, model_cfg=model_cfg, system=system, meta=meta)


@jax.jit
def _apply(graphdef_and_params, stats: FeatureStats, state: SystemState) -> jax.Array:
    graphdef, params = graphdef_and_params
    return nnx.merge(graphdef, params)(features(state, stats))


def predict_logits(run: LoadedRun, state: SystemState) -> jax.Array:
    """(n, T, 3) logits of the run's model for a batch of states (numpy or JAX arrays)."""
    t = tasks_of(state)
    if t != run.system.tasks or state.snr.shape[-1] != run.system.subcarriers:
        raise RunError(f"run was trained for T={run.system.tasks}, N={run.system.subcarriers}; "
                       f"got states with T={t}, N={state.snr.shape[-1]}")
    state = SystemState(*(jnp.asarray(np.asarray(v)) for v in state))
    return _apply(nnx.split(run.model), run.stats, state)
