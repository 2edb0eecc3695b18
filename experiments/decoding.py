"""Deciding in steps (`offload_jax/decoding.py`): what the passes buy, what they cost, and how the dag
quickstart's networks that decide in steps hold on graphs they never saw, against the one-pass networks
of the previous quickstart.

    python experiments/decoding.py     # ~10 minutes on the 2-core CPU; needs a finished dag quickstart

Parts (each writes its entry of OUT/decoding.json; the markdown and the plot are rebuilt from it):
- `steps`: the quickstart's teacher and student_kd decided in 1, 2, 3, 5 and 10 passes on the
  quickstart's evaluation states (objective ratio), and the student's batch-1 decision time at each
  (the AOT-compiled JAX policy and the numpy export, interleaved with greedy in one run, as
  `timing.decision_benchmark` times every policy);
- `unseen`: every policy of the quickstart's runs on the real job graphs (Alibaba trace), the four
  other graph families and the eight published shapes of `dag_learning.py` (its datasets: the same
  states), beside what the one-pass quickstart scored there (dag_learning.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dag_learning  # noqa: E402
from exp_common import DPI, load_avg, log, md_table, numpy_p50_us  # noqa: E402

SCRIPT = "decoding"
STEPS = (1, 2, 3, 5, 10)
PARTS = ("steps", "unseen")
SHOWN = ("greedy", "local_search", "teacher", "student_kd", "student_kd_ls1", "student_kd_ls")


def part_steps(quickstart: Path) -> dict:
    import jax

    from offload_jax import dataset, evaluate, export_runtime, policies, runs, timing

    ds = dataset.load(quickstart / "data" / "eval")
    scenario = ds.scenario
    quality: dict[str, dict[int, float]] = {}
    pols = {}
    for name in ("teacher", "student_kd"):
        run = runs.load_run(quickstart / "runs" / name)
        for k in STEPS:
            pol = policies.model_policy(run.model, run.stats, f"{name}_{k}", steps=k)
            q = evaluate.evaluate_policies(ds, {pol.name: pol}, jax.random.key(0))[pol.name]
            quality.setdefault(name, {})[k] = q["objective_ratio_mean"]
            log(SCRIPT, f"steps: {name} in {k} passes: {q['objective_ratio_mean']:.4f}")
            if name == "student_kd":
                pols[pol.name] = pol
    pols["greedy"] = policies.make_policy("greedy", scenario=scenario)
    speed = timing.decision_benchmark(pols, scenario, calls=1000, batch=1024, batch_reps=5, states=100,
                                      rounds=200, progress=False)
    numpy_us = {}
    exported = quickstart / "student_kd.npz"
    for k in STEPS:  # the numpy export, each pass count timed over the same 100 states
        student = export_runtime.load(exported, decode_steps=k)
        numpy_us[k] = numpy_p50_us(student, scenario)
    return {"quality": quality, "jax_us": {k: speed["policies"][f"student_kd_{k}"]["p50_us"] for k in STEPS},
            "jax_p99_us": {k: speed["policies"][f"student_kd_{k}"]["p99_us"] for k in STEPS},
            "greedy_us": speed["policies"]["greedy"]["p50_us"], "numpy_us": numpy_us,
            "identity_us": speed["identity"]["p50_us"], "load_avg": load_avg()}


def part_unseen(quickstart: Path, dag_learning_dir: Path) -> dict:
    from offload_jax import scenarios

    runs_dir = quickstart / "runs"
    n = dag_learning.BUDGET.eval_states
    sets = {"alibaba": ({"topology": "file", "topology_file": dag_learning.ALIBABA},
                        dag_learning_dir / "quickstart_on_file", 101)}
    for name, keys in dag_learning.FAMILIES.items():
        sets[name] = (keys, dag_learning_dir / "families" / name, 105)
    for name in dag_learning.CLASSICS:  # (their files are not in git: written here if missing)
        graph_file = str(dag_learning.classic_topology_file(dag_learning_dir, name))
        sets[name] = ({"topology": "file", "topology_file": graph_file},
                      dag_learning_dir / "classics" / name, 106)
    result = {}
    for name, (keys, data_dir, seed) in sets.items():
        log(SCRIPT, f"unseen: {name}")
        cfg = scenarios.make("dag", {"tasks": 10, **keys}).cfg
        result[name] = dag_learning._score(runs_dir, data_dir, cfg, n, seed)
    return result


def _one_pass(dag_learning_dir: Path) -> dict:
    """What the one-pass quickstart scored on the same datasets (dag_learning.json)."""
    old = json.loads((dag_learning_dir / "dag_learning.json").read_text())
    out = {"alibaba": old["generalization"]["quickstart_to_file"]}
    out.update(old["families"])
    out.update(old["classics"])
    return out


def markdown(result: dict, before: dict) -> str:
    passes = result.get("passes")  # absent from the results written before it was recorded
    own = f"; teacher {passes['teacher']} passes, student {passes['student_kd']}" if passes else ""
    lines = ["# Deciding in steps", "",
             "The dag quickstart's networks read the decisions already taken and decide in several passes, "
             f"each fixing the most confident open decisions (`offload_jax/decoding.py`{own}). "
             "`python experiments/decoding.py`.", ""]
    steps = result.get("steps")
    if steps:
        q = steps["quality"]
        rows = [[k, f"{q['teacher'][str(k)]:.3f}", f"{q['student_kd'][str(k)]:.3f}",
                 f"{steps['jax_us'][str(k)]:.1f} / {steps['jax_p99_us'][str(k)]:.0f}",
                 f"{steps['numpy_us'][str(k)]:.1f}"] for k in STEPS]
        lines += ["## Passes: quality and batch-1 time", "",
                  "On the quickstart's 5,000 evaluation states (J / J*, mean of per-state ratios); the "
                  "student's batch-1 p50 / p99 (us) over 100 states, AOT-compiled JAX, and its numpy export "
                  f"(p50). Greedy in the same run: {steps['greedy_us']:.1f} us; the compiled identity "
                  f"{steps['identity_us']:.1f} us; 1-min load average at the end {steps['load_avg']}.", "",
                  md_table(["passes", "teacher", "student_kd", "student JAX p50 / p99 (us)",
                            "student numpy p50 (us)"], rows), "",
                  "![passes](decoding.png)", ""]
    unseen = result.get("unseen")
    if unseen:
        rows = []
        for name, r in unseen.items():
            old = before.get(name, {})
            rows.append([name, *(f"{r[p]['objective_ratio']:.3f}" if p in r else "" for p in SHOWN),
                         f"{old['teacher']['objective_ratio']:.3f}" if "teacher" in old else "",
                         f"{old['student_kd']['objective_ratio']:.3f}" if "student_kd" in old else ""])
        lines += ["## Graphs never seen in training", "",
                  "Every policy on 1,000 states of each graph set (the datasets of `dag_learning.py`: the "
                  "same states the one-pass networks were scored on). J / J*, mean of per-state ratios.", "",
                  md_table(["graphs", *SHOWN, "one-pass teacher", "one-pass student_kd"], rows), ""]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = result["steps"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name in ("teacher", "student_kd"):
        a.plot(STEPS, [steps["quality"][name][str(k)] for k in STEPS], "o-", label=name)
    a.set_xlabel("passes")
    a.set_ylabel("J / J* (mean)")
    a.set_xticks(STEPS)
    a.legend()
    a.grid(alpha=0.3)
    b.plot(STEPS, [steps["jax_us"][str(k)] for k in STEPS], "o-", label="student, JAX (AOT)")
    b.plot(STEPS, [steps["numpy_us"][str(k)] for k in STEPS], "s-", label="student, numpy export")
    b.axhline(steps["greedy_us"], color="gray", ls="--", label="greedy")
    b.set_xlabel("passes")
    b.set_ylabel("batch-1 p50 (us)")
    b.set_xticks(STEPS)
    b.legend()
    b.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quickstart", default="experiments/results/quickstart_dag")
    ap.add_argument("--dag-learning", default="experiments/results/dag_learning")
    ap.add_argument("--out", default="experiments/results/decoding")
    ap.add_argument("--part", default="all", help=f"comma-separated of {', '.join(PARTS)}, or all")
    args = ap.parse_args()
    parts = PARTS if args.part == "all" else tuple(p.strip() for p in args.part.split(","))
    if sorted(set(parts) - set(PARTS)):
        ap.error(f"--part: unknown {sorted(set(parts) - set(PARTS))}; allowed: {', '.join(PARTS)} or all")
    quickstart, dl = Path(args.quickstart), Path(args.dag_learning)
    if not (quickstart / "report.json").exists():
        raise SystemExit(f"--quickstart {quickstart}: no finished dag quickstart there")
    from offload_jax import atomic, runs, timing

    if "steps" in parts:  # its timing needs the latency settings before the process's first computation
        timing.configure_for_latency()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "decoding.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    result["passes"] = {name: json.loads((quickstart / "runs" / name / runs.RUN_JSON).read_text())["model"]
                        ["decode_steps"] for name in ("teacher", "student_kd")}  # the runs' own counts
    for part in parts:
        value = part_steps(quickstart) if part == "steps" else part_unseen(quickstart, dl)
        result[part] = json.loads(json.dumps(value))  # int keys as the JSON has them
        atomic.write_json(path, result)
    if "steps" in result:
        plot(result, out / "decoding.png")
    atomic.write_text(out / "decoding.md", markdown(result, _one_pass(dl)))
    log(SCRIPT, f"wrote {out}")


if __name__ == "__main__":
    main()
