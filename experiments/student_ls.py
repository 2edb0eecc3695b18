"""The distilled student followed by local search (policies `student_kd_ls`, `student_kd_ls1`):
quality and time to decide.

`student_kd_ls` decides as the distilled student does, then runs the scenario's local search (the
same steepest descent over single sub-task site changes as `local_search`, which starts from greedy)
from the student's placement; `student_kd_ls1` stops that search after one round (the best of the
student's placement and its 2*U*T single changes: a fixed cost). This script scores both with the
runs `experiments/dag_learning.py` and the dag quickstart already trained, on their evaluation
states, and times them at batch 1 over 100 states against greedy, local search and the student alone
(one `bench_decision.py` run per setting, all five policies in that run). It needs those runs on
disk; it trains nothing.

    python experiments/student_ls.py --part quality     # any machine state
    python experiments/student_ls.py --part timing      # on an idle machine: decision times
    python experiments/student_ls.py --part report      # student_ls.md, .json, .png

Each case's JSON is written once; a rerun skips it (delete the file to measure again), or completes it
where it lacks a policy named here.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from exp_common import DPI, load_avg, log, md_table

SCRIPT = "student_ls"
ROOT = Path(__file__).resolve().parent.parent
PLANE = ("T8", "T10", "T12", "T14", "U2xT5", "U3xT6")
FAMILIES = ("chain", "thin_sparse", "deep_dense_skips", "wide_dense")
HYBRIDS = ("student_kd_ls", "student_kd_ls1")
TIMED = ("greedy", "local_search", "student_kd", *HYBRIDS)
PARTS = ("quality", "tail", "timing", "report")


def _cases(dag_learning: Path, quickstart: Path) -> dict[str, tuple[Path, Path]]:
    """{case: (student_kd run, evaluation dataset)}: each plane setting's own run on its states; the
    quickstart's run on other graph families and on the real job graphs (unseen in training)."""
    cases = {s: (dag_learning / s / "runs" / "student_kd", dag_learning / s / "data" / "eval") for s in PLANE}
    run = quickstart / "runs" / "student_kd"
    cases.update({f"family_{f}": (run, dag_learning / "families" / f) for f in FAMILIES})
    cases["alibaba"] = (run, dag_learning / "quickstart_on_file")
    return cases


def part_quality(out: Path, dag_learning: Path, quickstart: Path) -> None:
    """Each case's `offload-jax evaluate` JSON of the hybrids and the student; a JSON written before
    that lacks a hybrid gets it added (the student's numbers are the same run's)."""
    from offload_jax import atomic, evaluate

    for case, (run, data) in _cases(dag_learning, quickstart).items():
        path = out / f"quality_{case}.json"
        done = json.loads(path.read_text()) if path.exists() else None
        missing = [h for h in HYBRIDS if done is None or h not in done["runs"]]
        if not missing:
            log(SCRIPT, f"quality {case}: done before")
            continue
        log(SCRIPT, f"quality {case}: {', '.join(missing)} of {run} on {data}")
        report = evaluate.evaluate_cli(data, [str(run)], ",".join(missing), None, progress=False)
        if done is not None:
            report["runs"] = {**done["runs"], **report["runs"]}
        atomic.write_json(path, report)


def part_tail(out: Path, quickstart: Path) -> None:
    """Where the student's excess over the optimum comes from, on the quickstart's evaluation states:
    per-state J / J* of the student, local search and student_kd_ls; how much of the student's mean
    excess its worst 10% of states carry, and how local search does on those states."""
    import jax
    import numpy as np

    from offload_jax import atomic, dataset, policies, runs

    path = out / "tail.json"
    if path.exists() and all(h in json.loads(path.read_text())["per_policy"] for h in HYBRIDS):
        log(SCRIPT, "tail: done before")
        return
    ds = dataset.load(quickstart / "data" / "eval")
    scenario = ds.scenario
    loaded = {"student_kd": runs.load_run(quickstart / "runs" / "student_kd")}
    ratio = {}
    for name in ("student_kd", "local_search", *HYBRIDS):
        policy = policies.make_policy(name, scenario=scenario, runs=loaded)
        x = jax.jit(policy.fn)(jax.random.key(0), ds.states)
        ratio[name] = np.asarray(scenario.objective(scenario.params, ds.states, x).value) / ds.objective
    student = ratio["student_kd"]
    worst = student >= np.quantile(student, 0.9)
    excess_share = float((student[worst] - 1).sum() / (student - 1).sum())
    result = {"dataset": str(quickstart / "data" / "eval"), "states": int(student.size),
              "quantiles": [0.5, 0.75, 0.9, 0.99],
              "per_policy": {name: {"mean": float(r.mean()), "optimal_share": float(np.mean(r <= 1 + 1e-6)),
                                    "quantile_values": np.quantile(r, [0.5, 0.75, 0.9, 0.99]).tolist()}
                             for name, r in ratio.items()},
              "student_worst_10pct": {"share_of_excess": excess_share,
                                      "student_mean": float(student[worst].mean()),
                                      "local_search_mean": float(ratio["local_search"][worst].mean())},
              "per_state_min_student_local_search": float(np.minimum(student, ratio["local_search"]).mean())}
    atomic.write_json(path, result)


