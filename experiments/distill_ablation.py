"""The distillation ablation: the student's latency ratio vs temperature, alpha and width.

    python experiments/distill_ablation.py --teacher RUN --data DIR [--val-data DIR] [--out DIR] [--tiny]

For each student width (the default student's depth, activation and norm; hidden = (w,) * depth) one
vmapped `sweep.run_sweep` trains every (seed, temperature, alpha) in one program: alpha < 1 mixes
the labels' cross-entropy with the teacher's softened distribution at that temperature; alpha = 1
is the labels-only baseline (the temperature does not enter its loss, so it is trained once per
seed). Scores are on the held-out split (`--val-data`, or the last `--holdout` states of `--data`):
mean and sample std (ddof=1) over seeds. "KD helps" at a width when the reference KD setting
(temperature 2, alpha 0.5: the quickstart's) has a lower mean ratio than labels-only by more than
twice the standard error of the difference.

Writes DIR/distill_ablation.{md,json} and PNG plots into DIR.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

import numpy as np
from exp_common import DPI, load_avg, log, md_table, parse_numbers

from offload_jax import runs, splits
from offload_jax.config import STUDENT_MODEL, ConfigError, TrainConfig

NAME = "distill_ablation"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / NAME
REFERENCE_KD = (2.0, 0.5)  # (temperature, alpha) of the quickstart's student_kd


@dataclasses.dataclass(frozen=True)
class Budget:
    widths: tuple[int, ...] = (16, 32, 64, 128)
    temperatures: tuple[float, ...] = (1.0, 2.0, 4.0)
    alphas: tuple[float, ...] = (0.0, 0.5)  # KD settings; alpha = 1 (labels only) is always added
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = 1_000
    batch_size: int = 256
    max_states: int | None = None  # training states read from --data (None: all)
    holdout: int = 10_000  # used only without --val-data


TINY_BUDGET = Budget(widths=(8, 16), temperatures=(1.0, 2.0), alphas=(0.5,), seeds=(0, 1, 2), steps=30,
                     batch_size=64, holdout=200)


def points_of(budget: Budget):
    """KD points (every seed x temperature x alpha < 1) then the labels-only points (alpha = 1)."""
    from offload_jax import sweep

    points = sweep.grid(budget.seeds, budget.temperatures, budget.alphas, ["ce"])  # validates every value
    return [p for p in points if p.alpha < 1.0] + sweep.grid(budget.seeds, [1.0], [1.0], ["ce"])


def student_model(width: int):
    return dataclasses.replace(STUDENT_MODEL, hidden=(width,) * len(STUDENT_MODEL.hidden))


def teacher_metrics(teacher, data) -> dict:
    """The teacher's metrics on the same held-out split (its own feature statistics)."""
    from offload_jax import train

    ev = data.eval
    pred = train.masked_argmax(train.teacher_logits(teacher, data.stats, ev.x), ev.mask)
    out = train.held_out_metrics(data.scenario, data.scenario.params, ev, pred)
    return {k: float(v) for k, v in out.items() if np.ndim(v) == 0}


