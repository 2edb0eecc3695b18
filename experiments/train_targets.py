"""Reproduce the learning targets of issue 3 and the distillation / latency-aware findings.

    python experiments/train_targets.py --data DIR --out OUT [--seeds 0,1,2] [--quick]

1. A teacher (config.TEACHER_MODEL) trained on the optimal labels.
2. For every seed, four students (config.STUDENT_MODEL, <= 5% of the teacher's parameters):
   labels only (CE), labels + latency-aware term, distilled (KD), distilled + latency-aware term.
3. Timing: 8 students in one vmapped program (`sweep.run_sweep`) against 8 separate runs of the same
   jitted training function, same steps, on this machine.

Every run is a resumable run directory under OUT (rerunning the script skips what is done; a
teacher trained earlier with the same settings can be copied to OUT/teacher), so
`offload-jax evaluate` can score them too. Writes OUT/train_targets.md and OUT/train_targets.json.
Held-out split: the last --holdout states of --data (default 50k), never used for training.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

from offload_jax import atomic, config, fit, models, runs, splits, sweep, train
from offload_jax.config import TrainConfig

VARIANTS = {  # name: (uses the teacher, uses the latency-aware term)
    "labels": (False, False),
    "labels+latency": (False, True),
    "kd": (True, False),
    "kd+latency": (True, True),
}


def _student_config(args, seed: int, kd: bool, latency: bool) -> TrainConfig:
    return TrainConfig(steps=args.student_steps, batch_size=args.batch_size, learning_rate=args.student_lr,
                       seed=seed, alpha=args.alpha if kd else 1.0,
                       temperature=args.temperature if kd else 1.0,
                       latency_weight=args.latency_weight if latency else 0.0,
                       eval_every=args.eval_every).validate()


def _metrics(meta: dict) -> dict:
    m = meta["metrics"]
    return {k: m[k] for k in ("latency_ratio_mean", "latency_ratio_of_means", "accuracy", "exact_match")}


def _fit(run_dir: Path, data, model_cfg, cfg, kind, teacher=None, teacher_dir=None) -> dict:
    start = time.perf_counter()
    meta = fit.fit(run_dir, data, model_cfg, cfg, kind=kind, teacher=teacher, teacher_dir=teacher_dir,
                     progress=True)
    out = {"run": str(run_dir), "params": meta["params"], **_metrics(meta),
           "wall_s_this_call": round(time.perf_counter() - start, 1)}
    print(json.dumps(out), flush=True)
    return out


def _timing(args, data, teacher) -> dict:
    """8 students, one vmapped program vs 8 separate runs of the same jitted training function.

    For a labels-only grid and a distillation grid (4 seeds x {ce, latency} each), both compiled
    first; then the two are run alternately `--timing-reps` times and the fastest of each is kept, so
    that a change in the load of this shared machine does not favor either.
    """
    out = {}
    for kind, alpha, tchr in (("labels", 1.0, None), ("kd", args.alpha, teacher)):
        points = sweep.grid(list(range(4)), [args.temperature if tchr else 1.0], [alpha], ["ce", "latency"])
        base = dataclasses.replace(_student_config(args, 0, tchr is not None, True), steps=args.timing_steps)
        inputs = sweep.build(data, config.STUDENT_MODEL, base, points, teacher=tchr,
                             latency_weight=args.latency_weight)
        batched = (inputs.rngs, inputs.weights, inputs.consts)
        start = time.perf_counter()
        vmapped = sweep.program(inputs.trainer).lower(*batched).compile()
        v_compile = time.perf_counter() - start
        per_point = [(jax.random.key(p.seed),
                      train.loss_weights(sweep.point_config(base, p, args.latency_weight))) for p in points]
        start = time.perf_counter()
        single = jax.jit(inputs.trainer.train).lower(*per_point[0], inputs.consts).compile()
        s_compile = time.perf_counter() - start
        v_runs, s_runs = [], []
        for _ in range(args.timing_reps):
            start = time.perf_counter()
            _, v_metrics = jax.block_until_ready(vmapped(*batched))
            v_runs.append(time.perf_counter() - start)
            start = time.perf_counter()
            s_metrics = [jax.block_until_ready(single(rng, w, inputs.consts))[1] for rng, w in per_point]
            s_runs.append(time.perf_counter() - start)
        diff = np.abs(np.asarray([float(m["latency_ratio_mean"]) for m in s_metrics])
                      - np.asarray(v_metrics["latency_ratio_mean"]))
        v_run, s_run = min(v_runs), min(s_runs)
        out[kind] = {"members": len(points), "steps": args.timing_steps,
                     "vmapped": {"compile_s": round(v_compile, 1), "run_s": [round(t, 1) for t in v_runs]},
                     "separate": {"compile_s": round(s_compile, 1), "run_s": [round(t, 1) for t in s_runs]},
                     "speedup_run": round(s_run / v_run, 2),
                     "speedup_total": round((s_compile + s_run) / (v_compile + v_run), 2),
                     "max_abs_diff_latency_ratio": float(diff.max()),
                     "load_avg_1min_after": round(os.getloadavg()[0], 2)}
        print(json.dumps({"timing": kind, **out[kind]}), flush=True)
    return out


def _summary(students: dict) -> dict:
    """Mean and std over seeds per variant, and the paired per-seed differences that answer the questions."""
    out = {}
    for name, per_seed in students.items():
        vals = np.asarray([r["latency_ratio_mean"] for r in per_seed.values()])
        acc = np.asarray([r["accuracy"] for r in per_seed.values()])
        out[name] = {"latency_ratio_mean": float(vals.mean()), "latency_ratio_std": float(vals.std()),
                     "accuracy": float(acc.mean()), "seeds": len(vals)}

    def paired(a, b):
        seeds = sorted(set(students.get(a, {})) & set(students.get(b, {})))
        d = [students[a][s]["latency_ratio_mean"] - students[b][s]["latency_ratio_mean"] for s in seeds]
        return {"mean_diff": float(np.mean(d)) if d else None, "per_seed": d,
                "a_better_on_seeds": int(sum(x < 0 for x in d)), "seeds": len(d)}

    out["kd_vs_labels"] = paired("kd", "labels")
    out["kd+latency_vs_labels+latency"] = paired("kd+latency", "labels+latency")
    out["latency_vs_plain_labels"] = paired("labels+latency", "labels")
    out["latency_vs_plain_kd"] = paired("kd+latency", "kd")
    return out


def _markdown(res: dict) -> str:
    t, s, a = res["teacher"], res["summary"], res["settings"]
    lines = [
        "# Learning targets (issue 3)", "",
        f"Data: `{a['data']}`: {res['data']['num_train']} training states, "
        f"{res['data']['num_eval']} held-out; "
        f"T={res['system']['tasks']}. Teacher {t['params']} params; student {res['student_params']} params "
        f"({100 * res['student_params'] / t['params']:.2f}% of the teacher).", "",
        "| model | latency ratio (mean over states) | ratio of means | accuracy | exact match |",
        "|---|---|---|---|---|",
        f"| teacher | {t['latency_ratio_mean']:.4f} | {t['latency_ratio_of_means']:.4f} "
        f"| {t['accuracy']:.4f} | {t['exact_match']:.4f} |",
    ]
    for name, per_seed in res["students"].items():
        for seed, r in per_seed.items():
            lines.append(f"| student {name} (seed {seed}) | {r['latency_ratio_mean']:.4f} | "
                         f"{r['latency_ratio_of_means']:.4f} | {r['accuracy']:.4f} | "
                         f"{r['exact_match']:.4f} |")
    lines += ["", "Mean +- std over seeds:", "", "| student variant | latency ratio | accuracy |",
              "|---|---|---|"]
    for name in res["students"]:
        g = s[name]
        lines.append(f"| {name} | {g['latency_ratio_mean']:.4f} +- {g['latency_ratio_std']:.4f} | "
                     f"{g['accuracy']:.4f} |")
    lines += ["", "Paired differences of the latency ratio (negative: the first is better):", ""]
    for key in ("kd_vs_labels", "kd+latency_vs_labels+latency", "latency_vs_plain_labels",
                "latency_vs_plain_kd"):
        p = s[key]
        if p["seeds"]:
            lines.append(f"- {key}: mean {p['mean_diff']:+.4f}, better on "
                         f"{p['a_better_on_seeds']}/{p['seeds']} seeds "
                         f"({', '.join(f'{d:+.4f}' for d in p['per_seed'])})")
    for kind, tm in (res.get("timing") or {}).items():
        vm, sep = tm["vmapped"], tm["separate"]
        lines += ["", f"Timing ({kind} grid), {tm['members']} students x {tm['steps']} steps: one "
                  f"vmapped program {min(vm['run_s'])} s (+ {vm['compile_s']} s compile) vs "
                  f"{tm['members']} separate runs {min(sep['run_s'])} s (+ {sep['compile_s']} s compile), "
                  f"fastest of {len(vm['run_s'])} alternating repetitions: {tm['speedup_run']}x on the runs, "
                  f"{tm['speedup_total']}x in total; results agree to "
                  f"{tm['max_abs_diff_latency_ratio']:.1e} in latency ratio "
                  f"(load average {tm['load_avg_1min_after']} after)."]
    lines += ["", f"Settings: `{json.dumps(a)}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="dataset directory (offload-jax generate)")
    p.add_argument("--out", required=True, help="output directory (runs, markdown, JSON)")
    p.add_argument("--holdout", type=int, default=50_000)
    p.add_argument("--max-states", type=int, default=None, help="use only the first N states of --data")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--teacher-steps", type=int, default=20_000)
    p.add_argument("--student-steps", type=int, default=5_000)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--teacher-lr", type=float, default=2e-3)
    p.add_argument("--student-lr", type=float, default=2e-3)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--latency-weight", type=float, default=0.5)
    p.add_argument("--eval-every", type=int, default=5000)
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"subset of {list(VARIANTS)}")
    p.add_argument("--timing-steps", type=int, default=500, help="steps of the timing comparison (0: skip)")
    p.add_argument("--timing-reps", type=int, default=2, help="alternating repetitions of the timing runs")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        p.error(f"--variants: unknown {unknown}; allowed: {list(VARIANTS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    data = splits.load_data(args.data, holdout=args.holdout, max_states=args.max_states)
    print(f"data ready in {time.perf_counter() - start:.0f} s: {data.info}", file=sys.stderr, flush=True)
    teacher_cfg = TrainConfig(steps=args.teacher_steps, batch_size=args.batch_size,
                              learning_rate=args.teacher_lr, eval_every=args.eval_every)
    res = {"settings": vars(args), "data": data.info, "system": data.system.to_dict()}
    res["teacher"] = _fit(out / "teacher", data, config.TEACHER_MODEL, teacher_cfg, "teacher")
    teacher = runs.load_run(out / "teacher")
    res["students"] = {}
    res["student_params"] = models.count_params(models.abstract_model(config.STUDENT_MODEL, data.system))
    for name in variants:
        kd, latency = VARIANTS[name]
        res["students"][name] = {}
        for seed in seeds:
            cfg = _student_config(args, seed, kd, latency)
            run = _fit(out / "students" / f"{name}-s{seed}", data, config.STUDENT_MODEL, cfg,
                       "distill" if kd else "student", teacher if kd else None,
                       str(out / "teacher") if kd else None)
            res["students"][name][seed] = run
    res["summary"] = _summary(res["students"])
    if args.timing_steps:
        res["timing"] = _timing(args, data, teacher)
    res["wall_s_this_call"] = round(time.perf_counter() - start, 1)
    atomic.write_json(out / "train_targets.json", res)
    atomic.write_text(out / "train_targets.md", _markdown(res))
    print(_markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
