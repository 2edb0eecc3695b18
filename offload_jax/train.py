"""Training runs on disk: Orbax checkpoints plus a small `run.json`.

A run directory holds

    RUN/run.json                 what the run is (kind, step, params, configs, history); atomic writes
    RUN/checkpoints/<step>/      Orbax items: params, opt_state (optional), stats, config (JSON)

The config item of a checkpoint is that step's run.json without its wall-clock fields, so a run.json
left behind by a kill is rebuilt from the checkpoint, and a resumed run continues the history it had.
It also records the run's `identity` (`run_identity`), the command a directory holds: `check_run_dir`
refuses any other command into it.

`save_run` / `load_run` / `predict_logits` are the inference-side API used by
evaluation, policies and export.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import gc
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from tqdm.auto import tqdm

from offload_jax import __version__, atomic, locking, metrics
from offload_jax.config import ConfigError, ModelConfig, SystemConfig, TrainConfig
from offload_jax.features import (
    FeatureStats,
    compute_stats,
    feature_spec,
    features,
    normalize,
    num_features,
    num_inputs,
    raw_features,
)
from offload_jax.losses import LossWeights, total_loss
from offload_jax.models import PlacementMLP, count_params, input_count
from offload_jax.scenarios.chain.cost import StageCosts, stage_costs
from offload_jax.scenarios.chain.system import SystemState, tasks_of


class _QuietReadOnly(logging.Filter):
    """Drop Orbax's notices that a read-only manager is read-only (we open one to read every run)."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (msg.startswith("CheckpointManagerOptions.read_only=True")
                    or msg.startswith("Given directory is read only"))


logging.getLogger("absl").addFilter(_QuietReadOnly())

RUN_JSON = "run.json"
CHECKPOINTS = "checkpoints"
RUN_FORMAT = "offload-jax-run/1"
WALL_CLOCK_KEYS = ("wall_s_this_session",)  # the run.json fields that are not in its checkpoint


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
    in_features = num_inputs(model_cfg.inputs, system.tasks, system.subcarriers)
    return nnx.eval_shape(lambda: PlacementMLP(in_features, system.tasks, model_cfg, rngs=nnx.Rngs(0)))


def init_params(key: jax.Array, model_cfg: ModelConfig, system: SystemConfig) -> dict:
    """Fresh parameters as a pure dict (jittable and vmappable in `key`)."""
    in_features = num_inputs(model_cfg.inputs, system.tasks, system.subcarriers)
    model = PlacementMLP(in_features, system.tasks, model_cfg, rngs=nnx.Rngs(params=key))
    return nnx.to_pure_dict(nnx.state(model))


def graphdef_of(model_cfg: ModelConfig, system: SystemConfig) -> nnx.GraphDef:
    return nnx.split(abstract_model(model_cfg, system))[0]


def model_from_params(params: dict, model_cfg: ModelConfig, system: SystemConfig) -> PlacementMLP:
    return nnx.merge(graphdef_of(model_cfg, system), params)


def params_of(model: PlacementMLP) -> dict:
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


# --- run directory --------------------------------------------------------------------------------


def _manager(run_dir: Path, read_only: bool = False) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=2, enable_async_checkpointing=False, read_only=read_only,
        create=not read_only, cleanup_tmp_directories=not read_only)
    directory = run_dir.resolve() / CHECKPOINTS
    if read_only:
        return ocp.CheckpointManager(directory, options=options)
    with _orbax_writing(f"cannot create {str(directory)!r}"):
        return ocp.CheckpointManager(directory, options=options)


def _orbax_cause(exc: Exception) -> str:
    """The reason an Orbax write failed, in a few words (tensorstore's messages run to a paragraph)."""
    code = re.search(r"os_error_code='(\d+)'", str(exc))
    if code:
        return os.strerror(int(code.group(1)))
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"


@contextlib.contextmanager
def _orbax_writing(what: str, leftovers: Path | None = None):
    """Run an Orbax write with its output held back. On success the held output is printed as usual; on
    failure (a full disk, a read-only file system) it is dropped, `leftovers` (a glob: the write's temp
    directories) is removed, and one RunError says `what` failed and why. A failed Orbax write prints
    dozens of tracebacks from its threads and from its abandoned coroutines, until the process exits."""
    held, records = io.StringIO(), []
    absl = logging.getLogger("absl")

    def hold(record: logging.LogRecord) -> bool:
        records.append(record)
        return False

    real_stderr, sys.stderr = sys.stderr, held
    real_hook, sys.unraisablehook = sys.unraisablehook, sys.__unraisablehook__  # which prints to sys.stderr
    absl.addFilter(hold)
    try:
        yield
    except Exception as exc:
        gc.collect()  # the abandoned coroutines are finalized (and complain) now, into `held`
        for path in leftovers.parent.glob(leftovers.name) if leftovers else ():
            shutil.rmtree(path, ignore_errors=True)
        raise RunError(f"{what}: {_orbax_cause(exc)}") from exc
    finally:
        sys.stderr, sys.unraisablehook = real_stderr, real_hook
        absl.removeFilter(hold)
    sys.stderr.write(held.getvalue())
    for record in records:
        absl.handle(record)