def part_timing(out: Path, dag_learning: Path) -> None:
    for setting in PLANE:
        path = out / f"timing_{setting}.json"
        if path.exists() and set(TIMED) <= set(json.loads(path.read_text())["policies"]):
            log(SCRIPT, f"timing {setting}: done before")
            continue
        log(SCRIPT, f"timing {setting} (load {load_avg()})")
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_decision.py"), "--json", str(path),
                        "--runs", str(dag_learning / setting), "--policies", ",".join(TIMED),
                        "--states", "100", "--calls", "1000", "--batch", "256", "--batch-reps", "3"],
                       check=True)


def _collect(out: Path, dag_learning: Path) -> dict:
    """Every number of the report: the hybrid's from this script's JSONs, the other policies' from
    dag_learning.json (their quality on the same states) and this script's timing runs."""
    earlier = json.loads((dag_learning / "dag_learning.json").read_text())
    rows = {}
    for setting in PLANE:
        before = earlier["users"] if setting == "U2xT5" else earlier["plane"][setting]
        quality = json.loads((out / f"quality_{setting}.json").read_text())["runs"]
        timing_path = out / f"timing_{setting}.json"
        timing = json.loads(timing_path.read_text()) if timing_path.exists() else None
        row = {}
        for name in (*TIMED, "optimal"):
            ratio = (quality[name]["objective_ratio_mean"] if name in quality
                     else before[name]["objective_ratio"])
            row[name] = {"objective_ratio": ratio}
            if timing and name in timing["policies"]:
                row[name]["decision_us_p50"] = timing["policies"][name]["p50_us"]
                row[name]["decision_us_p99"] = timing["policies"][name]["p99_us"]
        # The exact search's time: the plane's (one state; dag_learning's timing), not re-measured here.
        row["optimal"]["decision_us_p50_one_state"] = before["optimal"]["decision_us_p50"]
        row["_timing"] = ({"states": timing["settings"]["states"], "load_avg_1min": timing["load_avg_1min"],
                           "device": timing["device"]} if timing else None)
        rows[setting] = row
    unseen = {}
    for case in (*(f"family_{f}" for f in FAMILIES), "alibaba"):
        quality = json.loads((out / f"quality_{case}.json").read_text())["runs"]
        before = (earlier["generalization"]["quickstart_to_file"] if case == "alibaba"
                  else earlier["families"][case.removeprefix("family_")])
        unseen[case] = {name: quality[name]["objective_ratio_mean"] if name in quality
                        else before[name]["objective_ratio"]
                        for name in ("greedy", "local_search", "teacher", "student_kd", *HYBRIDS)}
    return {"plane": rows, "unseen": unseen}


