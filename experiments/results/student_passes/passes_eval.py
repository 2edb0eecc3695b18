"""The students of finished dag quickstarts scored in 4, 5 and 6 passes on one evaluation dataset.

    python passes_eval.py EVAL_DATA QS [QS ...]     # e.g. QS/data/eval of any of them (the same states)
"""
import sys

import jax

from offload_jax import dataset, evaluate, policies, runs

ds = dataset.load(sys.argv[1])
for qs in sys.argv[2:]:
    pols = {}
    for name in ("student_kd", "student_ce"):
        run = runs.load_run(f"{qs}/runs/{name}")
        for k in (4, 5, 6):
            pols[f"{name}_{k}"] = policies.run_policy(run, name, steps=k)
    q = evaluate.evaluate_policies(ds, pols, jax.random.key(0))
    print(qs, {n: round(float(v["objective_ratio_mean"]), 4) for n, v in q.items()}, flush=True)
