"""Fast ablations in the PureJaxRL manner: one jitted program trains a whole grid of students.

`train.make_train(...).train(rng, weights, consts)` is one jittable training run; the sweep is
`jax.jit(jax.vmap(train, in_axes=(0, 0, None)))` over the grid seeds x temperatures x alphas x loss
variants (the data and the teacher are shared, not copied per member). Results go to one table
(CSV + markdown + JSON) and a PNG plot; with `save_runs`, each member also becomes a run directory
that `evaluate`, `export`, `--teacher` and `--init-from` take like a `fit` run's.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from offload_jax import atomic, fit, locking, runs
from offload_jax.config import ConfigError, ModelConfig, TrainConfig
from offload_jax.losses import LossWeights
from offload_jax.runs import LoadedRun
from offload_jax.splits import Prepared
from offload_jax.train import Consts, Trainer, make_consts, make_train

LOSS_VARIANTS = ("ce", "latency")  # ce: (distillation) cross-entropy only; latency: plus the latency term
# Held-out metrics of a member: J / J* for every scenario, the latency columns for the chain (J is latency).
METRIC_COLUMNS = ("accuracy", "exact_match", "objective_ratio_mean", "latency_ratio_mean",
                  "latency_ratio_of_means")


@dataclasses.dataclass(frozen=True)
class SweepPoint:
    seed: int
    temperature: float
    alpha: float
    loss: str  # one of LOSS_VARIANTS


def grid(seeds, temperatures, alphas, losses) -> list[SweepPoint]:
    """The cartesian product, validated (alpha in [0, 1], temperature > 0, known loss variants), with
    the students of alpha 1 once per seed and loss, at the first temperature: alpha 1 has no KD term,
    so the temperature does not enter their training (each further one would repeat the same run)."""
    for loss in losses:
        if loss not in LOSS_VARIANTS:
            raise ConfigError(f"--losses: unknown variant {loss!r}; allowed: {', '.join(LOSS_VARIANTS)}")
    for a in alphas:
        if not 0.0 <= a <= 1.0:
            raise ConfigError(f"--alphas: each alpha must be in [0, 1], got {a}")
    for t in temperatures:
        if not t > 0:
            raise ConfigError(f"--temperatures: each temperature must be > 0, got {t}")
    for s in seeds:
        if s < 0:
            raise ConfigError(f"--seeds: each seed must be >= 0, got {s}")
    points = [SweepPoint(int(s), float(t), float(a), str(loss))
              for s, t, a, loss in itertools.product(seeds, temperatures, alphas, losses)
              if a < 1.0 or t == temperatures[0]]
    if not points:
        raise ConfigError("the sweep grid is empty: give at least one seed, temperature, alpha and loss")
    return points


def point_config(base: TrainConfig, point: SweepPoint, latency_weight: float) -> TrainConfig:
    """The single-run TrainConfig equivalent to one sweep member (for `fit.fit`). A sweep scores its
    members once, after the last step: eval_every 0 (`fit` evaluates at the last step whatever it is)."""
    return dataclasses.replace(base, seed=point.seed, alpha=point.alpha, temperature=point.temperature,
                               latency_weight=latency_weight if point.loss == "latency" else 0.0,
                               eval_every=0).validate()


@dataclasses.dataclass(frozen=True)
class SweepInputs:
    """Everything the vmapped program of a grid takes (see `build`)."""

    trainer: Trainer
    rngs: jax.Array  # (members,) keys
    weights: LossWeights  # each field (members,)
    consts: Consts  # shared, not batched


def build(data: Prepared, model_cfg: ModelConfig, base: TrainConfig, points: list[SweepPoint], *,
          teacher: LoadedRun | None = None, latency_weight: float = 1.0) -> SweepInputs:
    """The training function and the batched inputs of a grid; `program()` is its vmapped form."""
    if teacher is None and any(p.alpha != 1.0 for p in points):
        raise ConfigError("alphas < 1 need a teacher (--teacher RUN)")
    if any(p.loss == "latency" for p in points) and not latency_weight > 0:
        raise ConfigError(f"--latency-weight must be > 0 for the 'latency' variant, got {latency_weight}")
    use_latency = any(p.loss == "latency" for p in points)
    trainer = make_train(base, model_cfg, data.scenario, int(data.train.x.shape[0]),
                         use_teacher=teacher is not None, use_latency=use_latency,
                         use_regret=base.regret_weight > 0)
    consts = make_consts(base, data, teacher)
    rngs = jax.vmap(jax.random.key)(jnp.asarray([p.seed for p in points], jnp.uint32))
    lat_w = [latency_weight if p.loss == "latency" else 0.0 for p in points]
    weights = LossWeights(alpha=jnp.asarray([p.alpha for p in points], jnp.float32),
                          temperature=jnp.asarray([p.temperature for p in points], jnp.float32),
                          latency_weight=jnp.asarray(lat_w, jnp.float32),
                          regret_weight=jnp.full(len(points), base.regret_weight, jnp.float32))
    return SweepInputs(trainer=trainer, rngs=rngs, weights=weights, consts=consts)


def program(trainer: Trainer):
    """The whole grid as one jitted program: jax.jit(jax.vmap(train)) (data and teacher shared)."""
    return jax.jit(jax.vmap(trainer.train, in_axes=(0, 0, None)))


def run_sweep(data: Prepared, model_cfg: ModelConfig, base: TrainConfig, points: list[SweepPoint], *,
              teacher: LoadedRun | None = None, latency_weight: float = 1.0) -> tuple[list[dict], dict, dict]:
    """Train every point in one vmapped program. Returns (rows, batched params, timing).

    Each row holds the point's settings and its held-out metrics (`metrics.summary`).
    """
    inputs = build(data, model_cfg, base, points, teacher=teacher, latency_weight=latency_weight)
    args = (inputs.rngs, inputs.weights, inputs.consts)
    start = time.perf_counter()
    compiled = program(inputs.trainer).lower(*args).compile()
    compiled_at = time.perf_counter()
    params, summary = jax.block_until_ready(compiled(*args))
    done = time.perf_counter()
    rows = []
    for i, p in enumerate(points):
        row = {**dataclasses.asdict(p), "latency_weight": latency_weight if p.loss == "latency" else 0.0}
        row.update({k: float(summary[k][i]) for k in METRIC_COLUMNS if k in summary})
        rows.append(row)
    timing = {"members": len(points), "steps": base.steps, "compile_s": compiled_at - start,
              "run_s": done - compiled_at}
    return rows, params, timing


def member_name(point: SweepPoint) -> str:
    """A member's run directory name, e.g. seed0_temp2_alpha0.5_latency."""
    return f"seed{point.seed}_temp{point.temperature:g}_alpha{point.alpha:g}_{point.loss}"


