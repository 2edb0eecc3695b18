"""Batch-1 time of the dag exact search (`bnb.Solver`, growing 4x) by the pool size it starts from: the
measurement behind `_Optimal.ONE_STATE_CAP` (benchmarks/RESULTS.md, "The dag quickstart", "Its time").

    python benchmarks/optimal_start.py --tasks 10 --states 100 --reps 3 --caps 32,128,512 --json OUT

States: the scenario's, sampled as the decision benchmark samples them (key 0 folded with 1). Each cap's
programs are compiled first (`Solver.precompile`) and called once untimed; then every state is decided
once per cap in turn, `reps` times (interleaved, so the VM's drifting speed falls on every cap alike).
Writes p50 / mean / p99 (ms) per cap and whether every cap gave the same labels.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from offload_jax import atomic, scenarios
from offload_jax.scenarios.dag import bnb


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=1)
    ap.add_argument("--tasks", type=int, default=10)
    ap.add_argument("--states", type=int, default=100)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--caps", default="32,128,512", help="comma-separated first pool sizes")
    ap.add_argument("--json", required=True)
    args = ap.parse_args(argv)
    try:
        caps = [int(c) for c in args.caps.split(",")]
    except ValueError:
        caps = []
    if not caps or min(caps) < 1 or len(set(caps)) != len(caps):
        ap.error(f"--caps must be distinct integers >= 1, comma-separated, got {args.caps!r}")
    for name in ("users", "tasks", "states", "reps"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    sc = scenarios.make("dag", {"users": args.users, "tasks": args.tasks})
    sampled = sc.sample(jax.random.fold_in(jax.random.key(0), 1), sc.params,
                        jnp.arange(args.states, dtype=jnp.uint32))
    host = jax.tree.map(np.asarray, sampled)  # once, then one state's slices
    states = [jax.tree.map(lambda a, i=i: a[i:i + 1], host) for i in range(args.states)]
    solvers = {c: bnb.Solver(cap=c, growth=4) for c in caps}
    compile_s = {}
    for c, s in solvers.items():
        t = time.perf_counter()
        s.precompile(sc.params, states[0])
        compile_s[c] = time.perf_counter() - t
        s.cap = c
        jax.block_until_ready(s(sc.params, states[0])[0])  # untimed: a process's first call runs slow
    seconds = {c: [] for c in caps}
    labels = {c: [] for c in caps}
    for rep in range(args.reps):
        for x in states:
            for c, s in solvers.items():
                s.cap = c
                t = time.perf_counter()
                label = jax.block_until_ready(s(sc.params, x)[0])
                seconds[c].append(time.perf_counter() - t)
                if rep == 0:
                    labels[c].append(np.asarray(label))
    out = {"users": args.users, "tasks": args.tasks, "states": args.states, "reps": args.reps,
           "load_avg_1min": os.getloadavg()[0],
           "same_labels": all(np.array_equal(labels[caps[0]][i], labels[c][i])
                              for c in caps for i in range(args.states)),
           "caps": {str(c): {"p50_ms": float(np.median(ms)), "mean_ms": float(np.mean(ms)),
                             "p99_ms": float(np.percentile(ms, 99)), "compile_s": compile_s[c]}
                    for c in caps for ms in [np.array(seconds[c]) * 1e3]}}
    atomic.write_json(args.json, out)
    print(json.dumps(out["caps"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
