"""A quickstart's learned networks (no baselines) on the datasets of experiments/unseen_graphs.py.

    python score_unseen_learned.py QS UNSEEN_DIR OUT.json   # UNSEEN_DIR: that script's --out (its data/)
"""
import json
import sys
from pathlib import Path

import jax

from offload_jax import dataset, evaluate, policies, runs

qs, data, out = sys.argv[1], Path(sys.argv[2]) / "data", {}
pols = {n: policies.run_policy(runs.load_run(f"{qs}/runs/{n}"), n)  # read once for every set
        for n in ("teacher", "student_kd", "student_ce")}
for s in sorted(p.name for p in data.iterdir()):
    ds = dataset.load(data / s)
    q = evaluate.evaluate_policies(ds, pols, jax.random.key(0))
    out[s] = {n: round(float(v["objective_ratio_mean"]), 4) for n, v in q.items()}
    print(s, out[s], flush=True)
Path(sys.argv[3]).write_text(json.dumps(out, indent=1))
