"""Run directories: Orbax checkpoints plus a small `run.json` (training, distillation, DROO runs).

A run directory holds

    RUN/run.json                 what the run is (kind, step, params, configs, history); atomic writes
    RUN/checkpoints/<step>/      Orbax items: params, opt_state (optional), stats, config (JSON)

The config item of a checkpoint is that step's run.json without its wall-clock fields, so a run.json
left behind by a kill is rebuilt from the checkpoint, and a resumed run continues the history it had.
It also records the run's `identity` (`run_identity`), the command a directory holds: `check_run_dir`
refuses any other command into it.

`save_run` / `load_run` are the inference-side API used by evaluation, policies and export;
`predict_logits` is the plain one-call inference for users and tests (policies build their own jitted
decision functions).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import gc
import hashlib
import io
import json
import logging
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from offload_jax import __version__, atomic, scenarios
from offload_jax.config import ConfigError, ModelConfig, TrainConfig
from offload_jax.features import FeatureStats, feature_spec, features, num_features, num_inputs
from offload_jax.models import abstract_model, count_params, input_count, model_from_params, params_of
from offload_jax.scenarios.base import Scenario


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

    model: nnx.Module
    stats: FeatureStats
    model_cfg: ModelConfig
    system: Any  # the system it was trained for: SystemConfig (chain) or DagConfig (dag)
    meta: dict  # run.json: {"kind": ..., "step": ..., "params": ..., ...}

    @property
    def scenario(self) -> Scenario:
        return scenarios.of(self.system)


# --- run directory --------------------------------------------------------------------------------


def checkpoint_manager(run_dir: Path, read_only: bool = False) -> ocp.CheckpointManager:
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


def _remove_settled(pattern: Path, quiet_s: float = 0.3, limit_s: float = 10.0) -> None:
    """Remove what matches `pattern` (a glob) until nothing has matched for `quiet_s`: a failed Orbax
    write's other threads may still be writing into its temp directory after the first error (seen on
    a loaded machine: a removal that raced them left the directory behind). Gives up after `limit_s`."""
    deadline = time.monotonic() + limit_s
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        found = list(pattern.parent.glob(pattern.name))
        for path in found:
            shutil.rmtree(path, ignore_errors=True)
        now = time.monotonic()
        if found:
            quiet_since = now
        elif now - quiet_since >= quiet_s:
            return
        time.sleep(0.05)


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
        if leftovers:
            _remove_settled(leftovers)
        raise RunError(f"{what}: {_orbax_cause(exc)}") from exc
    finally:
        sys.stderr, sys.unraisablehook = real_stderr, real_hook
        absl.removeFilter(hold)
    sys.stderr.write(held.getvalue())
    for record in records:
        absl.handle(record)


# Room a checkpoint takes besides its arrays (measured: ~40 small files in 4 KiB blocks, and the JSON item).
_CHECKPOINT_OVERHEAD_BYTES = 1 << 20


def save_checkpoint(mgr: ocp.CheckpointManager, step: int, params: dict, stats: FeatureStats,
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


def base_meta(kind: str, step: int, model_cfg: ModelConfig, system, train_cfg: TrainConfig | None,
               n_params: int) -> dict:
    return {"format": RUN_FORMAT, "kind": kind, "step": int(step), "params": int(n_params),
            "scenario": scenarios.of(system).name, "model": model_cfg.to_dict(), "system": system.to_dict(),
            "features": feature_spec(system),
            "train": train_cfg.to_dict() if train_cfg else None,
            "versions": {"offload_jax": __version__, "jax": jax.__version__}}


def save_run(run_dir: str | os.PathLike, model: nnx.Module, stats: FeatureStats, model_cfg: ModelConfig,
             system_cfg, meta: dict, *, train_cfg: TrainConfig | None = None,
             opt_state: Any = None, step: int | None = None, identity: dict | None = None) -> Path:
    """Save a model (final weights for inference, optionally optimizer state) as a run directory.

    `meta` must hold "kind"; "step" defaults to meta.get("step", 0). `identity` is the command that
    made the run (`check_run_dir` compares a later command with it). Returns the run dir.
    """
    if "kind" not in meta:
        raise ValueError("save_run: meta must hold 'kind' (e.g. 'teacher', 'student', 'distill')")
    want = num_inputs(model_cfg.inputs, system_cfg)
    if input_count(model) != want:
        raise ValueError(f"save_run: the model reads {input_count(model)} features, but model_cfg "
                         f"(inputs={model_cfg.inputs!r}) says {want}")
    run_dir = Path(run_dir)
    step = int(meta.get("step", 0) if step is None else step)
    record = base_meta(meta["kind"], step, model_cfg, system_cfg, train_cfg, count_params(model))
    record.update(meta)
    record.update(step=step, identity=identity)
    with checkpoint_manager(run_dir) as mgr:
        save_checkpoint(mgr, step, params_of(model), stats, record, opt_state)
    atomic.write_json(run_dir / RUN_JSON, record, sort_keys=True)
    return run_dir


def latest_step(run_dir: str | os.PathLike) -> int | None:
    """Step of the newest complete checkpoint in `run_dir`, None if there is none."""
    ckpt = Path(run_dir) / CHECKPOINTS
    if not ckpt.is_dir():
        return None
    with checkpoint_manager(Path(run_dir), read_only=True) as mgr:
        return mgr.latest_step()


def _on_this_device(abstract: Any) -> Any:
    """Restore targets placed on this process's first device.

    Without a sharding, Orbax rebuilds the one stored in the checkpoint, which names the devices of
    the machine that saved it: a run saved on a CPU would not load on a GPU (or on a CPU host with
    other device ids), "Topology mismatch".
    """
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), abstract)


def restore(run_dir: Path, step: int, with_opt_state: Any = None) -> tuple[dict, dict, FeatureStats, Any]:
    """(config item, params, stats, opt_state or None); `with_opt_state` is the abstract optimizer state.

    The arrays land on this process's first device, whatever machine saved them.
    """
    with checkpoint_manager(run_dir, read_only=True) as mgr:
        cfg_item = mgr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
        model_cfg = ModelConfig.from_dict(cfg_item["model"])
        system = system_of(cfg_item)
        recorded, computed = cfg_item.get("features", {}).get("version"), feature_spec(system)["version"]
        if recorded is not None and recorded != computed:
            raise RunError(f"run directory {str(run_dir)!r} was trained on features {recorded!r}; this "
                           f"version of offload_jax computes {computed!r}: train it again, or load it with "
                           "the version that wrote it")
        abstract_params = nnx.to_pure_dict(nnx.state(abstract_model(model_cfg, system)))
        f = num_features(system)
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
        cfg_item, params, stats, _ = restore(run_dir, step)
        model_cfg = ModelConfig.from_dict(cfg_item["model"])
        system = system_of(cfg_item)
        model = model_from_params(params, model_cfg, system)
    except RunError:
        raise
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
        meta = base_meta(cfg_item.get("kind", "unknown"), step, model_cfg, system, None, count_params(model))
    meta = {**meta, "step": int(step), "params": count_params(model)}
    return LoadedRun(model=model, stats=stats, model_cfg=model_cfg, system=system, meta=meta)


def system_of(record: dict):
    """The system a run record (run.json or a checkpoint's config item) was trained for; runs saved
    before scenarios existed are chain runs."""
    return scenarios.from_system(record.get("scenario") or "chain", record["system"]).cfg


@jax.jit
def _apply(graphdef_and_params, stats: FeatureStats, state) -> jax.Array:
    graphdef, params = graphdef_and_params
    model = nnx.merge(graphdef, params)
    return model(features(state, stats, input_count(model)))


def predict_logits(run: LoadedRun, state) -> jax.Array:
    """(n, *decision_shape, 3) logits of the run's model for a batch of states (numpy or JAX arrays)."""
    scenario = run.scenario
    want = {k: s for k, (s, _) in scenario.state_shapes().items()}
    got = {k: np.shape(v)[1:] for k, v in state._asdict().items()}
    if type(state) is not scenario.state_type or got != want:
        raise RunError(f"run was trained for {_describe(feature_spec(run.system))}; got "
                       f"{type(state).__name__} states of shapes {got}")
    state = type(state)(*(jnp.asarray(np.asarray(v)) for v in state))
    return _apply(nnx.split(run.model), run.stats, state)


def check_compatible(system, recorded_spec: dict, what: str) -> None:
    """Refuse `what` (a checkpoint or teacher) whose scenario, sizes or feature layout differ from the
    dataset's, naming both sides."""
    mine = feature_spec(system)
    if dict(recorded_spec) != mine:
        raise RunError(f"{what} was made for {_describe(recorded_spec)} (features {recorded_spec}); "
                       f"the dataset has {_describe(mine)} (features {mine})")


def _describe(spec: dict) -> str:
    """A feature spec's sizes: "scenario=dag, users=2, tasks=5, subcarriers=8" (chain: no scenario key)."""
    return ", ".join(f"{k}={spec[k]}" for k in ("scenario", "users", "tasks", "subcarriers") if k in spec)


# --- is this run directory this command? ---------------------------------------------------------


def teacher_identity(teacher: LoadedRun) -> dict:
    """A run by content (a teacher, or the run a warm start starts from): its kind, model, and a sha256
    of its parameters and feature statistics."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves((params_of(teacher.model), teacher.stats)):
        digest.update(np.asarray(leaf).tobytes())
    return {"kind": teacher.meta.get("kind"), "model": teacher.model_cfg.to_dict(),
            "sha256": digest.hexdigest()}


def run_identity(kind: str, model_cfg: ModelConfig, cfg: TrainConfig, *, teacher: LoadedRun | None,
                 data: dict | None, init: LoadedRun | None = None) -> dict:
    """The command a `fit` run directory holds: its kind, model, every training setting (the seed too),
    the teacher (by content), the data (`data_source`; None for data given in memory, which `fit`
    checks by the feature statistics of its training split) and, for a warm start, the run whose
    parameters it started from (by content; the key is absent otherwise, as in runs made before it)."""
    identity = {"kind": kind, "model": model_cfg.to_dict(), "train": cfg.to_dict(),
                "teacher": None if teacher is None else teacher_identity(teacher), "data": data}
    if init is not None:
        identity["init"] = teacher_identity(init)
    return identity


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """'key: existing OLD, requested NEW' for each (dotted, nested) key where two records differ."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: existing {a!r}, requested {b!r}")
    return out


def stored_record(run_dir: Path, step: int) -> dict:
    """The config item of checkpoint `step`: that step's run.json without its wall-clock fields."""
    try:
        with checkpoint_manager(run_dir, read_only=True) as mgr:
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
    stored = stored_record(run_dir, step).get("identity")
    if stored is None:
        raise RunError(f"run directory {str(run_dir)!r} holds a run that recorded no command (saved by "
                       "save_run, or by an older offload_jax); use another --out")
    diffs = differences(stored, identity)
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
    record = stored_record(run_dir, step)
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