def group(rows: list[dict]) -> list[dict]:
    """Mean and sample std (ddof=1) over seeds of every (width, temperature, alpha)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["width"], r["temperature"], r["alpha"]), []).append(r)
    out = []
    for (w, t, a), rs in groups.items():
        entry = {"width": w, "params": rs[0]["params"], "temperature": t, "alpha": a, "seeds": len(rs)}
        for c in ("latency_ratio_mean", "accuracy", "exact_match"):
            vals = np.asarray([r[c] for r in rs], np.float64)
            entry[c] = float(vals.mean())
            entry[c + "_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        out.append(entry)
    return out


def verdicts(groups: list[dict], widths) -> list[dict]:
    """Per width: labels-only vs the reference KD setting and vs the best KD setting."""
    out = []
    for w in widths:
        gw = [g for g in groups if g["width"] == w]
        ce = next(g for g in gw if g["alpha"] == 1.0)
        kd = [g for g in gw if g["alpha"] < 1.0]
        entry = {"width": w, "params": ce["params"], "labels_only": ce["latency_ratio_mean"],
                 "labels_only_std": ce["latency_ratio_mean_std"]}
        if kd:
            ref = next((g for g in kd if (g["temperature"], g["alpha"]) == REFERENCE_KD), kd[0])
            best = min(kd, key=lambda g: g["latency_ratio_mean"])
            n = ce["seeds"]
            se = math.sqrt((ce["latency_ratio_mean_std"] ** 2 + ref["latency_ratio_mean_std"] ** 2) / n)
            gain = ce["latency_ratio_mean"] - ref["latency_ratio_mean"]
            entry.update({"reference": {"temperature": ref["temperature"], "alpha": ref["alpha"],
                                        "latency_ratio_mean": ref["latency_ratio_mean"],
                                        "latency_ratio_mean_std": ref["latency_ratio_mean_std"]},
                          "best": {"temperature": best["temperature"], "alpha": best["alpha"],
                                   "latency_ratio_mean": best["latency_ratio_mean"],
                                   "latency_ratio_mean_std": best["latency_ratio_mean_std"]},
                          "reference_gain": gain, "gain_se": se,
                          "kd_helps": bool(gain > 2 * se), "kd_hurts": bool(-gain > 2 * se)})
        out.append(entry)
    return out


def _pm(mean: float, std: float) -> str:
    return f"{mean:.4f} ± {std:.4f}"


def report_markdown(report: dict) -> str:
    b = report["budget"]
    t = report["teacher"]
    lines = [f"# Distillation ablation (T={report['tasks']})", "",
             f"Teacher `{report['teacher_run']}` ({t['params']:,} params): held-out latency ratio "
             f"{t['metrics']['latency_ratio_mean']:.4f}. Students: hidden = (w,) x {report['depth']}, "
             f"{report['student_activation']}, norm {report['student_norm']}; {b['steps']:,} steps at batch "
             f"{b['batch_size']} on {report['num_train']:,} training states; scored on "
             f"{report['num_eval']:,} held-out states ({report['eval_source']}). Mean ± sample std over "
             f"seeds {list(b['seeds'])}. "
             "alpha = 1 is labels only (no teacher).", "",
             "## KD vs labels only, per width", "",
             md_table(["width", "params", "labels only", "KD T=2, a=0.5", "gain (± 2 SE)", "best KD (T, a)",
                       "verdict"],
                      [[v["width"], f"{v['params']:,}", _pm(v["labels_only"], v["labels_only_std"]),
                        _pm(v["reference"]["latency_ratio_mean"], v["reference"]["latency_ratio_mean_std"]),
                        f"{v['reference_gain']:+.4f} ± {2 * v['gain_se']:.4f}",
                        f"{v['best']['latency_ratio_mean']:.4f} ({v['best']['temperature']:g}, "
                        f"{v['best']['alpha']:g})",
                        _verdict_word(v)]
                       for v in report["verdicts"] if "reference" in v]),
             report["summary"], "",
             "![width](d_width.png)", "",
             "## Every setting", "",
             md_table(["width", "temperature", "alpha", "latency ratio", "accuracy", "exact match"],
                      [[g["width"], "-" if g["alpha"] == 1.0 else f"{g['temperature']:g}", f"{g['alpha']:g}",
                        _pm(g["latency_ratio_mean"], g["latency_ratio_mean_std"]),
                        _pm(g["accuracy"], g["accuracy_std"]), _pm(g["exact_match"], g["exact_match_std"])]
                       for g in report["groups"]]),
             " ".join(f"![w{w}](d_kd_w{w}.png)" for w in b["widths"]), "",
             f"Wall time (s): {report['seconds']}; 1-minute load average at start / end: "
             f"{report['load_avg']['start']} / {report['load_avg']['end']} (2 shared CPU cores).", "",
             f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


def _verdict_word(v: dict) -> str:
    return "KD helps" if v["kd_helps"] else ("KD hurts" if v["kd_hurts"] else "no clear difference")


def _summary_sentence(vs: list[dict]) -> str:
    kd = [v for v in vs if "reference" in v]
    if not kd:
        return "No KD setting in the grid (alphas all 1)."
    helps = [v["width"] for v in kd if v["kd_helps"]]
    hurts = [v["width"] for v in kd if v["kd_hurts"]]
    flat = [v["width"] for v in kd if not (v["kd_helps"] or v["kd_hurts"])]
    parts = []
    if helps:
        parts.append(f"KD (T=2, alpha=0.5) helps at width {', '.join(map(str, helps))}")
    if hurts:
        parts.append(f"hurts at width {', '.join(map(str, hurts))}")
    if flat:
        parts.append(f"makes no difference beyond seed noise at width {', '.join(map(str, flat))}")
    return "Verdict: " + "; ".join(parts) + "."


def _plots(out: Path, report: dict) -> list[str]:
    from offload_jax.plots import line_chart

    files = []
    groups, b = report["groups"], report["budget"]
    kd_alphas = [a for a in b["alphas"] if a < 1.0]
    for w in b["widths"]:
        gw = [g for g in groups if g["width"] == w]
        ce = next(g for g in gw if g["alpha"] == 1.0)
        series, errors = {}, {}
        for a in kd_alphas:
            pts = [next(g for g in gw if (g["alpha"], g["temperature"]) == (a, t)) for t in b["temperatures"]]
            series[f"KD alpha={a:g}"] = [g["latency_ratio_mean"] for g in pts]
            errors[f"KD alpha={a:g}"] = [g["latency_ratio_mean_std"] for g in pts]
        if series:
            files.append(line_chart(list(b["temperatures"]), series, out / f"d_kd_w{w}.png",
                                    xlabel="temperature (log scale)", ylabel="latency / optimal (held out)",
                                    logx=True,
                                    reference=ce["latency_ratio_mean"], errors=errors, dpi=DPI,
                                    title=f"(d) width {w} ({ce['params']:,} params); dashed: labels only "
                                          f"{ce['latency_ratio_mean']:.4f}"))
    vs = report["verdicts"]
    series = {"labels only": [v["labels_only"] for v in vs]}
    errors = {"labels only": [v["labels_only_std"] for v in vs]}
    if all("reference" in v for v in vs):
        series["KD T=2, alpha=0.5"] = [v["reference"]["latency_ratio_mean"] for v in vs]
        errors["KD T=2, alpha=0.5"] = [v["reference"]["latency_ratio_mean_std"] for v in vs]
        series["best KD per width"] = [v["best"]["latency_ratio_mean"] for v in vs]
    widths = ", ".join(str(v["width"]) for v in vs)
    files.append(line_chart([v["params"] for v in vs], series, out / "d_width.png", logx=True, errors=errors,
                            xlabel=f"student parameters (widths {widths})",
                            ylabel="latency / optimal (held out)",
                            reference=report["teacher"]["metrics"]["latency_ratio_mean"], dpi=DPI,
                            title="(d) Student size; dashed: the teacher"))
    return [Path(f).name for f in files]


def run(out: Path, teacher_dir: Path, data_dir: Path, val_data: Path | None, budget: Budget) -> dict:
    import jax

    from offload_jax import atomic, features, sweep

    points = points_of(budget)  # validates the grid before anything is loaded
    out.mkdir(parents=True, exist_ok=True)
    start_load = load_avg()
    t0 = time.perf_counter()
    teacher = runs.load_run(teacher_dir)
    data = splits.load_data(data_dir, holdout=None if val_data else budget.holdout, val_data=val_data,
                           max_states=budget.max_states)
    runs.check_compatible(data.system, teacher.meta.get("features", features.feature_spec(teacher.system)),
                           f"--teacher {str(teacher_dir)!r}")
    base = TrainConfig(steps=budget.steps, batch_size=budget.batch_size, eval_every=0)
    seconds = {"load": round(time.perf_counter() - t0, 1)}
    rows, timings = [], {}
    for w in budget.widths:
        log(NAME, f"width {w}: {len(points)} students x {budget.steps} steps in one vmapped program")
        t1 = time.perf_counter()
        model_cfg = student_model(w)
        w_rows, params, timing = sweep.run_sweep(data, model_cfg, base, points, teacher=teacher)
        n_params = sum(int(np.prod(p.shape[1:])) for p in jax.tree.leaves(params))  # per member
        for r in w_rows:
            rows.append({"width": w, "hidden": list(model_cfg.hidden), "params": n_params, **r})
        timings[str(w)] = {k: round(v, 1) if isinstance(v, float) else v for k, v in timing.items()}
        seconds[f"width_{w}"] = round(time.perf_counter() - t1, 1)
        log(NAME, f"width {w}: compile {timing['compile_s']:.0f} s, run {timing['run_s']:.0f} s")
    seconds["total"] = round(time.perf_counter() - t0, 1)
    groups = group(rows)
    vs = verdicts(groups, budget.widths)
    report = {"format": f"offload-jax-experiment/{NAME}/1", "tasks": data.system.tasks,
              "teacher_run": str(teacher_dir), "data": str(data_dir),
              "eval_source": f"--val-data {val_data}" if val_data else f"last {budget.holdout:,} of --data",
              "teacher": {"params": teacher.meta.get("params"), "model": teacher.model_cfg.to_dict(),
                          "metrics": teacher_metrics(teacher, data)},
              "depth": len(STUDENT_MODEL.hidden), "student_activation": STUDENT_MODEL.activation,
              "student_norm": STUDENT_MODEL.norm, "num_train": int(data.train.x.shape[0]),
              "num_eval": int(data.eval.x.shape[0]), "budget": dataclasses.asdict(budget),
              "train_config": base.to_dict(), "rows": rows, "groups": groups, "verdicts": vs,
              "summary": _summary_sentence(vs), "timing": timings, "seconds": seconds,
              "load_avg": {"start": start_load, "end": load_avg()},
              "command": " ".join(["python experiments/distill_ablation.py", *sys.argv[1:]])}
    report["plots"] = _plots(out, report)
    atomic.write_json(out / f"{NAME}.json", report)
    atomic.write_text(out / f"{NAME}.md", report_markdown(report))
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="distill_ablation.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", type=Path, required=True, help="the teacher's run directory")
    p.add_argument("--data", type=Path, required=True, help="training dataset (offload-jax generate)")
    p.add_argument("--val-data", type=Path, default=None,
                   help="held-out dataset (default: the last --holdout states of --data)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output dir (default {DEFAULT_OUT})")
    p.add_argument("--tiny", action="store_true", help="a seconds-long setting for smoke tests")
    p.add_argument("--widths", help="comma-separated hidden widths (default 16,32,64,128)")
    p.add_argument("--temperatures", help="comma-separated temperatures (default 1,2,4)")
    p.add_argument("--alphas", help="comma-separated KD alphas in [0, 1) (default 0,0.5; 1 is always added)")
    p.add_argument("--seeds", help="comma-separated seeds, at least 2 (default 0,1,2)")
    p.add_argument("--steps", type=int, help="training steps per student (default 1000)")
    p.add_argument("--batch-size", type=int, help="batch size (default 256)")
    p.add_argument("--max-states", type=int, help="read only the first N states of --data")
    p.add_argument("--holdout", type=int, help="held-out states without --val-data (default 10000)")
    args = p.parse_args(argv)
    try:
        changes = {}
        for flag, kind in (("widths", int), ("temperatures", float), ("alphas", float), ("seeds", int)):
            if getattr(args, flag) is not None:
                changes[flag] = tuple(parse_numbers(getattr(args, flag), f"--{flag}", kind))
        for flag in ("steps", "batch_size", "max_states", "holdout"):
            if getattr(args, flag) is not None:
                changes[flag] = getattr(args, flag)
        budget = dataclasses.replace(TINY_BUDGET if args.tiny else Budget(), **changes)
        if len(budget.seeds) < 2:
            raise ConfigError(f"--seeds: give at least 2 seeds (std over seeds), got {list(budget.seeds)}")
        if any(w < 1 for w in budget.widths):
            raise ConfigError(f"--widths: each width must be >= 1, got {list(budget.widths)}")
        for flag in ("steps", "batch_size", "holdout"):
            if getattr(budget, flag) < 1:
                raise ConfigError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(budget, flag)}")
        report = run(args.out, args.teacher, args.data, args.val_data, budget)
    except ConfigError as exc:
        p.exit(2, f"distill_ablation.py: error: {exc}\n")
    print(report_markdown(report).split("## Every setting")[0])
    print(f"(written to {args.out}: {NAME}.md, {NAME}.json, {', '.join(report['plots'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
