"""Labeling throughput: states/s of three exact labelers, measured in one run, plus end-to-end `generate`.

    python benchmarks/bench_labeling.py --tasks 10 --json runs/bench_labeling_T10.json \
        [--states 65536] [--enum-states 256] [--naive-states K] [--reps 5] [--generate-states N]

(a) naive_python: how published offloading code labels data: a Python loop over
    `itertools.product(range(3), repeat=T)`, each placement's latency in scalar Python
    arithmetic (a deliberate restatement of the SPEC formula, allowed in benchmarks).
    The states are sampled with `system.sample` and turned into Python floats OUTSIDE the
    timed region (which favors the naive labeler); its labels are checked against the DP's.
(b) enumerate: `dataset.label_indices(..., "enumerate")`, jitted: sampling, derived rates,
    stage costs, exhaustive enumeration and the label's latency, --enum-states per call.
(c) dp: the same with the chain DP, --states per call.
Each: warm-up (compile + one call), then --reps timed calls (fresh state indices each),
median states/s. Then `dataset.generate` of --generate-states DP-labeled states into a temp dir,
twice: the first run includes compilation (what a user waits for), the second reuses it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from offload_jax import dataset
from offload_jax.config import ConfigError, SystemConfig
from offload_jax.scenarios.chain import system
from offload_jax.scenarios.dag import DagScenario, bnb, heuristics, schedule, search
from offload_jax.scenarios.dag import state as dag_state
from offload_jax.scenarios.dag.config import DagConfig
from offload_jax.scenarios.dag.state import DagState


def naive_label(s: dict) -> tuple[tuple[int, ...], float]:
    """Published-code style: try every placement, latency in scalar Python arithmetic."""
    t_len = len(s["cycles"])
    f = (s["f_local"], s["f_edge"], s["f_cloud"])
    ru, rd, rb, tau = s["rate_up"], s["rate_down"], s["backhaul_rate"], s["cloud_delay"]
    k = [[0.0, 1 / ru, 1 / ru + 1 / rb], [1 / rd, 0.0, 1 / rb], [1 / rb + 1 / rd, 1 / rb, 0.0]]
    fixed = [[0.0, 0.0, tau], [0.0, 0.0, tau], [tau, tau, 0.0]]
    bits, cycles = s["data_bits"], s["cycles"]
    best, best_x = float("inf"), None
    for x in itertools.product(range(3), repeat=t_len):
        lat = bits[0] * k[0][x[0]] + fixed[0][x[0]]
        for t in range(t_len):
            lat += cycles[t] / f[x[t]]
            if t > 0:
                lat += bits[t] * k[x[t - 1]][x[t]] + fixed[x[t - 1]][x[t]]
        lat += bits[t_len] * k[x[-1]][0] + fixed[x[-1]][0]
        if lat < best:
            best, best_x = lat, x
    return best_x, best


def _python_states(cfg: SystemConfig, seed: int, n: int) -> list[dict]:
    arrays = system.to_numpy(system.sample(jax.random.key(seed), cfg, n))
    return [{k: v[i].tolist() for k, v in arrays.items()} for i in range(n)]


def time_naive(cfg: SystemConfig, n: int, reps: int, seed: int) -> dict:
    states = _python_states(cfg, seed, n)
    times, labels = [], None
    for _ in range(reps):
        t0 = time.perf_counter()
        labels = [naive_label(s)[0] for s in states]
        times.append(time.perf_counter() - t0)
    # Sanity: the naive labels are the exact labels (ties aside: float64 vs float32 arithmetic).
    _, dp_labels, _ = dataset.label_indices(jax.random.key(seed), cfg, np.arange(n, dtype=np.uint32))
    agree = float(np.mean(np.all(np.asarray(labels) == np.asarray(dp_labels), axis=1)))
    return {"states": n, "reps": reps, "median_s": statistics.median(times),
            "states_per_s": n / statistics.median(times), "label_agreement_with_dp": agree}


def time_jax(cfg: SystemConfig, solver: str, n: int, reps: int, seed: int) -> dict:
    fn = jax.jit(lambda key, idx: dataset.label_indices(key, cfg, idx, solver))
    key = jax.random.key(seed)
    t0 = time.perf_counter()
    jax.block_until_ready(fn(key, np.arange(n, dtype=np.uint32)))
    warmup_s = time.perf_counter() - t0
    times = []
    for r in range(1, reps + 1):
        idx = np.arange(r * n, (r + 1) * n, dtype=np.uint32)
        t0 = time.perf_counter()
        jax.block_until_ready(fn(key, idx))
        times.append(time.perf_counter() - t0)
    return {"states": n, "reps": reps, "warmup_compile_s": warmup_s, "median_s": statistics.median(times),
            "states_per_s": n / statistics.median(times)}


def time_generate(cfg: SystemConfig, n: int, seed: int) -> dict:
    out = {"states": n}
    with tempfile.TemporaryDirectory() as tmp:
        for run in ("first", "warm"):
            t0 = time.perf_counter()
            dataset.generate(os.path.join(tmp, run), cfg, n, seed, "dp", progress=False)
            seconds = time.perf_counter() - t0
            out[f"{run}_s"] = seconds
            out[f"{run}_states_per_s"] = n / seconds
        out["bytes_on_disk"] = sum(os.path.getsize(os.path.join(tmp, "warm", f))
                                   for f in os.listdir(os.path.join(tmp, "warm")))
    return out


def _device() -> str:
    d = jax.devices()[0]
    return (f"{d.device_kind} ({d.platform}) x{jax.device_count()}, {os.cpu_count()} CPU cores, "
            f"jax {jax.__version__}")


# ---------------------------------------------------------------------------------------------- dag


def naive_dag_label(s: dict, limit: int | None = None) -> tuple[tuple[int, ...], float]:
    """Published-code style for the dag scenario: try all 3^(U*T) placements (`itertools.product`,
    user-major, so the first minimum is the tie rule's label), each one's SPEC list schedule and J in
    scalar Python arithmetic (a deliberate restatement of SPEC "Scenario `dag`", allowed in benchmarks).
    `limit`: stop after that many placements (to estimate the time of a full label)."""
    users, tasks = len(s["cycles"]), len(s["cycles"][0])
    cyc, adj, eb = s["cycles"], s["adj"], s["edge_bits"]
    in_bits, out_bits = s["in_bits"], s["out_bits"]
    ru, rd, rb, tau = s["rate_up"], s["rate_down"], s["backhaul_rate"], s["cloud_delay"]
    f_local, f_edge, f_cloud = s["f_local"], s["f_edge"], s["f_cloud"]
    order = [(u, t) for t in range(tasks) for u in range(users) if cyc[u][t] > 0]
    preds = [[[i for i in range(t) if adj[u][i][t]] for t in range(tasks)] for u in range(users)]
    w_lat, w_en, kappa, p_tx, p_rx = s["w_latency"], s["w_energy"], s["kappa"], s["p_tx"], s["p_rx"]

    def schedule(x):
        free_local, free_up, free_down, free_edge = [0.0] * users, [0.0] * users, [0.0] * users, 0.0
        finish = [[0.0] * tasks for _ in range(users)]
        lat, up_time, down_time, local_cycles = [0.0] * users, [0.0] * users, [0.0] * users, [0.0] * users

        def move(u, a, b, t0, bits):  # D bits of user u from site a to b from t0, hop by hop
            if bits == 0 or a == b:
                return t0
            t = t0
            if a == 0:
                d = bits / ru[u]
                t = max(t, free_up[u]) + d
                free_up[u] = t
                up_time[u] += d
            if a == 2 or b == 2:
                t += bits / rb + tau
            if b == 0:
                d = bits / rd[u]
                t = max(t, free_down[u]) + d
                free_down[u] = t
                down_time[u] += d
            return t

        for u, t in order:
            site = x[u * tasks + t]
            ready = move(u, 0, site, 0.0, in_bits[u][t]) if in_bits[u][t] > 0 else 0.0
            for i in preds[u][t]:
                ready = max(ready, move(u, x[u * tasks + i], site, finish[u][i], eb[u][i][t]))
            if site == 0:
                end = max(ready, free_local[u]) + cyc[u][t] / f_local[u]
                free_local[u] = end
                local_cycles[u] += cyc[u][t]
            elif site == 1:
                end = max(ready, free_edge) + cyc[u][t] / f_edge
                free_edge = end
            else:
                end = ready + cyc[u][t] / f_cloud
            finish[u][t] = end
            lat[u] = max(lat[u], end)
            if out_bits[u][t] > 0:
                lat[u] = max(lat[u], move(u, site, 0, end, out_bits[u][t]))
        energy = [kappa * f_local[u] ** 2 * local_cycles[u] + p_tx * up_time[u] + p_rx * down_time[u]
                  for u in range(users)]
        return lat, energy

    lat0, en0 = schedule((0,) * (users * tasks))

    def ratio(a, b):
        return a / b if b > 0 else 0.0

    best, best_x = float("inf"), None
    for x in itertools.islice(itertools.product(range(3), repeat=users * tasks), limit):
        lat, en = schedule(x)
        j = sum(w_lat * ratio(lat[u], lat0[u]) + w_en * ratio(en[u], en0[u]) for u in range(users)) / users
        if j < best:
            best, best_x = j, x
    return best_x, best


def _dag_states(cfg: DagConfig, seed: int, start: int, n: int) -> DagState:
    """States start .. start+n-1 of the stream `seed`, on the device (sampled outside any timed region)."""
    idx = jnp.arange(start, start + n, dtype=jnp.uint32)
    states = dag_state.sample_indices(jax.random.key(seed), cfg.static(), cfg.params(), idx)
    return jax.block_until_ready(states)


def _python_dag_states(states: DagState, cfg: DagConfig) -> list[dict]:
    arrays = {k: np.asarray(v) for k, v in states._asdict().items()}
    arrays = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in arrays.items()}
    weights = {k: float(getattr(cfg, k)) for k in ("w_latency", "w_energy", "kappa", "p_tx", "p_rx")}
    n = len(arrays["cycles"])
    return [{**{k: v[i].tolist() for k, v in arrays.items()}, **weights} for i in range(n)]


NAIVE_LIMIT_S = 30.0  # the naive labeler is skipped where one state would take longer than this
BUDGET_S = 120.0  # timed calls of one method stop adding repetitions past this


def _reps_within(per_call_s: float, reps: int, floor: int = 1) -> int:
    return max(floor, min(reps, int(BUDGET_S / max(per_call_s, 1e-9))))


def time_naive_dag(cfg: DagConfig, n: int | None, reps: int, seed: int) -> dict:
    """States/s of `naive_dag_label`, only the labeling timed (states sampled and turned into Python floats
    before). The time per state is estimated first from 2,000 placements; above NAIVE_LIMIT_S the method
    is skipped (states_per_s None)."""
    d = cfg.users * cfg.tasks
    probe = _python_dag_states(_dag_states(cfg, seed, 0, 1), cfg)[0]
    k = min(3**d, 2000)
    t0 = time.perf_counter()
    naive_dag_label(probe, limit=k)
    estimate = (time.perf_counter() - t0) / k * 3**d
    out = {"placements": 3**d, "estimated_s_per_state": estimate, "limit_s_per_state": NAIVE_LIMIT_S}
    if n == 0 or estimate > NAIVE_LIMIT_S:
        why = ("--naive-states 0" if n == 0
               else f"estimated {estimate:.0f} s per state > {NAIVE_LIMIT_S:.0f} s")
        return {**out, "states_per_s": None, "decision_s_batch1": None, "skipped": why}
    n = n or int(max(1, min(50, 10.0 / estimate)))
    states = _dag_states(cfg, seed, 0, n)
    py_states = _python_dag_states(states, cfg)
    reps = _reps_within(estimate * n, reps)
    times, per_state, labels = [], [], []
    for _ in range(reps):
        labels, t_start = [], time.perf_counter()
        for s in py_states:
            t0 = time.perf_counter()
            labels.append(naive_dag_label(s)[0])
            per_state.append(time.perf_counter() - t0)
        times.append(time.perf_counter() - t_start)
    agree = None
    if d <= search.MAX_ENUMERATE_DECISIONS:  # float64 here, float32 there: near-ties may differ
        exact, _ = jax.jit(search.solve_enumerate)(cfg.params(), states)
        got = np.asarray(labels).reshape(n, -1)
        agree = float(np.mean(np.all(got == np.asarray(exact).reshape(n, -1), axis=1)))
    med = statistics.median(times)
    return {**out, "states": n, "reps": reps, "median_s": med, "states_per_s": n / med,
            "decision_s_batch1": statistics.median(per_state), "label_agreement_with_enumerate": agree}


def _time_calls(call, make_input, reps: int, warm_input) -> dict:
    """Warm-up call (compiles), then timed calls on fresh inputs (made outside the timed region)."""
    t0 = time.perf_counter()
    jax.block_until_ready(call(warm_input))
    warmup_s = time.perf_counter() - t0
    times = []
    r = 1
    while r <= reps:
        x = make_input(r)
        t0 = time.perf_counter()
        jax.block_until_ready(call(x))
        times.append(time.perf_counter() - t0)
        if r == 1:
            reps = _reps_within(times[0], reps, floor=min(reps, 2))
        r += 1
    return {"warmup_compile_s": warmup_s, "times_s": times, "median_s": statistics.median(times)}


def _batch1(call, cfg: DagConfig, seed: int, k: int, first: int, warm: int = 3) -> dict:
    """Median time of `call` on one state at a time, over up to k states (fewer past BUDGET_S), after
    `warm` calls that compile (state indices from `first` on, fresh ones for the timed calls)."""
    states = _dag_states(cfg, seed, first, warm + k)
    one = [jax.tree.map(lambda a, i=i: a[i:i + 1], states) for i in range(warm + k)]
    t0 = time.perf_counter()
    for s in one[:warm]:
        jax.block_until_ready(call(s))
    warmup_s = time.perf_counter() - t0
    times, spent = [], 0.0
    for s in one[warm:]:
        t0 = time.perf_counter()
        jax.block_until_ready(call(s))
        times.append(time.perf_counter() - t0)
        spent += times[-1]
        if spent > BUDGET_S / 2 and len(times) >= 5:
            break
    return {"states": len(times), "warmup_s": warmup_s, "median_s": statistics.median(times),
            "p90_s": float(np.quantile(times, 0.9)), "max_s": max(times)}


def time_enumerate_dag(cfg: DagConfig, n: int | None, reps: int, seed: int, batch1: int) -> dict:
    """`search.solve_enumerate` jitted: states/s on batches of n, and the batch-1 decision time."""
    d = cfg.users * cfg.tasks
    if d > search.MAX_ENUMERATE_DECISIONS:
        return {"states_per_s": None, "decision_s_batch1": None,
                "skipped": f"U*T = {d} > {search.MAX_ENUMERATE_DECISIONS} (3^{d} placements per state)"}
    n = n or int(min(4096, max(16, 16 * 3 ** (search.MAX_ENUMERATE_DECISIONS - d))))
    params = cfg.params()
    fn = jax.jit(search.solve_enumerate)
    res = _time_calls(lambda s: fn(params, s), lambda r: _dag_states(cfg, seed, r * n, n), reps,
                      _dag_states(cfg, seed, 0, n))
    b1 = _batch1(lambda s: fn(params, s), cfg, seed, batch1, first=(reps + 1) * n)
    return {"states": n, **res, "states_per_s": n / res["median_s"], "decision_s_batch1": b1["median_s"],
            "batch1": b1}


def tree_stats(frontier_total: np.ndarray, n: int, d: int) -> dict:
    """Per state: nodes kept after each level; nodes evaluated (the 3 children of every kept node of the
    level before, and the root's 3); fractions of the tree's sum_{k=1..d} 3^k nodes."""
    kept = frontier_total / n
    tree = sum(3**k for k in range(1, d + 1))
    evaluated = 3 + 3 * float(kept[:-1].sum())
    return {"tree_nodes": tree, "kept_per_level": [round(float(v), 3) for v in kept],
            "kept_per_state": float(kept.sum()), "evaluated_per_state": evaluated,
            "kept_fraction": float(kept.sum()) / tree, "evaluated_fraction": evaluated / tree}


def time_bnb(cfg: DagConfig, n: int, reps: int, seed: int, batch1: int, profile: bool, cap: int = 32) -> dict:
    """bnb.Solver: states/s on batches of n after a warm-up batch (compile, pool growth), the fraction of
    the tree it visits, the batch-1 decision time (a Solver fed one state at a time) and, with
    `profile`, where the time goes."""
    d = cfg.users * cfg.tasks
    params = cfg.params()
    solver = bnb.Solver(cap=cap)
    warm = _dag_states(cfg, seed, 0, n)
    t0 = time.perf_counter()
    jax.block_until_ready(solver(params, warm))
    warmup_s = time.perf_counter() - t0
    cap_after_warmup = solver.cap
    times, fronts, caps, splits = [], [], [], []
    r = 1
    while r <= reps:
        states = _dag_states(cfg, seed, r * n, n)
        t0 = time.perf_counter()
        jax.block_until_ready(solver(params, states))
        times.append(time.perf_counter() - t0)
        caps.append(solver.cap)
        fronts.append(solver.kept)
        splits.append(solver.splits)
        if r == 1:
            reps = _reps_within(times[0], reps, floor=min(reps, 2))
        r += 1
    med = statistics.median(times)
    frontier_total = np.sum(fronts, axis=0)
    out = {"states": n, "reps": reps, "warmup_compile_s": warmup_s, "times_s": times, "median_s": med,
           "states_per_s": n / med, "cap_after_warmup": cap_after_warmup, "cap_per_rep": caps,
           "splits_per_rep": splits,
           "tree": tree_stats(frontier_total, n * len(fronts), d)}
    pool = bnb.pool_sizes(n, cfg.users, cfg.tasks, solver.cap)
    out["pool_per_state"] = [p / n for p in pool]
    # Node slots the static program computes per state (3 children of every pool slot, dead or alive).
    out["computed_children_per_state"] = 3 + 3 * sum(pool) / n
    if batch1 > 0:
        one_solver = bnb.Solver(cap=solver.cap)
        one_solver.precompile(params, _dag_states(cfg, seed, 0, 1))  # no compile in the timed calls
        b1 = _batch1(lambda s: one_solver(params, s)[0], cfg, seed, batch1, first=(reps + 1) * n, warm=10)
        out.update(decision_s_batch1=b1["median_s"],
                   batch1={**b1, "cap_start": solver.cap, "cap_end": one_solver.cap})
    else:
        out.update(decision_s_batch1=None, batch1="skipped (--batch1-states 0)")
    if profile:
        out["profile"] = profile_bnb(cfg, n, seed, solver.cap, frontier_total / (n * len(fronts)))
    return out


def profile_bnb(cfg: DagConfig, n: int, seed: int, cap: int, kept: np.ndarray) -> dict:
    """Where bnb's time goes on one batch of n states (the Solver's own program and variants of its
    public knobs; the search itself is unchanged): the per-state setup (tables, all-local norm, greedy
    incumbent, bound constants), the search with the Solver's pool (`search_jit`, no host driver), the
    same without dives, and with per-level pools sized from the measured frontier (1.5x the batch's
    nodes, rounded up to 256) instead of `cap` per state."""
    params = cfg.params()
    states = _dag_states(cfg, seed, 10**6, n)

    def prepare(s):
        tab = schedule.tables(s, params)
        nrm = schedule.norm(tab, params)
        x = heuristics.greedy_from(tab, params, nrm)
        j = schedule.objective_of(tab, params, nrm, schedule.run(tab, x))[0]
        return bnb.bounds(tab, params), j

    setup = jax.jit(jax.vmap(prepare))
    out = {"setup": _time_calls(setup, lambda r: states, 3, states)}
    pool = bnb.pool_sizes(n, cfg.users, cfg.tasks, cap)
    ref = bnb.search_jit(params, states, pool, 2)
    tight = tuple(int(min(p, -(-int(1.5 * k * n + 1) // 256) * 256)) for p, k in zip(pool, kept[:-1],
                                                                                      strict=True))
    variants = {"search_jit": (pool, 2), "no_dives": (pool, 0), "frontier_pools": (tight, 2)}
    for name, (pl, dives) in variants.items():
        res = _time_calls(lambda s, pl=pl, dives=dives: bnb.search_jit(params, s, pl, dives),
                          lambda r: states, 3, states)
        r = bnb.search_jit(params, states, pl, dives)
        res.update(pool_total=int(sum(pl)), overflow=bool(r.overflow.any()),
                   same_labels=bool(np.array_equal(np.asarray(r.label), np.asarray(ref.label))),
                   states_per_s=n / res["median_s"])
        out[name] = res
    return out


def main_dag(args) -> int:
    try:
        cfg = DagConfig(tasks=args.tasks, users=args.users).validate()
        DagScenario(cfg).check_solver("bnb")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n = args.states or DagScenario.default_batch["bnb"]
    load_before = os.getloadavg()[0]
    details = {}
    print(f"dag U={cfg.users} T={cfg.tasks}: naive_python ...", file=sys.stderr, flush=True)
    details["naive_python"] = time_naive_dag(cfg, args.naive_states, args.reps, args.seed)
    print("enumerate ...", file=sys.stderr, flush=True)
    details["enumerate"] = time_enumerate_dag(cfg, args.enum_states, args.reps, args.seed, args.batch1_states)
    print("bnb ...", file=sys.stderr, flush=True)
    details["bnb"] = time_bnb(cfg, n, args.reps, args.seed, args.batch1_states, args.profile, args.cap)
    methods = ("naive_python", "enumerate", "bnb")
    out = {
        "scenario": "dag",
        "tasks": cfg.tasks,
        "users": cfg.users,
        "device": _device(),
        "states_per_s": {k: details[k]["states_per_s"] for k in methods},
        "decision_s_batch1": {k: details[k]["decision_s_batch1"] for k in methods},
        "tree_fraction": {"bnb": details["bnb"]["tree"]["evaluated_fraction"], "enumerate": 1.0,
                          "naive_python": 1.0},
        "system": {k: cfg.to_dict()[k] for k in ("topology", "fat", "density", "jump", "edge_bits_range",
                                                  "io_bits_range", "w_energy")},
        "timing": "labeling only: states sampled (and, for naive_python, turned into Python floats) "
                  "outside the timed region; medians of timed calls after a warm-up call that compiles",
        "details": details,
        "load_avg_1min": {"before": load_before, "after": os.getloadavg()[0]},
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps({k: out[k] for k in ("scenario", "tasks", "users", "device", "states_per_s",
                                          "decision_s_batch1", "tree_fraction")}, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", choices=("chain", "dag"), default="chain")
    ap.add_argument("--tasks", type=int, required=True)
    ap.add_argument("--users", type=int, default=1, help="dag only: users sharing the edge")
    ap.add_argument("--json", required=True, help="output JSON path")
    ap.add_argument("--states", type=int, default=None,
                    help="states per timed DP call (chain, default 65536) / bnb call (dag, default the "
                         "labeler's batch: 8192; 4096 until the nineteenth dag session, in RESULTS.md's "
                         "numbers before it)")
    ap.add_argument("--enum-states", type=int, default=None,
                    help="states per timed enumeration call (chain: default 3^(14-T), at least 256; "
                         "dag: 16 * 3^(14-U*T) within [16, 4096])")
    ap.add_argument("--naive-states", type=int, default=None,
                    help="states for the naive labeler (default: about 1 s of work per rep (chain), "
                         "about 10 s per rep within [1, 50] (dag); 0 skips it)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--generate-states", type=int, default=200_000,
                    help="chain only: 0 skips the generate timing")
    ap.add_argument("--batch1-states", type=int, default=50,
                    help="dag only: single states timed for each exact method's batch-1 decision time")
    ap.add_argument("--profile", action="store_true",
                    help="dag only: where bnb's time goes (compile, per-state setup, dives, pool sizes)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cap", type=int, default=32,
                    help="dag: bnb's starting pool, nodes per state per level (it doubles on overflow, each "
                         "size a new compile: start near what the search needs to compile once)")
    args = ap.parse_args(argv)
    if args.scenario == "dag":
        return main_dag(args)
    if args.users != 1:
        ap.error("--users is a dag option")
    if args.states is None:
        args.states = 65536
    return main_chain(args)


def main_chain(args) -> int:
    cfg = SystemConfig(tasks=args.tasks).validate()
    load_before = os.getloadavg()[0]
    naive_states = args.naive_states
    if naive_states is None:  # CPython evaluates ~0.5e6 placements per second
        naive_states = max(3, min(200, int(5e5 / 3**args.tasks)))
    results = {}
    if naive_states > 0:
        results["naive_python"] = time_naive(cfg, naive_states, args.reps, args.seed)
    enum_states = args.enum_states or min(65536, max(256, 3 ** (14 - args.tasks)))
    results["enumerate"] = time_jax(cfg, "enumerate", enum_states, args.reps, args.seed)
    results["dp"] = time_jax(cfg, "dp", args.states, args.reps, args.seed)
    rate = {k: v["states_per_s"] for k, v in results.items()}
    ratios = {"dp_over_enumerate": rate["dp"] / rate["enumerate"]}
    if "naive_python" in rate:
        ratios.update(enumerate_over_naive=rate["enumerate"] / rate["naive_python"],
                      dp_over_naive=rate["dp"] / rate["naive_python"])
    out = {
        "tasks": args.tasks,
        "device": _device(),
        "states_per_s": {k: rate.get(k) for k in ("naive_python", "enumerate", "dp")},
        "ratios": ratios,
        "details": results,
        "naive_python_timing": "states sampled and converted to Python floats outside the timed region",
    }
    if args.generate_states > 0:
        out["generate"] = time_generate(cfg, args.generate_states, args.seed)
    out["load_avg_1min"] = {"before": load_before, "after": os.getloadavg()[0]}
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps({k: out[k] for k in ("tasks", "device", "states_per_s", "ratios")}, indent=1))
    if "generate" in out:
        g = out["generate"]
        print(f"generate {g['states']} states (dp): {g['first_s']:.1f} s incl. compile, "
              f"{g['warm_s']:.1f} s warm")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
