"""Score a dag quickstart's student_kd and teacher (and greedy, local search once) on every evaluation set.

    python compare.py OUT.json NAME=QUICKSTART_DIR [NAME=QUICKSTART_DIR ...]

Results merge into OUT.json ({set: {policy or NAME:network: J / J*}}); a rerun skips what is there.
The sets' directories are this session's (`SETS`): edit them to where yours are.
"""

import glob
import json
import os
import sys

from offload_jax import evaluate as ev

UNSEEN = "/work/main/experiments/results/unseen_graphs/data/*"  # experiments/unseen_graphs.py
DAG_LEARNING = "/tmp/dl"  # a copy of experiments/dag_learning.py's output (its data)


def evaluation_sets() -> dict[str, str]:
    sets = {"layered_eval": "/tmp/qs/final/data/eval", "alibaba": f"{DAG_LEARNING}/quickstart_on_file"}
    for d in (sorted(glob.glob(UNSEEN)) + sorted(glob.glob(f"{DAG_LEARNING}/classics/*"))
              + sorted(glob.glob(f"{DAG_LEARNING}/families/*"))):
        if os.path.isdir(d):
            sets[os.path.basename(d)] = d
    return sets


def arguments() -> tuple[str, dict[str, str], dict]:
    """(OUT, {NAME: DIR} of the NAME=DIR arguments, OUT's results so far)."""
    out = sys.argv[1]
    named = dict(a.split("=", 1) for a in sys.argv[2:])
    return out, named, (json.load(open(out)) if os.path.exists(out) else {})


def save(out: str, res: dict) -> None:
    """OUT rewritten whole (a killed run leaves the previous one)."""
    with open(out + ".tmp", "w") as f:
        json.dump(res, f, indent=1)
    os.replace(out + ".tmp", out)


def main() -> None:
    out, quickstarts, res = arguments()
    for name, d in evaluation_sets().items():
        row = res.setdefault(name, {})
        if "local_search" not in row:
            r = ev.evaluate_cli(d, [], "greedy,local_search", None, progress=False)["runs"]
            row.update({k: v["objective_ratio_mean"] for k, v in r.items()})
        for q, qdir in quickstarts.items():
            if f"{q}:student_kd" in row:
                continue
            r = ev.evaluate_cli(d, [f"{qdir}/runs/student_kd", f"{qdir}/runs/teacher"], "", None,
                                progress=False)["runs"]
            row[f"{q}:student_kd"] = r["student_kd"]["objective_ratio_mean"]
            row[f"{q}:teacher"] = r["teacher"]["objective_ratio_mean"]
        save(out, res)
        print(name, {k: round(v, 4) for k, v in row.items()}, flush=True)


if __name__ == "__main__":
    main()
