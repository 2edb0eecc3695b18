"""The checkpointing driver: `fit(run_dir, data, model_cfg, train_cfg, ...)` trains, resumes or does
nothing, in chunks of the jitted training program (`train.make_train`), with Orbax checkpoints at least
every `checkpoint_every_s` and a run.json the checkpoint can rebuild."""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from tqdm.auto import tqdm

from offload_jax import atomic, locking, runs, train
from offload_jax.config import ConfigError, ModelConfig, TrainConfig
from offload_jax.features import feature_spec
from offload_jax.models import abstract_model, params_of
from offload_jax.splits import Prepared

# --- the checkpointing driver ---------------------------------------------------------------------


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the last good checkpoint is kept."""


def _scalar_metrics(m: dict) -> dict:
    return {k: float(v) for k, v in m.items() if np.ndim(v) == 0}


def fit(run_dir: str | os.PathLike, data: Prepared, model_cfg: ModelConfig, cfg: TrainConfig, *, kind: str,
        teacher: runs.LoadedRun | None = None, teacher_dir: str | None = None, progress: bool = True,
        chunk_steps: int = 50, checkpoint_every_s: float = 30.0,
        log: Callable[[str], Any] | None = None, init: runs.LoadedRun | None = None,
        init_dir: str | None = None) -> dict:
    """Train (or resume, or do nothing if finished) the run in `run_dir`; returns its run.json.

    `run_dir` must be new, empty, or hold this very command (`runs.check_run_dir`); `fit` holds its lock
    (`locking.hold`). Checkpoints (params, optimizer state, feature statistics, and run.json but its
    wall-clock fields, evaluation history included) are written at the end and whenever
    `checkpoint_every_s` have passed since the last one; a run killed at any moment resumes from its last
    checkpoint and reaches the same parameters and run.json.

    `init` (a loaded run of the same network, trained with the same training-split statistics) warm-starts
    the parameters: a fresh optimizer and schedule from them instead of a random initialization, e.g. to
    continue a finished run for more steps, or to fine-tune it with other losses.
    """
    run_dir = Path(run_dir)
    log = log or (lambda msg: print(msg, file=sys.stderr))
    cfg.validate()
    model_cfg.validate()
    if chunk_steps < 1:
        raise ConfigError(f"chunk_steps must be >= 1, got {chunk_steps}")
    if teacher is None and cfg.alpha != 1.0:
        raise ConfigError(f"alpha must be 1 without a teacher (labels only), got {cfg.alpha}")
    if teacher is None and cfg.targets != "labels":
        raise ConfigError(f"targets {cfg.targets!r} need a teacher; without one: 'labels'")
    if teacher is not None:
        runs.check_compatible(data.system, teacher.meta.get("features", feature_spec(teacher.system)),
                         f"teacher run {teacher_dir!r}")
    train.check_partials(cfg, model_cfg)
    if init is not None:
        _check_init(init, init_dir, model_cfg, data)
    identity = runs.run_identity(kind, model_cfg, cfg, teacher=teacher, data=data.info.get("source"),
                                 init=init)
    with locking.hold(run_dir, f"fit {kind}"):
        step = runs.check_run_dir(run_dir, identity)
        if step is not None:
            _check_same_data(run_dir, step, data)
        done = runs.finished_meta(run_dir, step, cfg.steps)
        if done is not None:
            log(f"{run_dir}: finished at step {step}; nothing to do")
            return done
        trainer = train.make_train(cfg, model_cfg, data.scenario, int(data.train.x.shape[0]),
                             use_teacher=teacher is not None, use_latency=cfg.latency_weight > 0,
                             use_regret=cfg.regret_weight > 0)
        rng = jax.random.key(cfg.seed)
        fixed = fixed_fields(teacher, teacher_dir, data, identity)
        if init is not None:
            fixed["init"] = {"dir": init_dir, "kind": init.meta.get("kind"), "step": init.meta.get("step")}
        mgr = runs.checkpoint_manager(run_dir)
        try:
            if step is None:
                step, history, state = 0, [], trainer.jitted["init"](rng)
                if init is not None:
                    state = _warm_start(state, trainer, init)
                    log(f"{run_dir}: starting from the parameters of {init_dir!r} "
                        f"(step {init.meta.get('step')})")
            else:
                state, history = _resume(run_dir, step, data, trainer, rng)
                log(f"{run_dir}: resuming from step {step}")
            # The teacher's passes over the training split, only when there are steps left to train.
            consts = train.make_consts(cfg, data, teacher)
            return _loop(run_dir, mgr, trainer, state, step, cfg, model_cfg, rng, train.loss_weights(cfg),
                         consts, data, kind, fixed, history, progress, chunk_steps, checkpoint_every_s)
        finally:
            mgr.close()


def fixed_fields(teacher: runs.LoadedRun | None, teacher_dir: str | None, data: Prepared,
                 identity: dict) -> dict:
    """The fields of a run's record that no step changes: its teacher, data and command (`identity`)."""
    teacher_info = None
    if teacher is not None:
        teacher_info = {"dir": teacher_dir, "kind": teacher.meta.get("kind"),
                        "params": teacher.meta.get("params"), "model": teacher.model_cfg.to_dict()}
    return {"teacher": teacher_info, "data": data.info, "identity": identity}


