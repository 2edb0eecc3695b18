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
import tempfile
import time

import jax
import numpy as np

from offload_jax import dataset
from offload_jax.config import SystemConfig
from offload_jax.scenarios.chain import system


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, required=True)
    ap.add_argument("--json", required=True, help="output JSON path")
    ap.add_argument("--states", type=int, default=65536, help="states per timed DP call")
    ap.add_argument("--enum-states", type=int, default=None,
                    help="states per timed enumeration call (default 3^(14-T), at least 256)")
    ap.add_argument("--naive-states", type=int, default=None,
                    help="states for the naive labeler (default: about 1 s of work per rep; 0 skips it)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--generate-states", type=int, default=200_000, help="0 skips the generate timing")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

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