def part_report(out: Path, dag_learning: Path) -> dict:
    report = _collect(out, dag_learning)
    names = (*TIMED, "optimal")
    lines = ["# The distilled student, then local search (`student_kd_ls`; one round: `student_kd_ls1`)", "",
             "Objective ratio J / J* (mean of per-state ratios) on each setting's evaluation states (the "
             "runs and states of `experiments/dag_learning.py`: 30k training states, 1,000 evaluation "
             "states), "
             "with the batch-1 decision time p50 in us over 100 states (`bench_decision.py --states 100`, "
             "the five timed policies in one run; optimal: the plane's time on one state).", ""]
    rows = []
    for setting, row in report["plane"].items():
        cells = [setting]
        for name in names:
            p = row[name]
            us = p.get("decision_us_p50", p.get("decision_us_p50_one_state"))
            cells.append(f"{p['objective_ratio']:.3f}" + (f" ({us:,.0f})" if us is not None else ""))
        rows.append(cells)
    lines += [md_table(["setting", *names], rows), "",
              "On graphs the networks never saw (the dag quickstart's runs, trained on synthetic graphs; "
              "T = 10, 1,000 states each):", ""]
    cols = ("greedy", "local_search", "teacher", "student_kd", *HYBRIDS)
    lines += [md_table(["graphs", *cols], [[case, *(f"{r[c]:.3f}" for c in cols)]
                                           for case, r in report["unseen"].items()]), "",
              "![student_kd_ls](student_ls.png)", ""]
    tail_path = out / "tail.json"
    if tail_path.exists():
        t = json.loads(tail_path.read_text())
        report["tail"] = t
        w = t["student_worst_10pct"]
        lines += [f"Where the student's excess comes from (`--part tail`: the quickstart's runs on its "
                  f"{t['states']:,} evaluation states, per-state J / J*):", "",
                  md_table(["policy", "mean", "share optimal", "p50", "p75", "p90", "p99"],
                           [[name, f"{p['mean']:.3f}", f"{p['optimal_share']:.3f}",
                             *(f"{v:.3f}" for v in p["quantile_values"])]
                            for name, p in t["per_policy"].items()]), "",
                  f"The student's worst 10% of states carry {w['share_of_excess']:.0%} of its mean excess; "
                  f"on them it scores {w['student_mean']:.3f} and local search from greedy "
                  f"{w['local_search_mean']:.3f}. The better of the two per state averages "
                  f"{t['per_state_min_student_local_search']:.3f}; local search started from the student's "
                  f"placement {t['per_policy']['student_kd_ls']['mean']:.3f}, one round of it "
                  f"{t['per_policy']['student_kd_ls1']['mean']:.3f}.", ""]
    from offload_jax import atomic

    atomic.write_text(out / "student_ls.md", "\n".join(lines))
    atomic.write_json(out / "student_ls.json", report, sort_keys=True)
    _plot(out, report)
    return report


def _plot(out: Path, report: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from offload_jax.plots import save_png

    settings = [s for s, row in report["plane"].items() if row["_timing"]]
    if not settings:
        return
    fig, axes = plt.subplots(1, len(settings), figsize=(3.2 * len(settings), 3.8), sharey=True, squeeze=False)
    for ax, setting in zip(axes[0], settings, strict=True):
        row = report["plane"][setting]
        for name in (*TIMED, "optimal"):
            p = row[name]
            us = p.get("decision_us_p50", p.get("decision_us_p50_one_state"))
            ax.scatter([us], [p["objective_ratio"]], s=25, marker="*" if name in HYBRIDS else "o")
            ax.annotate(name, (us, p["objective_ratio"]), fontsize=7, textcoords="offset points",
                        xytext=(3, 3))
        ax.axhline(1.0, color="gray", ls="--", lw=1)
        ax.set_xscale("log")
        ax.set_title(setting)
        ax.set_xlabel("batch-1 decision p50 (us, log)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("objective ratio J / J*")
    fig.suptitle("The student, then local search: quality vs time to decide (lower left is better)")
    save_png(fig, out / "student_ls.png", dpi=DPI)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="experiments/results/student_ls")
    ap.add_argument("--dag-learning", default="experiments/results/dag_learning",
                    help="experiments/dag_learning.py's output (its runs and evaluation states)")
    ap.add_argument("--quickstart", default="experiments/results/quickstart_dag",
                    help="the dag quickstart's output whose runs are scored on unseen graphs")
    ap.add_argument("--part", default="all", help=f"comma-separated of {', '.join(PARTS)}, or all")
    args = ap.parse_args(argv)
    parts = PARTS if args.part == "all" else tuple(p.strip() for p in args.part.split(","))
    if bad := [p for p in parts if p not in PARTS]:
        ap.error(f"--part: unknown {bad}; allowed: {', '.join(PARTS)} or all")
    out, dag_learning, quickstart = Path(args.out), Path(args.dag_learning), Path(args.quickstart)
    out.mkdir(parents=True, exist_ok=True)
    if "quality" in parts:
        part_quality(out, dag_learning, quickstart)
    if "tail" in parts:
        part_tail(out, quickstart)
    if "timing" in parts:
        part_timing(out, dag_learning)
    if "report" in parts:
        part_report(out, dag_learning)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