def run_record(kind: str, step: int, model_cfg: ModelConfig, data: Prepared, cfg: TrainConfig,
               n_params: int, fixed: dict, history: list) -> dict:
    """A `fit` run's record at `step` (its checkpoint's config item; run.json adds wall-clock fields)."""
    return {**runs.base_meta(kind, step, model_cfg, data.system, cfg, n_params), **fixed,
            "steps": cfg.steps, "finished": step >= cfg.steps, "history": list(history),
            "metrics": history[-1] if history else None}


def _same_stats(a, b) -> bool:
    """Whether two `FeatureStats` are the same statistics, bit for bit."""
    return (np.array_equal(np.asarray(a.mean), np.asarray(b.mean))
            and np.array_equal(np.asarray(a.std), np.asarray(b.std)))


def _check_init(init: runs.LoadedRun, init_dir: str | None, model_cfg: ModelConfig, data: Prepared) -> None:
    """Refuse a warm start from another network, system or training-split statistics."""
    where = f"init run {init_dir!r}"
    if init.model_cfg != model_cfg:
        diff = runs.differences(init.model_cfg.to_dict(), model_cfg.to_dict())
        raise ConfigError(f"{where} is another network than the one requested: {'; '.join(diff)}")
    runs.check_compatible(data.system, init.meta.get("features", feature_spec(init.system)), where)
    if not _same_stats(init.stats, data.stats):
        raise ConfigError(f"{where} was trained with other feature statistics than this training split "
                          "(another --data, --max-states, --holdout or --val-data): its parameters "
                          "expect other inputs")


def _warm_start(state: train.TrainState, trainer: train.Trainer, init: runs.LoadedRun) -> train.TrainState:
    """`state` with `init`'s parameters and a fresh optimizer state for them."""
    params = jax.tree.map(lambda fresh, old: jax.numpy.asarray(old, fresh.dtype), state.params,
                          params_of(init.model))
    return state._replace(params=params, opt_state=trainer.optimizer.init(params))


def _check_same_data(run_dir: Path, step: int, data: Prepared) -> None:
    """Refuse data unlike the checkpoint's: another T or feature layout, or other feature statistics of
    the training split (all `runs.run_identity` knows of data given in memory)."""
    runs.check_compatible(data.system, runs.stored_record(run_dir, step).get("features", {}),
                     f"the checkpoint in {str(run_dir)!r}")
    try:
        _, _, stats, _ = runs.restore(run_dir, step)
    except Exception as exc:  # noqa: BLE001
        raise runs.RunError(f"run directory {str(run_dir)!r}: checkpoint {step} is corrupt ({exc})") from exc
    if not _same_stats(stats, data.stats):
        raise runs.RunError(f"run directory {str(run_dir)!r} was trained on other data (the feature "
                            "statistics of the training split differ: another --data, --holdout or "
                            "--val-data?)")


def _resume(run_dir: Path, step: int, data: Prepared, trainer: train.Trainer,
            rng) -> tuple[train.TrainState, list]:
    """The training state and evaluation history of checkpoint `step`."""
    record = runs.stored_record(run_dir, step)
    abstract_params = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                                   nnx.to_pure_dict(nnx.state(abstract_model(
                                       ModelConfig.from_dict(record["model"]), data.system))))
    abstract_opt = jax.eval_shape(trainer.optimizer.init, abstract_params)
    try:
        _, params, _, opt_state = runs.restore(run_dir, step, with_opt_state=abstract_opt)
    except Exception as exc:  # noqa: BLE001
        raise runs.RunError(f"run directory {str(run_dir)!r}: checkpoint {step} is corrupt ({exc})") from exc
    perm = trainer.jitted["epoch_perm"](rng, step)
    state = train.TrainState(params=params, opt_state=opt_state, perm=perm)
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
                postfix["val_ratio"] = f"{scalars['objective_ratio_mean']:.4f}"
            bar.set_postfix(postfix, refresh=False)
            if step == cfg.steps or time.monotonic() - last_save >= checkpoint_every_s:
                record = run_record(kind, step, model_cfg, data, cfg, n_params, fixed, history)
                runs.save_checkpoint(mgr, step, state.params, data.stats, record, state.opt_state)
                meta = {**record, "wall_s_this_session": round(time.monotonic() - started, 2)}
                atomic.write_json(run_dir / runs.RUN_JSON, meta, sort_keys=True)
                last_save = time.monotonic()
    finally:
        bar.close()
    return meta
