"""Networks that decide in steps, scored and timed at several pass counts (`decoding.decide`).

    python experiments/passes.py --runs RUN [RUN ...] --data EVAL_DIR --out DIR [--steps 1,2,3,5,10]

Every run (e.g. the seeds of a `sweep --save-runs`) is scored on the dataset at every pass count
(objective ratio J / J*: mean and standard error over the states); the first run is also timed at
batch 1 at each pass count, as the AOT-compiled JAX policy and as its numpy export, interleaved with
greedy and local search in one `timing.decision_benchmark` run on the dataset's system. Writes
DIR/passes.json, passes.md and passes.png. Training does not depend on the pass count: one network,
several decision rules.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from exp_common import DPI, load_avg, log, md_table, numpy_p50_us, parse_numbers  # noqa: E402

SCRIPT = "passes"
BASELINES = ("greedy", "local_search")
KEPT = ("objective_ratio_mean", "objective_ratio_sem", "accuracy", "exact_match")  # of a run's evaluation


def measure(run_dirs: list[Path], data: Path, steps: list[int], out: Path, *, calls: int = 1000,
            rounds: int = 200, states: int = 100) -> dict:
    import jax

    from offload_jax import dataset, evaluate, export, export_runtime, policies, runs, timing

    ds = dataset.load(data)
    scenario = ds.scenario
    quality: dict[str, dict[int, dict]] = {}
    timed = {}
    for i, run_dir in enumerate(run_dirs):
        run = runs.load_run(run_dir)
        for k in steps:
            pol = policies.model_policy(run.model, run.stats, f"{run_dir.name}_{k}", steps=k)
            q = evaluate.evaluate_policies(ds, {pol.name: pol}, jax.random.key(0), progress=False)[pol.name]
            quality.setdefault(run_dir.name, {})[k] = {key: q[key] for key in KEPT}
            log(SCRIPT, f"{run_dir.name} in {k} passes: {q['objective_ratio_mean']:.4f}")
            if i == 0:
                timed[k] = pol
    pols = {f"passes_{k}": pol for k, pol in timed.items()}
    pols.update({name: policies.make_policy(name, scenario=scenario) for name in BASELINES})
    speed = timing.decision_benchmark(pols, scenario, calls=calls, batch=1024, batch_reps=3, states=states,
                                      rounds=rounds, progress=False)
    exported = export.export_run(run_dirs[0], out / f"{run_dirs[0].name}.npz")
    numpy_us = {k: numpy_p50_us(export_runtime.load(exported, decode_steps=k), scenario) for k in steps}
    exported.unlink()  # the runs are the artifact; the export is only timed
    base = evaluate.evaluate_policies(ds, {n: pols[n] for n in BASELINES}, jax.random.key(0), progress=False)
    baselines = {n: {"objective_ratio_mean": base[n]["objective_ratio_mean"],
                     "decision_us_p50": speed["policies"][n]["p50_us"]} for n in BASELINES}
    mean = {k: statistics.fmean(quality[r.name][k]["objective_ratio_mean"] for r in run_dirs) for k in steps}
    return {"runs": [str(r) for r in run_dirs], "data": str(data), "steps": steps, "quality": quality,
            "mean_over_runs": mean,
            "jax_us_p50": {k: speed["policies"][f"passes_{k}"]["p50_us"] for k in steps},
            "jax_us_p99": {k: speed["policies"][f"passes_{k}"]["p99_us"] for k in steps},
            "numpy_us_p50": numpy_us, "baselines": baselines, "identity_us_p50": speed["identity"]["p50_us"],
            "device": speed["device"], "load_avg": load_avg()}


def markdown(result: dict) -> str:
    """The table of a result in its JSON form (pass counts as string keys)."""
    steps = [str(k) for k in result["steps"]]
    names = list(result["quality"])
    rows = []
    for k in steps:
        per_run = [result["quality"][n][k]["objective_ratio_mean"] for n in names]
        sem = max(result["quality"][n][k]["objective_ratio_sem"] for n in names)
        rows.append([k, f"{result['mean_over_runs'][k]:.4f}", " / ".join(f"{v:.4f}" for v in per_run),
                     f"{sem:.4f}", f"{result['jax_us_p50'][k]:.1f}", f"{result['numpy_us_p50'][k]:.1f}"])
    runs = ", ".join(f"`{r}`" for r in result["runs"])
    header = ["passes", "J / J* (mean over runs)", "per run", "SEM (max)", "JAX p50 (us)", "numpy p50 (us)"]
    lines = ["# Deciding in more passes", "",
             f"Runs: {runs}; scored on `{result['data']}`. J / J* per run (mean of per-state ratios), the "
             "largest standard error among the runs, and the first run's batch-1 decision p50 (us) at each "
             f"pass count ({result['device']}; load {result['load_avg']}).", "", md_table(header, rows)]
    shown = "; ".join(f"{n} {b['objective_ratio_mean']:.4f} at {b['decision_us_p50']:.1f} us"
                      for n, b in result["baselines"].items())
    lines += [f"In the same timing run: {shown}; identity floor {result['identity_us_p50']:.1f} us.", ""]
    lines += ["![passes](passes.png)", ""]
    return "\n".join(lines)


def plot(result: dict, out: Path) -> None:
    from offload_jax.plots import _pyplot, save_png

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    steps = [str(k) for k in result["steps"]]
    xs = [result["jax_us_p50"][k] for k in steps]
    ys = [result["mean_over_runs"][k] for k in steps]
    ax.plot(xs, ys, "o-", label="student (JAX), mean over runs")
    for k, x, y in zip(steps, xs, ys, strict=True):
        ax.annotate(f"{k}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    for name, b in result["baselines"].items():
        ax.scatter([b["decision_us_p50"]], [b["objective_ratio_mean"]], marker="s", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("batch-1 decision p50 (us, log)")
    ax.set_ylabel("objective ratio J / J*")
    ax.set_title("Passes: quality vs time to decide")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_png(fig, out / "passes.png", dpi=DPI)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="+", required=True, type=Path, metavar="RUN")
    ap.add_argument("--data", required=True, type=Path, metavar="DIR", help="a labeled dataset")
    ap.add_argument("--out", required=True, type=Path, metavar="DIR")
    ap.add_argument("--steps", default="1,2,3,5,10", help="pass counts, comma-separated")
    args = ap.parse_args(argv)
    steps = parse_numbers(args.steps, "--steps", int)
    if any(k < 1 for k in steps):
        ap.error(f"--steps: each pass count must be >= 1, got {steps}")
    from offload_jax import atomic, timing

    try:  # before JAX's backend starts
        timing.configure_for_latency()
    except RuntimeError as exc:
        log(SCRIPT, f"decision latency measured with this process's JAX settings: {exc}")
    args.out.mkdir(parents=True, exist_ok=True)
    result = measure(args.runs, args.data, steps, args.out)
    result["command"] = "python experiments/passes.py " + " ".join(argv or sys.argv[1:])
    atomic.write_json(args.out / "passes.json", result)
    result = json.loads((args.out / "passes.json").read_text())  # as readers see it: string keys
    atomic.write_text(args.out / "passes.md", markdown(result))
    plot(result, args.out)
    log(SCRIPT, f"wrote {args.out / 'passes.json'}, passes.md and passes.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
