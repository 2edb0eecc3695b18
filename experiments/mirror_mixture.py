"""Training on mirrored graphs too: does the dag quickstart's student hold on fan-in shapes then?

The quickstart's networks train on `graphs.mixture` (layered graphs of 2-10 sub-tasks, random
topological order). Scored on task-graph shapes of the literature (`dag_learning.py --part classics`)
they lose to greedy on both trees; in that mixture many sources feeding one sink is rare (0.1% of its
10-sub-task graphs have 6 sources and 1 sink; 1% have 1 source and 6 sinks). This script reruns the
quickstart's pipeline (same budget, seed and evaluation states) on the same mixture with half of its
graphs mirrored (`mixture(..., mirror_share=0.5)`: every edge reversed, so a fan-out becomes a
fan-in), then scores its runs on the states `dag_learning.py` scored the quickstart's runs on (the
classic shapes, the other layered families, the Alibaba job graphs) and compares.

    python experiments/mirror_mixture.py      # ~25 min on the 2-core CPU; resumable

One process compiles many programs (the pipeline, then every policy on 13 datasets); with the kernel's
default memory-map limit (vm.max_map_count 65530) it ran out of maps in the families part once: a
rerun resumes after the last finished part (or raise the limit: sysctl -w vm.max_map_count=262144).

Decision times are not this script's subject: the pipeline's timing stage runs on few calls.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dag_learning  # noqa: E402
from exp_common import log, md_table  # noqa: E402

SCRIPT = "mirror_mixture"
MIRROR_SHARE = 0.5
# The quickstart's budget; the timing stage cut to a few calls (its numbers are not used here).
QCFG = dataclasses.replace(dag_learning.quickstart.DAG, calls=40, timing_states=10, timing_rounds=8,
                           batch_reps=2)
COMPARED = ("greedy", "local_search", "teacher", "student_kd", "student_kd_ls")


def run(out: Path, baseline: Path, quickstart_dir: Path, student_ls: Path) -> dict:
    from offload_jax import atomic, scenarios
    from offload_jax.scenarios.dag import graphs

    qs = out / "quickstart"
    topologies = qs / "data" / "train_topologies.json"
    if not topologies.exists():  # the quickstart uses the file it finds there
        topologies.parent.mkdir(parents=True, exist_ok=True)
        graphs.write_mixture(topologies, QCFG.seed, QCFG.train_graphs, QCFG.tasks, mirror_share=MIRROR_SHARE)
    if not (qs / "report.json").exists():
        log(SCRIPT, f"quickstart pipeline on the mirrored mixture -> {qs}")
        dag_learning.quickstart.run(qs, QCFG, progress=False)
    result = {"layered": _ratios(qs / "report.json")}
    summary = out / "scores.json"
    done = json.loads(summary.read_text()) if summary.exists() else {}
    if "classics" not in done:
        done["classics"] = dag_learning.part_classics(out, str(qs))
        atomic.write_json(summary, done)
    if "families" not in done:
        done["families"] = dag_learning.part_families(out, str(qs))
        atomic.write_json(summary, done)
    if "alibaba" not in done:
        keys = {"tasks": 10, "topology": "file", "topology_file": dag_learning.ALIBABA}
        cfg = scenarios.make("dag", keys).cfg
        # the seed of dag_learning's quickstart_to_file: the same states
        n = dag_learning.BUDGET.eval_states
        done["alibaba"] = dag_learning._score(qs / "runs", out / "alibaba", cfg, n, 101)
        atomic.write_json(summary, done)
    result.update(done)
    before = json.loads((baseline / "dag_learning.json").read_text())
    reference = {"layered": _ratios(quickstart_dir / "report.json"),
                 "classics": before["classics"], "families": before["families"],
                 "alibaba": before["generalization"]["quickstart_to_file"]}
    # dag_learning scored families and Alibaba before the hybrids existed; student_ls.py scored the
    # hybrids of the same runs on the same states
    for case, rows in [*((f"family_{k}", v) for k, v in reference["families"].items()),
                       ("alibaba", reference["alibaba"])]:
        quality = json.loads((student_ls / f"quality_{case}.json").read_text())["runs"]
        for name in ("student_kd_ls", "student_kd_ls1"):
            rows.setdefault(name, {"objective_ratio": quality[name]["objective_ratio_mean"]})
    report = {"mirror_share": MIRROR_SHARE, "mirrored": result, "quickstart": reference}
    atomic.write_json(out / "mirror_mixture.json", report, sort_keys=True)
    atomic.write_text(out / "mirror_mixture.md", markdown(report))
    return report


def _ratios(report_json: Path) -> dict:
    """{policy: {"objective_ratio": ...}} of a quickstart report."""
    policies = json.loads(report_json.read_text())["policies"]
    return {n: {"objective_ratio": p["objective_ratio_mean"]} for n, p in policies.items()}


def _cases(section: dict) -> dict:
    """{case: {policy: ratio}} of one side: the layered evaluation, Alibaba, each family and shape."""
    cases = {"layered (quickstart eval)": section["layered"], "alibaba": section["alibaba"]}
    cases.update({f"family {k}": v for k, v in section["families"].items()})
    cases.update({k: v for k, v in section["classics"].items()})
    return cases


def markdown(report: dict) -> str:
    old, new = _cases(report["quickstart"]), _cases(report["mirrored"])
    rows = []
    for case in old:
        cells = [case]
        for name in COMPARED:
            a, b = old[case][name]["objective_ratio"], new[case][name]["objective_ratio"]
            cells.append(f"{a:.3f} -> {b:.3f}")
        rows.append(cells)
    return "\n".join([
        "# Training on a mixture with mirrored graphs", "",
        f"The dag quickstart's pipeline (same budget, seed, evaluation states) trained on `graphs.mixture` "
        f"with `mirror_share={report['mirror_share']}` (half the graphs with every edge reversed), against "
        "the committed quickstart's runs (mirror_share 0). Objective ratio J / J*, quickstart -> mirrored; "
        "greedy and local search do not depend on training (same states: same numbers).", "",
        md_table(["graphs", *COMPARED], rows), ""])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="experiments/results/mirror_mixture")
    ap.add_argument("--baseline", default="experiments/results/dag_learning",
                    help="dag_learning.py's output: the quickstart's runs scored on the same states")
    ap.add_argument("--quickstart", default="experiments/results/quickstart_dag")
    ap.add_argument("--student-ls", default="experiments/results/student_ls",
                    help="student_ls.py's output: the quickstart runs' hybrids on families and Alibaba")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from offload_jax import timing

    try:
        timing.configure_for_latency()
    except RuntimeError as exc:
        log(SCRIPT, f"JAX settings left as they are: {exc}")
    run(out, Path(args.baseline), Path(args.quickstart), Path(args.student_ls))
    log(SCRIPT, f"wrote {out / 'mirror_mixture.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