# Room a checkpoint takes besides its arrays (measured: ~40 small files in 4 KiB blocks, and the JSON item).
_CHECKPOINT_OVERHEAD_BYTES = 1 << 20


def _save_checkpoint(mgr: ocp.CheckpointManager, step: int, params: dict, stats: FeatureStats,
                     record: dict, opt_state: Any = None) -> None:
    """Checkpoint `step`; `record` (the step's run.json without wall-clock fields) is its config item.

    A disk without room for it is refused before Orbax starts (a write that fails midway leaves Orbax's
    abandoned writes to complain until the process exits; `_orbax_writing` holds back what it can).
    """
    directory = Path(mgr.directory)
    what = f"cannot write checkpoint {step} in {str(directory)!r}"
    arrays = (params, stats, opt_state)
    need = _CHECKPOINT_OVERHEAD_BYTES + sum(int(leaf.nbytes) for leaf in jax.tree.leaves(arrays))
    free = shutil.disk_usage(directory).free
    if free < need:
        raise RunError(f"{what}: {os.strerror(errno.ENOSPC)} ({free:,} bytes free, about {need:,} needed)")
    items = {
        "params": ocp.args.StandardSave(params),
        "stats": ocp.args.StandardSave({"mean": stats.mean, "std": stats.std}),
        "config": ocp.args.JsonSave(record),
    }
    if opt_state is not None:
        items["opt_state"] = ocp.args.StandardSave(opt_state)
    with _orbax_writing(what, directory / f"{step}.orbax-checkpoint-tmp*"):
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
             opt_state: Any = None, step: int | None = None, identity: dict | None = None) -> Path:
    """Save a model (final weights for inference, optionally optimizer state) as a run directory.

    `meta` must hold "kind"; "step" defaults to meta.get("step", 0). `identity` is the command that
    made the run (`check_run_dir` compares a later command with it). Returns the run dir.
    """
    if "kind" not in meta:
        raise ValueError("save_run: meta must hold 'kind' (e.g. 'teacher', 'student', 'distill')")
    want = num_inputs(model_cfg.inputs, system_cfg.tasks, system_cfg.subcarriers)
    if input_count(model) != want:
        raise ValueError(f"save_run: the model reads {input_count(model)} features, but model_cfg "
                         f"(inputs={model_cfg.inputs!r}) says {want}")
    run_dir = Path(run_dir)
    step = int(meta.get("step", 0) if step is None else step)
    record = _base_meta(meta["kind"], step, model_cfg, system_cfg, train_cfg, count_params(model))
    record.update(meta)
    record.update(step=step, identity=identity)
    with _manager(run_dir) as mgr:
        _save_checkpoint(mgr, step, params_of(model), stats, record, opt_state)
    atomic.write_json(run_dir / RUN_JSON, record, sort_keys=True)
    return run_dir


def latest_step(run_dir: str | os.PathLike) -> int | None:
    """Step of the newest complete checkpoint in `run_dir`, None if there is none."""
    ckpt = Path(run_dir) / CHECKPOINTS
    if not ckpt.is_dir():
        return None
    with _manager(Path(run_dir), read_only=True) as mgr:
        return mgr.latest_step()


def _on_this_device(abstract: Any) -> Any:
    """Restore targets placed on this process's first device.

    Without a sharding, Orbax rebuilds the one stored in the checkpoint, which names the devices of
    the machine that saved it: a run saved on a CPU would not load on a GPU (or on a CPU host with
    other device ids), "Topology mismatch".
    """
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), abstract)


