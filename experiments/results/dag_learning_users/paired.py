"""Paired per-state differences of J / J* against local search, on the same states (as run for this
directory's README):

    python paired.py EVAL_ROOT RUNS_ROOT/U3xT6 RUNS_ROOT/U2xT5 ...

EVAL_ROOT/<setting> is a dag dataset of the setting's system (here 5,000 fresh states: `offload-jax
generate --scenario dag --tasks 6 --set users=3 --num-states 5000 --seed 7 --out EVAL_ROOT/U3xT6`, and
`--tasks 5 --set users=2` for U2xT5); each RUNS_ROOT/<setting> holds the pipeline's runs/. J comes from
the scenario's objective (the SPEC formula's one home), J* from the dataset's labels.
"""
import sys
from pathlib import Path

import jax
import numpy as np

from offload_jax import dataset, policies, runs

eval_root, settings = Path(sys.argv[1]), [Path(a) for a in sys.argv[2:]]
for root in settings:
    ds = dataset.load(eval_root / root.name)
    sc = ds.scenario
    pols = {name: policies.run_policy(runs.load_run(root / "runs" / name), name)
            for name in ("student_kd", "student_ce", "teacher")}
    pols["local_search"] = policies.make_policy("local_search", scenario=sc)
    opt = np.asarray(ds.objective, np.float64)
    ratio = {name: np.asarray(sc.objective(sc.params, ds.states, jax.jit(p.fn)(jax.random.key(0), ds.states))
                              .value, np.float64) / opt for name, p in pols.items()}
    for name in ("student_kd", "student_ce", "teacher"):
        d = ratio[name] - ratio["local_search"]
        print(f"{root} {name}: {ratio[name].mean():.4f} vs local search {ratio['local_search'].mean():.4f}: "
              f"difference {d.mean():+.4f} +- {d.std(ddof=1) / np.sqrt(len(d)):.4f} (paired SEM); better on "
              f"{(d < 0).mean():.3f}, worse on {(d > 0).mean():.3f} of {len(d)} states")
