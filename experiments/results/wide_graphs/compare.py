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


def main() -> None:
    out = sys.argv[1]
    quickstarts = dict(a.split("=", 1) for a in sys.argv[2:])
    res = json.load(open(out)) if os.path.exists(out) else {}
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
        with open(out + ".tmp", "w") as f:
            json.dump(res, f, indent=1)
        os.replace(out + ".tmp", out)
        print(name, {k: round(v, 4) for k, v in row.items()}, flush=True)


if __name__ == "__main__":
    main()