def _restore(run_dir: Path, step: int, with_opt_state: Any = None) -> tuple[dict, dict, FeatureStats, Any]:
    """(config item, params, stats, opt_state or None); `with_opt_state` is the abstract optimizer state.

    The arrays land on this process's first device, whatever machine saved them.
    """
    with _manager(run_dir, read_only=True) as mgr:
        cfg_item = mgr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
        model_cfg = ModelConfig.from_dict(cfg_item["model"])
        system = SystemConfig.from_dict(cfg_item["system"])
        abstract_params = nnx.to_pure_dict(nnx.state(abstract_model(model_cfg, system)))
        f = num_features(system.tasks, system.subcarriers)
        abstract_stats = {k: jax.ShapeDtypeStruct((f,), jnp.float32) for k in ("mean", "std")}
        items = {"params": ocp.args.StandardRestore(_on_this_device(abstract_params)),
                 "stats": ocp.args.StandardRestore(_on_this_device(abstract_stats))}
        if with_opt_state is not None:
            items["opt_state"] = ocp.args.StandardRestore(_on_this_device(with_opt_state))
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
    model = nnx.merge(graphdef, params)
    return model(features(state, stats, input_count(model)))


def predict_logits(run: LoadedRun, state: SystemState) -> jax.Array:
    """(n, T, 3) logits of the run's model for a batch of states (numpy or JAX arrays)."""
    t = tasks_of(state)
    if t != run.system.tasks or state.snr.shape[-1] != run.system.subcarriers:
        raise RunError(f"run was trained for T={run.system.tasks}, N={run.system.subcarriers}; "
                       f"got states with T={t}, N={state.snr.shape[-1]}")
    state = SystemState(*(jnp.asarray(np.asarray(v)) for v in state))
    return _apply(nnx.split(run.model), run.stats, state)


# --- data -----------------------------------------------------------------------------------------


class TrainData(NamedTuple):
    """The training split on the device; features are computed once, not per step."""

    x: jax.Array  # (n, F) float32, normalized features
    label: jax.Array  # (n, T) int8
    state: SystemState  # (n, ...) for the stage costs of the latency-aware term
    optimal_latency: jax.Array  # (n,) seconds


class EvalData(NamedTuple):
    """The held-out split on the device."""

    x: jax.Array  # (m, F)
    label: jax.Array  # (m, T)
    costs: StageCosts  # (m, ...)
    optimal_latency: jax.Array  # (m,)


@dataclasses.dataclass(frozen=True)
class Prepared:
    """Training and held-out data, normalized with statistics of the training split only."""

    system: SystemConfig
    stats: FeatureStats
    train: TrainData
    eval: EvalData
    info: dict  # where the data came from and the split sizes (recorded in run.json)


_FEATURE_CHUNK = 65_536  # states per jitted feature batch: bounds the intermediate memory


def _raw_features_np(states: SystemState) -> np.ndarray:
    n = states.cycles.shape[0]
    fn = jax.jit(raw_features)
    parts = []
    for start in range(0, n, _FEATURE_CHUNK):
        chunk = SystemState(*(jnp.asarray(np.asarray(v)[start:start + _FEATURE_CHUNK]) for v in states))
        parts.append(np.asarray(fn(chunk)))
    return np.concatenate(parts, axis=0)


def _slice_state(states: SystemState, sl: slice) -> SystemState:
    return SystemState(*(np.asarray(v)[sl] for v in states))


