"""What scoring dag placements costs: drawing them, scheduling them, and local search at batch 1.

    python benchmarks/profile_objective.py [--tasks 10] [--users 1] [--states 512] [--samples 16] \
        [--reps 20] --json OUT

Every figure is the median of --reps warm calls of one jitted program (compile outside), each pair
measured in the same run, alternating:
* draws: `--samples` placements of each of --states states from the softmax of random logits, by
  `jax.random.categorical` (Gumbel-max) and by `losses.sample_sites` (the inverse CDF, what the
  sampled objective term uses);
* schedules: the objective of those placements (`schedule.run` looped, and unrolled on split per-slot
  arrays), per schedule; and of one state's 3*U*T local-search candidates;
* at batch 1 (one state, cycling through 64 states), with every schedule looped
  (`schedule.UNROLL_MAX_SLOTS = 0`) and unrolled where `schedule.unrolls` (the default where U*T <=
  UNROLL_MAX_SLOTS: the all-local normalizers and local search's candidates; greedy's own steps stay a
  loop): local search from greedy (`heuristics.local_search`), greedy alone, and the values of U*T
  candidates (`Scenario.candidate_values`, as DROO scores its K = U*T candidates).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics

import jax
import jax.numpy as jnp
import numpy as np

from offload_jax import losses, scenarios, timing
from offload_jax.atomic import write_json
from offload_jax.scenarios.dag import heuristics, schedule


def median_s(fn, args_list, reps: int) -> float:
    """Median seconds of fn(*args) over reps warm calls (after one untimed), cycling through args_list."""
    turn = itertools.cycle(args_list)
    return float(np.median(timing.per_call_seconds(lambda: jax.block_until_ready(fn(*next(turn))), reps,
                                                   warmup=1)))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=10)
    ap.add_argument("--users", type=int, default=1)
    ap.add_argument("--states", type=int, default=512)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--json", required=True)
    a = ap.parse_args(argv)
    sc = scenarios.make("dag", {"tasks": a.tasks, "users": a.users})
    params, n, m = sc.params, a.states, a.samples
    states = sc.sample(jax.random.key(1), params, jnp.arange(n, dtype=jnp.uint32))
    logits = jax.random.normal(jax.random.key(2), (n, a.users, a.tasks, 3))
    keys = [(logits, jax.random.key(k)) for k in range(4)]
    draws = {
        "categorical": jax.jit(lambda lg, key: jax.random.categorical(
            key, lg, axis=-1, shape=(m, *lg.shape[:-1])).astype(jnp.int8)),
        "sample_sites": jax.jit(lambda lg, key: losses.sample_sites(key, lg, m)),
    }
    out = {"device": timing.device_description(), "tasks": a.tasks, "users": a.users, "states": n,
           "samples": m, "reps": a.reps, "draws_ms": {}, "schedule_us": {}, "candidates_us": {},
           "local_search_batch1_us": {}, "greedy_batch1_us": {}, "candidate_values_batch1_us": {}}
    for _ in range(2):  # alternate the pairs: drift hits both
        for name, fn in draws.items():
            out["draws_ms"].setdefault(name, []).append(median_s(fn, keys, a.reps) * 1e3)
    x = jnp.swapaxes(draws["sample_sites"](*keys[0]), 0, 1)  # (n, m, U, T)
    d = a.users * a.tasks
    one = jax.tree.map(lambda v: v[:1], states)
    cand = jax.random.randint(jax.random.key(3), (1, 3 * d, a.users, a.tasks), 0, 3).astype(jnp.int8)

    def objective_fn(unroll):
        return jax.jit(jax.vmap(lambda s, xs: schedule.objective(params, s, xs, unroll)[0]))

    for _ in range(2):
        for unroll in (False, True):
            name = "unrolled" if unroll else "looped"
            f = objective_fn(unroll)
            out["schedule_us"].setdefault(name, []).append(median_s(f, [(states, x)], a.reps) * 1e6 / (n * m))
            out["candidates_us"].setdefault(name, []).append(median_s(f, [(one, cand)], a.reps * 10) * 1e6)
    singles = [(jax.tree.map(lambda v, i=i: v[i:i + 1], states),
                jax.random.randint(jax.random.key(4 + i), (1, d, a.users, a.tasks), 0, 3).astype(jnp.int8))
               for i in range(min(n, 64))]
    batch1 = {"local_search_batch1_us": lambda s, xs: heuristics.local_search(params, s),
              "greedy_batch1_us": lambda s, xs: heuristics.greedy(params, s),
              "candidate_values_batch1_us": lambda s, xs: sc.candidate_values(params, s, xs)}
    default = schedule.UNROLL_MAX_SLOTS
    try:
        for _ in range(2):
            for name, cap in (("looped", 0), ("unrolled", default)):
                schedule.UNROLL_MAX_SLOTS = cap  # read when the programs are traced
                for key, f in batch1.items():
                    fn = jax.jit(lambda s, xs, f=f: f(s, xs))  # a new function: traced anew
                    out[key].setdefault(name, []).append(median_s(fn, singles, a.reps * 10) * 1e6)
    finally:
        schedule.UNROLL_MAX_SLOTS = default
    out["medians"] = {k: {name: statistics.median(v) for name, v in out[k].items()}
                      for k in ("draws_ms", "schedule_us", "candidates_us", *batch1)}
    write_json(a.json, out)
    print(json.dumps(out["medians"], indent=1))
    return out


if __name__ == "__main__":
    main()
