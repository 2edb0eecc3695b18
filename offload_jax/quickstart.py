"""`offload-jax quickstart`: the whole method on a small default, in one command.

generate (train + eval datasets) -> train the teacher -> distill the student (KD) ->
train the same student on labels only -> train DROO -> evaluate every policy on the
eval dataset -> export the student to numpy -> benchmark decision latency ->
DIR/report.json, DIR/report.md and PNG plots directly in DIR.

Every stage resumes: rerunning the same command after an interruption redoes only
what is missing (datasets and runs are resumable; the report is rewritten).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

import jax

from offload_jax import __version__
from offload_jax.config import (
    DROO_MODEL,
    STUDENT_MODEL,
    TEACHER_MODEL,
    ConfigError,
    SystemConfig,
    TrainConfig,
)


@dataclasses.dataclass(frozen=True)
class QuickstartConfig:
    """Sizes of the quickstart. The defaults take about 6 minutes on an idle 2-core CPU (364 s measured)."""

    tasks: int = 10
    train_states: int = 200_000  # the last `holdout` of them are the training's held-out split
    holdout: int = 10_000
    eval_states: int = 20_000  # a separate dataset (another seed): what every policy is scored on
    seed: int = 0
    teacher_steps: int = 4_000
    student_steps: int = 8_000
    batch_size: int = 1024
    alpha: float = 0.5
    temperature: float = 2.0
    # The latency-aware term helps the student most (benchmarks/RESULTS.md, "Learning"); student_ce
    # stays on labels alone, the paper's plain imitation baseline.
    latency_weight: float = 0.5
    droo_memory: int = 1024
    calls: int = 2000  # timed batch-1 calls per policy
    teacher_model: object = TEACHER_MODEL
    student_model: object = STUDENT_MODEL
    droo_model: object = DROO_MODEL

    def validate(self) -> QuickstartConfig:
        for name in ("tasks", "train_states", "eval_states", "teacher_steps", "student_steps",
                     "batch_size", "calls", "holdout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if self.holdout >= self.train_states:
            raise ConfigError(f"holdout ({self.holdout}) must be < train_states ({self.train_states})")
        return self


# A setting small enough for the test suite (seconds of training, not minutes).
TINY = QuickstartConfig(tasks=4, train_states=3_000, holdout=500, eval_states=500, teacher_steps=60,
                        student_steps=200, batch_size=256, calls=50, droo_memory=256)


def _log(msg: str) -> None:
    print(f"[quickstart] {msg}", file=sys.stderr, flush=True)


def run(out_dir: str | os.PathLike, qcfg: QuickstartConfig = QuickstartConfig(), *,
        progress: bool = True) -> dict:
    """Run every stage into `out_dir`; returns the report (also written as report.json / report.md)."""
    from offload_jax import dataset, droo, evaluate, export, export_runtime, fit, policies, splits, timing
    from offload_jax import runs as run_dirs

    qcfg.validate()
    # Decision timing needs synchronous CPU dispatch, which must be set before JAX's backend starts
    # (timing.configure_for_latency); training is unaffected (it waits for each chunk anyway).
    try:
        timing.configure_for_latency()
    except RuntimeError as exc:  # e.g. in a process that already ran JAX code
        _log(f"decision latency measured with this process's JAX settings: {exc}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = SystemConfig(tasks=qcfg.tasks).validate()
    seconds: dict[str, float] = {}
    t_all = time.perf_counter()

    def stage(name: str):
        _log(f"{name} ...")
        seconds[name] = time.perf_counter()

    def done(name: str):
        seconds[name] = round(time.perf_counter() - seconds[name], 2)

    train_dir, eval_dir = out / "data" / "train", out / "data" / "eval"
    stage("generate")
    dataset.generate(train_dir, cfg, qcfg.train_states, qcfg.seed, progress=progress)
    dataset.generate(eval_dir, cfg, qcfg.eval_states, qcfg.seed + 1, progress=progress)
    done("generate")

    data = splits.load_data(train_dir, holdout=qcfg.holdout)
    runs_dir = out / "runs"
    base = TrainConfig(batch_size=qcfg.batch_size, seed=qcfg.seed, eval_every=0)

    stage("teacher")
    fit.fit(runs_dir / "teacher", data, qcfg.teacher_model,
              dataclasses.replace(base, steps=qcfg.teacher_steps), kind="teacher", progress=progress)
    done("teacher")
    teacher = run_dirs.load_run(runs_dir / "teacher")

    stage("student_kd")
    kd_cfg = dataclasses.replace(base, steps=qcfg.student_steps, alpha=qcfg.alpha,
                                 temperature=qcfg.temperature, latency_weight=qcfg.latency_weight)
    fit.fit(runs_dir / "student_kd", data, qcfg.student_model, kd_cfg, kind="distill", teacher=teacher,
              teacher_dir=str(runs_dir / "teacher"), progress=progress)
    done("student_kd")

    stage("student_ce")
    fit.fit(runs_dir / "student_ce", data, qcfg.student_model,
              dataclasses.replace(base, steps=qcfg.student_steps), kind="student", progress=progress)
    done("student_ce")
    del data

    stage("droo")
    droo_cfg = droo.DROOConfig(model=qcfg.droo_model, memory_size=qcfg.droo_memory)
    droo.train_droo_cli(train_dir, runs_dir / "droo", seed=qcfg.seed, holdout=qcfg.holdout,
                        droo_cfg=droo_cfg, progress=progress)
    done("droo")

    stage("evaluate")
    runs = {name: run_dirs.load_run(runs_dir / name) for name in policies.LEARNED_NAMES}
    eval_ds = dataset.load(eval_dir)
    scenario = eval_ds.scenario
    pols = {name: policies.make_policy(name, scenario=scenario, runs=runs)
            for name in policies.policy_names(scenario)}
    quality = evaluate.evaluate_policies(eval_ds, pols, jax.random.key(qcfg.seed), progress=progress)
    done("evaluate")

    stage("decision latency")
    student_file = export.export_run(runs_dir / "student_kd", out / "student_kd.npz")
    numpy_student = export_runtime.load(student_file)
    speed = timing.decision_benchmark(pols, scenario, calls=qcfg.calls,
                                      numpy_student=numpy_student, seed=qcfg.seed, progress=progress)
    done("decision latency")

    report = _report(qcfg, cfg, quality, speed, runs, seconds, time.perf_counter() - t_all)
    _write_outputs(out, report)
    return report


def _report(qcfg, cfg, quality, speed, runs, seconds, total_s) -> dict:
    pol = {}
    for name, q in quality.items():
        s = speed["policies"][name]
        pol[name] = {
            "latency_ratio_mean": q["latency_ratio_mean"],
            "latency_ratio_of_means": q["latency_ratio_of_means"],
            "latency_mean_s": q["latency_mean_s"],
            "accuracy": q["accuracy"],
            "exact_match": q["exact_match"],
            "params": q.get("params"),
            "decision_us_p50": s["p50_us"],
            "decision_us_p99": s["p99_us"],
            "batch_states_per_s": s["batch_states_per_s"],
        }
    ns = speed["numpy_student"]
    return {
        "tasks": cfg.tasks,
        "policies": pol,
        "dataset": "data/eval",
        "train_dataset": "data/train",
        "numpy_student": {"decision_us_p50": ns["p50_us"], "decision_us_p99": ns["p99_us"],
                          "file": "student_kd.npz"},
        "identity_us_p50": speed["identity"]["p50_us"],
        "device": speed["device"],
        "timing_settings": speed.get("settings"),
        "config": {k: (v.to_dict() if hasattr(v, "to_dict") else v)
                   for k, v in dataclasses.asdict(qcfg).items()},
        "runs": {n: {"kind": r.meta.get("kind"), "params": r.meta.get("params")} for n, r in runs.items()},
        "seconds": {**seconds, "total": round(total_s, 1)},
        "versions": {"offload_jax": __version__, "jax": jax.__version__},
    }


def report_markdown(report: dict) -> str:
    lines = [f"# offload-jax quickstart (T={report['tasks']})", "",
             f"Policies scored on `{report['dataset']}` (states never seen in training); decision time is "
             f"batch-1 p50 of the AOT-compiled policy on {report['device']}. Latency ratio = the policy's "
             "latency over the optimal one, mean of per-state ratios.", "",
             "| policy | latency ratio | accuracy | exact match | decision p50 (us) | p99 (us) | params |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, p in report["policies"].items():
        params = "" if p["params"] is None else f"{p['params']:,}"
        lines.append(f"| {name} | {p['latency_ratio_mean']:.4f} | {p['accuracy']:.4f} | "
                     f"{p['exact_match']:.4f} | {p['decision_us_p50']:.1f} | {p['decision_us_p99']:.1f} | "
                     f"{params} |")
    ns = report["numpy_student"]
    lines += ["", f"Exported numpy student (`{ns['file']}`, features included): p50 "
              f"{ns['decision_us_p50']:.1f} us, p99 {ns['decision_us_p99']:.1f} us. Identity floor "
              f"(compiled no-op on the same input): {report['identity_us_p50']:.1f} us.", "",
              "![latency ratio](latency_ratio.png)", "", "![decision latency](decision_latency.png)", "",
              "Stage times (s): " + ", ".join(f"{k} {v}" for k, v in report["seconds"].items()), ""]
    return "\n".join(lines)


def _write_outputs(out: Path, report: dict) -> None:
    from offload_jax import atomic
    from offload_jax.plots import bar_chart

    pol = report["policies"]
    bar_chart({n: p["latency_ratio_mean"] for n, p in pol.items()}, out / "latency_ratio.png",
              ylabel="latency / optimal (mean of per-state ratios)", reference=1.0,
              title=f"Decision quality, T={report['tasks']} (lower is better)")
    times = {n: p["decision_us_p50"] for n, p in pol.items()}
    times["student (numpy)"] = report["numpy_student"]["decision_us_p50"]
    times["identity floor"] = report["identity_us_p50"]
    bar_chart(times, out / "decision_latency.png", ylabel="batch-1 decision time p50 (us)", log=True,
              title="Time to decide (log scale, lower is better)")
    atomic.write_json(out / "report.json", report)
    atomic.write_text(out / "report.md", report_markdown(report))


def print_table(report: dict) -> None:
    print(report_markdown(report).split("\n\nExported")[0].split("\n", 4)[4])
    print(f"(report: report.json, report.md, latency_ratio.png, decision_latency.png; "
          f"{report['seconds']['total']:.0f} s)")