def default_holdout(num_states: int) -> int:
    """min(5%, 50k) of the data, at least 1."""
    return max(1, min(num_states // 20, 50_000))


def prepare(states: SystemState, label, latency, system: SystemConfig, *, holdout: int | None = None,
            val: tuple[SystemState, Any, Any] | None = None, info: dict | None = None) -> Prepared:
    """Split (the last `holdout` states are held out, unless `val` = (states, label, latency) is given),
    compute features once, and put both splits on the device."""
    n = int(np.asarray(label).shape[0])
    chex.assert_shape(np.asarray(label), (n, system.tasks))
    if tasks_of(states) != system.tasks or states.snr.shape[-1] != system.subcarriers:
        raise RunError(f"states have T={tasks_of(states)}, N={states.snr.shape[-1]}; "
                       f"the system says T={system.tasks}, N={system.subcarriers}")
    if val is None:
        holdout = default_holdout(n) if holdout is None else int(holdout)
        if not 1 <= holdout < n:
            raise ConfigError(f"--holdout must be in [1, {n - 1}] for {n} states, got {holdout}")
        tr, ev = slice(0, n - holdout), slice(n - holdout, n)
        train_part = (_slice_state(states, tr), np.asarray(label)[tr], np.asarray(latency)[tr])
        eval_part = (_slice_state(states, ev), np.asarray(label)[ev], np.asarray(latency)[ev])
    else:
        train_part = (states, np.asarray(label), np.asarray(latency))
        eval_part = (val[0], np.asarray(val[1]), np.asarray(val[2]))
        if tasks_of(eval_part[0]) != system.tasks:
            raise RunError(f"validation states have T={tasks_of(eval_part[0])}, expected T={system.tasks}")
    raw_train = _raw_features_np(train_part[0])
    stats = compute_stats(raw_train)
    x_train = normalize(jnp.asarray(raw_train), stats)
    del raw_train
    x_eval = normalize(jnp.asarray(_raw_features_np(eval_part[0])), stats)
    eval_states = SystemState(*(jnp.asarray(v) for v in eval_part[0]))
    train = TrainData(x=x_train, label=jnp.asarray(train_part[1], jnp.int8),
                      state=SystemState(*(jnp.asarray(v) for v in train_part[0])),
                      optimal_latency=jnp.asarray(train_part[2], jnp.float32))
    evald = EvalData(x=x_eval, label=jnp.asarray(eval_part[1], jnp.int8),
                     costs=jax.jit(stage_costs)(eval_states),
                     optimal_latency=jnp.asarray(eval_part[2], jnp.float32))
    info = {**(info or {}), "num_train": int(train.x.shape[0]), "num_eval": int(evald.x.shape[0])}
    return Prepared(system=system, stats=stats, train=train, eval=evald, info=info)


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
    """A dataset written by `offload-jax generate`, split and prepared for training."""
    from offload_jax import dataset  # noqa: PLC0415 (only the CLI path reads from disk)

    source = data_source(data_dir, holdout=holdout, val_data=val_data, max_states=max_states)
    ds = dataset.load(data_dir, verify=True, max_states=max_states)
    system = SystemConfig.from_dict(ds.manifest["system"])
    info = {"data": os.fspath(data_dir), "seed": ds.manifest.get("seed"), "source": source}
    val = None
    if val_data is not None:
        vd = dataset.load(val_data, verify=True)
        if SystemConfig.from_dict(vd.manifest["system"]) != system:
            raise RunError(f"--val-data {os.fspath(val_data)!r} has another system than --data")
        val = (vd.states, vd.label, vd.latency)
        info["val_data"] = os.fspath(val_data)
    else:
        info["holdout"] = default_holdout(ds.num_states) if holdout is None else int(holdout)
    return prepare(ds.states, ds.label, ds.latency, system, holdout=holdout, val=val, info=info)


# --- the training program (PureJaxRL style) -----------------------------------------------------


class Consts(NamedTuple):
    """Everything big a training program reads. Passed as an argument, never closed over, so the
    arrays are not baked into the compiled program as constants."""

    train: TrainData
    eval: EvalData
    teacher_logits: Any = None  # (n, T, 3) the teacher's logits on the training split, or None


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    perm: jax.Array  # (n,) int32, the current epoch's shuffle


@dataclasses.dataclass(frozen=True)
class Trainer:
    """The jittable pieces of one training configuration (see `make_train`)."""

    init: Callable  # (rng) -> TrainState at step 0
    epoch_perm: Callable  # (rng, step) -> (n,) shuffle of the epoch that `step` falls in
    run: Callable  # (TrainState, rng, LossWeights, Consts, k0, k1) -> (TrainState, (mean loss, mean acc))
    evaluate: Callable  # (params, Consts) -> metrics.summary on the held-out split
    train: Callable  # (rng, LossWeights, Consts) -> (params, held-out metrics): the whole run
    optimizer: optax.GradientTransformation
    steps_per_epoch: int
    jitted: dict  # jax.jit of init, epoch_perm, run, evaluate (kept here so repeated fits reuse them)


def _kernel_mask(params):
    """Weight decay on kernels only (not biases, not LayerNorm)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) == "kernel", params)


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    warmup = int(round(cfg.warmup_frac * cfg.steps))
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=cfg.learning_rate, warmup_steps=warmup,
        decay_steps=max(cfg.steps, warmup + 1), end_value=cfg.learning_rate * cfg.end_lr_frac)
    return optax.chain(
        optax.clip_by_global_norm(cfg.clip_norm),
        optax.adamw(schedule, weight_decay=cfg.weight_decay, mask=_kernel_mask),
    )


def make_train(cfg: TrainConfig, model_cfg: ModelConfig, system: SystemConfig, num_train: int, *,
               use_teacher: bool = False, use_latency: bool = False, eval_batch: int = 8192) -> Trainer:
    """Build the training program of one configuration.

    `trainer.train(rng, weights, consts)` is the whole run (a fori_loop over steps, then a held-out
    evaluation) as one jittable function, so `jax.jit(jax.vmap(trainer.train, in_axes=(0, 0, None)))`
    trains a population in one program. `trainer.run` executes steps [k0, k1) of the same loop; the
    checkpointing driver (`fit`) calls it in chunks. Step k's batch is a pure function of (rng, k).
    The seed and the loss weights of `cfg` are not used here: they are the `rng` and `weights` inputs.
    With `use_teacher`, `consts.teacher_logits` holds the teacher's logits on the training split
    (`teacher_logits`, computed once: the teacher's forward pass is not repeated every step).
    """
    cfg.validate()
    # Settings that are inputs of the program do not key the cache: such runs share compilations.
    program_cfg = dataclasses.replace(cfg, seed=0, alpha=1.0, temperature=1.0, latency_weight=0.0,
                                      eval_every=0)
    return _make_train(program_cfg, model_cfg, system, num_train, use_teacher, use_latency, eval_batch)


@functools.lru_cache(maxsize=16)  # same settings -> same jitted functions -> no recompilation
def _make_train(cfg: TrainConfig, model_cfg: ModelConfig, system: SystemConfig, num_train: int,
                use_teacher: bool, use_latency: bool, eval_batch: int) -> Trainer:
    batch = cfg.batch_size
    steps_per_epoch = num_train // batch
    if steps_per_epoch < 1:
        raise ConfigError(f"--batch-size ({batch}) must be <= the number of training states ({num_train})")
    graphdef = graphdef_of(model_cfg, system)
    tx = make_optimizer(cfg)
    n_in = num_inputs(model_cfg.inputs, system.tasks, system.subcarriers)

    def apply(params, x):  # x holds every feature; the model reads the first n_in
        return nnx.merge(graphdef, params)(x[..., :n_in])

    def split_key(rng):
        init_key, shuffle_key = jax.random.split(rng)
        return init_key, shuffle_key

    def epoch_perm(rng, step):
        epoch = step // steps_per_epoch
        key = jax.random.fold_in(split_key(rng)[1], epoch)
        return jax.random.permutation(key, num_train).astype(jnp.int32)

    def init(rng):
        params = init_params(split_key(rng)[0], model_cfg, system)
        return TrainState(params=params, opt_state=tx.init(params), perm=epoch_perm(rng, 0))

    def one_step(k, carry, rng, weights: LossWeights, consts: Consts):
        state, loss_sum, acc_sum = carry
        perm = jax.lax.cond(k % steps_per_epoch == 0, lambda: epoch_perm(rng, k), lambda: state.perm)
        idx = jax.lax.dynamic_slice_in_dim(perm, (k % steps_per_epoch) * batch, batch)
        data = consts.train
        x, labels = data.x[idx], data.label[idx]
        teacher_logits = consts.teacher_logits[idx] if use_teacher else None
        costs = optimal = None
        if use_latency:
            costs = stage_costs(jax.tree.map(lambda v: v[idx], data.state))
            optimal = data.optimal_latency[idx]

        def loss_fn(params):
            logits = apply(params, x)
            loss = total_loss(logits, labels, weights, teacher_logits=teacher_logits, costs=costs,
                              optimal_latency=optimal)
            return loss, logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        acc = jnp.mean(jnp.argmax(logits, axis=-1) == labels)
        return TrainState(params, opt_state, perm), loss_sum + loss, acc_sum + acc

    def run(state: TrainState, rng, weights: LossWeights, consts: Consts, k0, k1):
        body = functools.partial(one_step, rng=rng, weights=weights, consts=consts)
        zero = jnp.zeros((), jnp.float32)
        state, loss_sum, acc_sum = jax.lax.fori_loop(k0, k1, body, (state, zero, zero))
        count = jnp.maximum(k1 - k0, 1).astype(jnp.float32)
        return state, (loss_sum / count, acc_sum / count)

    def evaluate(params, consts: Consts):
        ev = consts.eval
        logits = jax.lax.map(lambda x: apply(params, x), ev.x, batch_size=eval_batch)
        pred = jnp.argmax(logits, axis=-1).astype(jnp.int8)
        return metrics.summary(ev.costs, pred, ev.label, ev.optimal_latency)

    def train(rng, weights: LossWeights, consts: Consts):
        state, _ = run(init(rng), rng, weights, consts, 0, cfg.steps)
        return state.params, evaluate(state.params, consts)

    jitted = {"init": jax.jit(init), "epoch_perm": jax.jit(epoch_perm), "run": jax.jit(run),
              "evaluate": jax.jit(evaluate)}
    return Trainer(init=init, epoch_perm=epoch_perm, run=run, evaluate=evaluate, train=train, optimizer=tx,
                   steps_per_epoch=steps_per_epoch, jitted=jitted)


def loss_weights(cfg: TrainConfig) -> LossWeights:
    return LossWeights(alpha=jnp.float32(cfg.alpha), temperature=jnp.float32(cfg.temperature),
                       latency_weight=jnp.float32(cfg.latency_weight))


def teacher_consts(teacher: LoadedRun, stats: FeatureStats) -> tuple[dict, jax.Array, jax.Array]:
    """(teacher params, scale, shift) mapping features normalized with `stats` to the teacher's input."""
    scale = stats.std / teacher.stats.std
    shift = (stats.mean - teacher.stats.mean) / teacher.stats.std
    return params_of(teacher.model), scale, shift


def teacher_logits(teacher: LoadedRun, stats: FeatureStats, x: jax.Array, batch: int = 8192) -> jax.Array:
    """(n, T, 3) logits of the teacher on features `x` (n, F) normalized with `stats`."""
    params, scale, shift = teacher_consts(teacher, stats)
    graphdef = nnx.split(teacher.model)[0]
    count = input_count(teacher.model)

    @jax.jit
    def run(params, x):
        return jax.lax.map(lambda xb: nnx.merge(graphdef, params)((xb * scale + shift)[..., :count]), x,
                           batch_size=batch)

    return run(params, x)


def check_compatible(system: SystemConfig, recorded_spec: dict, what: str) -> None:
    """Refuse `what` (a checkpoint or teacher) whose T or feature layout differs from the dataset's."""
    mine = feature_spec(system)
    if dict(recorded_spec) != mine:
        raise RunError(f"{what} was made for T={recorded_spec.get('tasks')}, "
                       f"N={recorded_spec.get('subcarriers')} (features {recorded_spec}); "
                       f"the dataset has T={system.tasks}, "
                       f"N={system.subcarriers} (features {mine})")


# --- is this run directory this command? ---------------------------------------------------------


def teacher_identity(teacher: LoadedRun) -> dict:
    """A teacher by content: its kind, model, and a sha256 of its parameters and feature statistics."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves((params_of(teacher.model), teacher.stats)):
        digest.update(np.asarray(leaf).tobytes())
    return {"kind": teacher.meta.get("kind"), "model": teacher.model_cfg.to_dict(),
            "sha256": digest.hexdigest()}


def run_identity(kind: str, model_cfg: ModelConfig, cfg: TrainConfig, *, teacher: LoadedRun | None,
                 data: dict | None) -> dict:
    """The command a `fit` run directory holds: its kind, model, every training setting (the seed too),
    the teacher (by content) and the data (`data_source`; None for data given in memory, which `fit`
    checks by the feature statistics of its training split)."""
    return {"kind": kind, "model": model_cfg.to_dict(), "train": cfg.to_dict(),
            "teacher": None if teacher is None else teacher_identity(teacher), "data": data}


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: existing {a!r}, requested {b!r}")
    return out


def _stored_record(run_dir: Path, step: int) -> dict:
    """The config item of checkpoint `step`: that step's run.json without its wall-clock fields."""
    try:
        with _manager(run_dir, read_only=True) as mgr:
            return mgr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
    except Exception as exc:  # noqa: BLE001 (any Orbax failure means an unreadable checkpoint)
        raise RunError(f"run directory {str(run_dir)!r}: checkpoint {step} is unreadable ({exc})") from exc


def check_run_dir(run_dir: str | os.PathLike, identity: dict) -> int | None:
    """Whether `run_dir` holds the command `identity` (`run_identity`; train-droo has its own).

    Returns the step of its newest checkpoint if it holds a run of exactly that command (to resume, or
    finished), None if it holds no run yet (it does not exist, is empty, or a kill during the first
    checkpoint left no step). Raises RunError naming what differs, or what the directory holds instead.
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        return None
    try:
        step = latest_step(run_dir)
    except Exception as exc:  # noqa: BLE001
        raise RunError(f"run directory {str(run_dir)!r}: cannot read checkpoints ({exc})") from exc
    if step is None:
        others = sorted(f for f in os.listdir(run_dir) if not f.startswith(".") and f != CHECKPOINTS)
        if others:
            raise RunError(f"refusing to write into {str(run_dir)!r}: it is not empty and holds no run "
                           f"(holds {others[:5]}{' ...' if len(others) > 5 else ''}); "
                           "use an empty or new --out")
        return None
    stored = _stored_record(run_dir, step).get("identity")
    if stored is None:
        raise RunError(f"run directory {str(run_dir)!r} holds a run that recorded no command (saved by "
                       "save_run, or by an older offload_jax); use another --out")
    diffs = _differences(stored, identity)
    if diffs:
        raise RunError(f"run directory {str(run_dir)!r} holds a run with other settings "
                       f"({'; '.join(diffs)}); rerun the command that made it, or use another --out")
    return step


def finished_meta(run_dir: str | os.PathLike, step: int | None, steps: int) -> dict | None:
    """run.json of a run whose newest checkpoint `step` (`check_run_dir`) has reached `steps`, else None.
    A run.json that a kill left behind its checkpoint is first rebuilt from it."""
    if step is None or step < steps:
        return None
    run_dir = Path(run_dir)
    record = _stored_record(run_dir, step)
    meta = run_status(run_dir)
    if meta is None or {k: v for k, v in meta.items() if k not in WALL_CLOCK_KEYS} != record:
        atomic.write_json(run_dir / RUN_JSON, record, sort_keys=True)
        meta = record
    return meta


def run_status(run_dir: str | os.PathLike) -> dict | None:
    """run.json of `run_dir` if it exists and is readable, else None."""
    try:
        return json.loads((Path(run_dir) / RUN_JSON).read_text())
    except (OSError, json.JSONDecodeError):
        return None


# --- the checkpointing driver ---------------------------------------------------------------------


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the last good checkpoint is kept."""


def _scalar_metrics(m: dict) -> dict:
    return {k: float(v) for k, v in m.items() if np.ndim(v) == 0}


def fit(run_dir: str | os.PathLike, data: Prepared, model_cfg: ModelConfig, cfg: TrainConfig, *, kind: str,
        teacher: LoadedRun | None = None, teacher_dir: str | None = None, progress: bool = True,
        chunk_steps: int = 50, checkpoint_every_s: float = 30.0,
        log: Callable[[str], Any] | None = None) -> dict:
    """Train (or resume, or do nothing if finished) the run in `run_dir`; returns its run.json.

    `run_dir` must be new, empty, or hold this very command (`check_run_dir`); `fit` holds its lock
    (`locking.hold`). Checkpoints (params, optimizer state, feature statistics, and run.json but its
    wall-clock fields, evaluation history included) are written at the end and whenever
    `checkpoint_every_s` have passed since the last one; a run killed at any moment resumes from its last
    checkpoint and reaches the same parameters and run.json.
    """
    run_dir = Path(run_dir)
    log = log or (lambda msg: print(msg, file=sys.stderr))
    cfg.validate()
    model_cfg.validate()
    if chunk_steps < 1:
        raise ConfigError(f"chunk_steps must be >= 1, got {chunk_steps}")
    if teacher is None and cfg.alpha != 1.0:
        raise ConfigError(f"alpha must be 1 without a teacher (labels only), got {cfg.alpha}")
    if teacher is not None:
        check_compatible(data.system, teacher.meta.get("features", feature_spec(teacher.system)),
                         f"teacher run {teacher_dir!r}")
    identity = run_identity(kind, model_cfg, cfg, teacher=teacher, data=data.info.get("source"))
    with locking.hold(run_dir, f"fit {kind}"):
        step = check_run_dir(run_dir, identity)
        if step is not None:
            _check_same_data(run_dir, step, data)
        done = finished_meta(run_dir, step, cfg.steps)
        if done is not None:
            log(f"{run_dir}: finished at step {step}; nothing to do")
            return done
        trainer = make_train(cfg, model_cfg, data.system, int(data.train.x.shape[0]),
                             use_teacher=teacher is not None, use_latency=cfg.latency_weight > 0)
        rng = jax.random.key(cfg.seed)
        teacher_info = None
        if teacher is not None:
            teacher_info = {"dir": teacher_dir, "kind": teacher.meta.get("kind"),
                            "params": teacher.meta.get("params"), "model": teacher.model_cfg.to_dict()}
        fixed = {"teacher": teacher_info, "data": data.info, "identity": identity}
        mgr = _manager(run_dir)
        try:
            if step is None:
                step, history, state = 0, [], trainer.jitted["init"](rng)
            else:
                state, history = _resume(run_dir, step, data, trainer, rng)
                log(f"{run_dir}: resuming from step {step}")
            # The teacher's pass over the training split, only when there are steps left to train.
            consts = Consts(data.train, data.eval,
                            teacher_logits(teacher, data.stats, data.train.x) if teacher else None)
            return _loop(run_dir, mgr, trainer, state, step, cfg, model_cfg, rng, loss_weights(cfg), consts,
                         data, kind, fixed, history, progress, chunk_steps, checkpoint_every_s)
        finally:
            mgr.close()


def _check_same_data(run_dir: Path, step: int, data: Prepared) -> None:
    """Refuse data unlike the checkpoint's: another T or feature layout, or other feature statistics of
    the training split (all `run_identity` knows of data given in memory)."""
    check_compatible(data.system, _stored_record(run_dir, step).get("features", {}),
                     f"the checkpoint in {str(run_dir)!r}")
    try:
        _, _, stats, _ = _restore(run_dir, step)
    except Exception as exc:  # noqa: BLE001
        raise RunError(f"run directory {str(run_dir)!r}: checkpoint {step} is corrupt ({exc})") from exc
    if not (np.array_equal(np.asarray(stats.mean), np.asarray(data.stats.mean))
            and np.array_equal(np.asarray(stats.std), np.asarray(data.stats.std))):
        raise RunError(f"run directory {str(run_dir)!r} was trained on other data (the feature statistics of "
                       "the training split differ: another --data, --holdout or --val-data?)")


def _resume(run_dir: Path, step: int, data: Prepared, trainer: Trainer, rng) -> tuple[TrainState, list]:
    """The training state and evaluation history of checkpoint `step`."""
    record = _stored_record(run_dir, step)
    abstract_params = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                                   nnx.to_pure_dict(nnx.state(abstract_model(
                                       ModelConfig.from_dict(record["model"]), data.system))))
    abstract_opt = jax.eval_shape(trainer.optimizer.init, abstract_params)
    try:
        _, params, _, opt_state = _restore(run_dir, step, with_opt_state=abstract_opt)
    except Exception as exc:  # noqa: BLE001
        raise RunError(f"run directory {str(run_dir)!r}: checkpoint {step} is corrupt ({exc})") from exc
    state = TrainState(params=params, opt_state=opt_state, perm=trainer.jitted["epoch_perm"](rng, step))
    return state, list(record["history"])


def _loop(run_dir, mgr, trainer, state, step, cfg, model_cfg, rng, weights, consts, data, kind, fixed,
          history, progress, chunk_steps, checkpoint_every_s) -> dict:
    run_jit = trainer.jitted["run"]
    eval_jit = trainer.jitted["evaluate"]
    # Commit every input to one device: arrays restored by Orbax are committed and fresh ones are not,
    # and a change in that between chunks would compile the step loop a second time.
    device = jax.devices()[0]
    state, consts = jax.device_put((state, consts), device)
    n_params = sum(int(np.size(p)) for p in jax.tree.leaves(state.params))
    last_save = time.monotonic()
    started = time.monotonic()
    meta: dict = {}
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, file=sys.stderr,
               desc=f"{kind} {run_dir.name}", dynamic_ncols=True)
    try:
        while step < cfg.steps:
            nxt = min(cfg.steps, (step // chunk_steps + 1) * chunk_steps)
            if cfg.eval_every:
                nxt = min(nxt, (step // cfg.eval_every + 1) * cfg.eval_every)
            new_state, (loss, acc) = run_jit(state, rng, weights, consts, step, nxt)
            loss, acc = float(loss), float(acc)
            if not math.isfinite(loss):
                last = mgr.latest_step()
                raise TrainingError(
                    f"loss became {loss} between steps {step} and {nxt}; stopped. The last good checkpoint "
                    f"({'none' if last is None else f'step {last}'}) is kept in {str(run_dir)!r}. "
                    "Try a lower --lr.")
            state, step = new_state, nxt
            bar.update(nxt - bar.n)
            postfix = {"loss": f"{loss:.4f}", "acc": f"{acc:.4f}"}
            if step == cfg.steps or (cfg.eval_every and step % cfg.eval_every == 0):
                scalars = _scalar_metrics(eval_jit(state.params, consts))
                history.append({"step": step, "train_loss": loss, "train_accuracy": acc, **scalars})
                postfix["val_ratio"] = f"{scalars['latency_ratio_mean']:.4f}"
            bar.set_postfix(postfix, refresh=False)
            if step == cfg.steps or time.monotonic() - last_save >= checkpoint_every_s:
                record = {**_base_meta(kind, step, model_cfg, data.system, cfg, n_params), **fixed,
                          "steps": cfg.steps, "finished": step >= cfg.steps, "history": list(history),
                          "metrics": history[-1] if history else None}
                _save_checkpoint(mgr, step, state.params, data.stats, record, state.opt_state)
                meta = {**record, "wall_s_this_session": round(time.monotonic() - started, 2)}
                atomic.write_json(run_dir / RUN_JSON, meta, sort_keys=True)
                last_save = time.monotonic()
    finally:
        bar.close()
    return meta