@dataclasses.dataclass(frozen=True)
class MemberRun:
    """Where one sweep member is saved, and the `fit` command it stands for."""

    point: SweepPoint
    run_dir: Path
    kind: str  # "distill" with a teacher, else "student" (as `offload-jax distill` / `train`)
    cfg: TrainConfig  # `point_config`
    identity: dict  # `runs.run_identity` of that command
    finished: dict | None = None  # the record of that command's finished run, if the directory holds one


def member_runs(runs_dir: str | os.PathLike, data: Prepared, model_cfg: ModelConfig, base: TrainConfig,
                points: list[SweepPoint], *, teacher: LoadedRun | None = None,
                latency_weight: float = 1.0) -> list[MemberRun]:
    """Each member's run directory under `runs_dir` and its command; checked before any training: a
    directory that holds another command (or anything but a run) is refused now, not after the sweep.
    One that holds the command's finished run is noted (`finished_rows`)."""
    kind = "distill" if teacher is not None else "student"
    out = []
    for p in points:
        cfg = point_config(base, p, latency_weight)
        identity = runs.run_identity(kind, model_cfg, cfg, teacher=teacher, data=data.info.get("source"))
        run_dir = Path(runs_dir) / member_name(p)
        step = runs.check_run_dir(run_dir, identity)
        record = runs.stored_record(run_dir, step) if step is not None and step >= cfg.steps else None
        out.append(MemberRun(p, run_dir, kind, cfg, identity, record))
    return out


def finished_rows(members: list[MemberRun]) -> list[dict] | None:
    """The sweep's table from its members' finished runs when every member has one (a rerun of a sweep
    that saved them needs no training), else None. A row as `run_sweep` makes it, the metrics from the
    run's record (its last evaluation)."""
    if not members or any(m.finished is None for m in members):
        return None
    return [{**dataclasses.asdict(m.point), "latency_weight": m.cfg.latency_weight,
             **{k: float(m.finished["metrics"][k]) for k in METRIC_COLUMNS if k in m.finished["metrics"]}}
            for m in members]


def save_runs(members: list[MemberRun], data: Prepared, model_cfg: ModelConfig, params, rows: list[dict], *,
              teacher: LoadedRun | None = None, teacher_dir: str | None = None) -> list[Path]:
    """Save member i (`params` batched over the members, in `members`' order) as the finished run
    `fit` would have written for its command: its parameters after the last step, the training split's
    feature statistics and its record (`fit.run_record`; history: the sweep's held-out metrics at the
    last step). Differences from a `fit` run: no optimizer state (a sweep does not return it; the same
    command with more steps is another command anyway), and the parameters agree with `fit`'s to
    float32 round-off of the vmapped program, not bit for bit. A directory already holding the same
    finished command is left as it is. Each directory is locked while written."""
    saved = []
    for i, (m, row) in enumerate(zip(members, rows, strict=True)):
        member = jax.tree.map(lambda x, i=i: x[i], params)
        with locking.hold(m.run_dir, f"sweep {member_name(m.point)}"):
            step = runs.check_run_dir(m.run_dir, m.identity)
            if runs.finished_meta(m.run_dir, step, m.cfg.steps) is None:
                history = [{"step": m.cfg.steps, **{k: row[k] for k in METRIC_COLUMNS if k in row}}]
                n_params = sum(int(np.size(x)) for x in jax.tree.leaves(member))
                fixed = {**fit.fixed_fields(teacher, teacher_dir, data, m.identity),
                         "sweep": {"member": member_name(m.point), "optimizer_state": False}}
                record = fit.run_record(m.kind, m.cfg.steps, model_cfg, data, m.cfg, n_params, fixed, history)
                with runs.checkpoint_manager(m.run_dir) as mgr:
                    runs.save_checkpoint(mgr, m.cfg.steps, member, data.stats, record)
                atomic.write_json(m.run_dir / runs.RUN_JSON, record, sort_keys=True)
        saved.append(m.run_dir)
    return saved


def _metrics_of(rows: list[dict]) -> list[str]:
    return [c for c in METRIC_COLUMNS if c in rows[0]]


def table_markdown(rows: list[dict]) -> str:
    cols = ["seed", "temperature", "alpha", "loss", "latency_weight", *_metrics_of(rows)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [f"{r[c]:.4f}" if c in METRIC_COLUMNS else str(r[c]) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def grouped(rows: list[dict]) -> list[dict]:
    """Mean and std over seeds of each (temperature, alpha, loss) setting."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["temperature"], r["alpha"], r["loss"]), []).append(r)
    out = []
    for (t, a, loss), rs in groups.items():
        entry = {"temperature": t, "alpha": a, "loss": loss, "seeds": len(rs)}
        for c in _metrics_of(rows):
            vals = np.asarray([r[c] for r in rs])
            entry[c] = float(vals.mean())
            entry[c + "_std"] = float(vals.std())
        out.append(entry)
    return out


def write_results(out_dir: str | os.PathLike, rows: list[dict], info: dict) -> dict[str, Path]:
    """sweep.csv, sweep.md, sweep.json and sweep.png in `out_dir` (each written atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / f"sweep.{k}" for k in ("csv", "md", "json", "png")}
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic.write_text(paths["csv"], buf.getvalue())
    md = "# Sweep\n\n" + table_markdown(rows) + "\n## Mean over seeds\n\n" + _grouped_markdown(grouped(rows))
    atomic.write_text(paths["md"], md)
    atomic.write_json(paths["json"], {"info": info, "rows": rows, "grouped": grouped(rows)})
    atomic.write_bytes(paths["png"], _plot(rows))
    return paths


def _grouped_markdown(groups: list[dict]) -> str:
    lines = ["| temperature | alpha | loss | seeds | J / J* (mean +- std) | accuracy | exact match |",
             "|---|---|---|---|---|---|---|"]
    for g in groups:
        lines.append(f"| {g['temperature']:g} | {g['alpha']:g} | {g['loss']} | {g['seeds']} | "
                     f"{g['objective_ratio_mean']:.4f} +- {g['objective_ratio_mean_std']:.4f} | "
                     f"{g['accuracy']:.4f} | {g['exact_match']:.4f} |")
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict]) -> bytes:
    import matplotlib  # noqa: PLC0415 (only needed when writing results)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    groups = grouped(rows)
    labels = [f"T={g['temperature']:g}\na={g['alpha']:g}\n{g['loss']}" for g in groups]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(groups) + 1.5), 4.0))
    xs = np.arange(len(groups))
    ax.bar(xs, [g["objective_ratio_mean"] - 1.0 for g in groups], bottom=1.0, color="#9ecae1",
           label="mean over seeds")
    for x, g in zip(xs, groups, strict=True):
        ys = [r["objective_ratio_mean"] for r in rows
              if (r["temperature"], r["alpha"], r["loss"]) == (g["temperature"], g["alpha"], g["loss"])]
        ax.scatter(np.full(len(ys), x), ys, color="#08519c", s=14, zorder=3)
    ax.set_xticks(xs, labels, fontsize=8)
    ax.set_ylabel("J / J* (chain: latency / optimal; mean over held-out states)")
    ax.set_title("Student sweep (dots: seeds)")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()
