"""Where the pruned dag search's time goes: by phase and by level of the search, and how it scales.

    python benchmarks/profile_bnb.py --tasks 10 [--users 1] [--states 4096] [--cap 64] \
        [--scaling 1024,4096,16384] --json OUT

One warm call of `bnb.search_jit` (the program `bnb.Solver` runs; its pool from --cap nodes per state)
is traced with `jax.profiler` (a Perfetto trace of the XLA:CPU thunks). Each top-level thunk (a fusion,
a gather, a while loop...) is attributed to the code that emitted it through the compiled module's
stack frames: setup (per-state tables, the all-local norm, the greedy incumbent, the bound's
constants), level data (each node's state's tables), expand (dispatching the sub-task to 3 sites),
bound (`lower_bound`), prune (the keep test), dive (greedy completions that improve the incumbent),
compact (scattering the survivors into the pool), leaves (the last level). Thunks run in dependency
order, so the level of a thunk is counted from the compactions before it. Summed thunk time can
exceed the wall time (XLA:CPU may run independent thunks on both cores).

--scaling times the same search (warm, median of 3) at other batch sizes, each with the same cap:
whether the time follows the nodes of the pool or something per call.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from offload_jax.scenarios.dag import bnb
from offload_jax.scenarios.dag import state as dag_state
from offload_jax.scenarios.dag.config import DagConfig

# Phase of a thunk: the first of these functions found on its stack, innermost first.
PHASES = (("search_batch.<locals>.prepare", "setup"), ("bounds", "setup"), ("_level_data", "level data"),
          ("search_batch.<locals>.<lambda>", "level data"), ("_expand", "expand"),
          ("lower_bound", "bound"), ("search_batch.<locals>.live", "prune"), ("_dive", "dive"),
          ("_compact", "compact"), ("_segment_best", "leaves"))


def parse_hlo(text: str) -> dict[str, tuple[list[str], str]]:
    """Instruction name -> (its stack's function names, innermost first; its op_name)."""
    sections = {}
    current = None
    for line in text.splitlines():
        if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
            current = sections.setdefault(line, {})
            continue
        if current is not None:
            m = re.match(r"^(\d+) (.*)$", line)
            if not m:
                current = None
                continue
            current[int(m.group(1))] = m.group(2)
    functions = {k: v.strip('"') for k, v in sections.get("FunctionNames", {}).items()}
    loc_fn = {k: int(re.search(r"function_name_id=(\d+)", v).group(1))
              for k, v in sections.get("FileLocations", {}).items()}
    frames = {}
    for k, v in sections.get("StackFrames", {}).items():
        loc = int(re.search(r"file_location_id=(\d+)", v).group(1))
        parent = int(re.search(r"parent_frame_id=(\d+)", v).group(1)) - 1  # printed 1-based; 0: none
        frames[k] = (loc, parent)

    def stack(frame: int) -> list[str]:
        out = []
        while frame in frames and len(out) < 64:
            loc, parent = frames[frame]
            out.append(functions.get(loc_fn.get(loc, -1), "?"))
            frame = parent
        return out

    info = {}
    for line in text.splitlines():
        m = re.match(r"^\s*(?:ROOT )?%([\w.\-]+) = ", line)
        if not m:
            continue
        f = re.search(r"stack_frame_id=(\d+)", line)
        op = re.search(r'op_name="([^"]*)"', line)
        info[m.group(1)] = (stack(int(f.group(1))) if f else [], op.group(1) if op else "")
    return info


def compile_with_level_names(params, states, pool, dives: int):
    """`bnb.search_batch` compiled as `search_jit` compiles it, with every op of level k (from its
    expansion on) under the name scope `levelk`: instrumentation of the names only (the computation is
    the same), by wrapping `bnb._expand`, which the search calls once at the start of each level."""
    original = bnb._expand
    scope = {"level": 0, "ctx": None}

    def expand(*a, **kw):
        if scope["ctx"] is not None:
            scope["ctx"].__exit__(None, None, None)
        scope["level"] += 1
        scope["ctx"] = jax.named_scope(f"level{scope['level']}")
        scope["ctx"].__enter__()
        return original(*a, **kw)

    bnb._expand = expand
    try:
        search = jax.jit(bnb.search_batch, static_argnames=("pool", "dives"))
        lowered = search.lower(params, states, pool, dives)
    finally:
        if scope["ctx"] is not None:
            scope["ctx"].__exit__(None, None, None)
        bnb._expand = original
    return lowered.compile()


def phase_of(stack: list[str]) -> str:
    for fn in stack:
        for name, phase in PHASES:
            if fn == name or fn.endswith("." + name):
                return phase
    return "other"


def top_level(events: list[dict]) -> list[dict]:
    """Thunk events not nested inside another thunk event of the same thread."""
    out = []
    by_tid = collections.defaultdict(list)
    for e in events:
        by_tid[e["tid"]].append(e)
    for evs in by_tid.values():
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        end = -1.0
        for e in evs:
            if e["ts"] >= end:
                out.append(e)
                end = e["ts"] + e["dur"]
    return sorted(out, key=lambda e: e["ts"])


def _trace_once(compiled, params, states, info) -> tuple[float, list[dict]]:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            jax.block_until_ready(compiled(params, states))
        traced_wall = time.perf_counter() - t0
        files = glob.glob(os.path.join(tmp, "**", "perfetto_trace.json.gz"), recursive=True)
        with gzip.open(files[0]) as f:
            doc = json.load(f)
    raw = doc["traceEvents"] if isinstance(doc, dict) else doc
    return traced_wall, top_level([e for e in raw if e.get("ph") == "X" and e.get("name") in info])


def trace_search(compiled, params, states, reps: int = 3) -> dict:
    """Thunk time by phase, by level and by both: the median over `reps` traced calls (the machine is
    shared: a preempted thunk looks long)."""
    info = parse_hlo(compiled.as_text())
    jax.block_until_ready(compiled(params, states))
    runs, walls, last = [], [], []
    for _ in range(reps):
        wall, events = _trace_once(compiled, params, states, info)
        walls.append(wall)
        counts = collections.Counter()
        for e in events:
            stack, op_name = info[e["name"]]
            phase = phase_of(stack)
            m = re.search(r"level(\d+)/", op_name)
            level = int(m.group(1)) if m else 0
            if phase == "level data":  # computed just before the level's expansion opens its scope
                level += 1
            key = "setup" if phase == "setup" else str(level)
            counts[("phase", phase)] += e["dur"]
            counts[("level", key)] += e["dur"]
            counts[("level/phase", f"{key}/{phase}")] += e["dur"]
            counts[("total", "")] += e["dur"]
        runs.append(counts)
        last = events

    def med(kind):
        keys = {k for c in runs for (kk, k) in c if kk == kind}
        return {k: round(statistics.median(c[(kind, k)] for c in runs) / 1000.0, 2)
                for k in sorted(keys, key=_level_key)}

    top = sorted(last, key=lambda e: -e["dur"])[:20]
    top_thunks = [{"name": e["name"], "ms": round(e["dur"] / 1000.0, 2),
                   "phase": phase_of(info[e["name"]][0]), "op_name": info[e["name"]][1],
                   "stack": info[e["name"]][0][:6]} for e in top]
    by_phase = med("phase")
    return {"reps": reps, "traced_wall_s": walls, "thunks": len(last), "thunk_ms_total": med("total")[""],
            "by_phase_ms": dict(sorted(by_phase.items(), key=lambda kv: -kv[1])),
            "by_level_ms": med("level"), "by_level_phase_ms": med("level/phase"),
            "top_thunks_last_rep": top_thunks}


def _level_key(key: str):
    head = key.split("/")[0]
    return (-1, key) if not head.isdigit() else (int(head), key)


def time_calls(fn, reps: int = 3) -> float:
    jax.block_until_ready(fn())
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, required=True)
    ap.add_argument("--users", type=int, default=1)
    ap.add_argument("--states", type=int, default=4096)
    ap.add_argument("--cap", type=int, default=64, help="pool nodes per state (the Solver's cap)")
    ap.add_argument("--dives", type=int, default=2)
    ap.add_argument("--scaling", default="", help="comma-separated batch sizes to time as well")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", required=True)
    args = ap.parse_args(argv)
    cfg = DagConfig(tasks=args.tasks, users=args.users).validate()
    params = cfg.params()

    def states_of(n):
        idx = jnp.arange(n, dtype=jnp.uint32)
        return jax.block_until_ready(dag_state.sample_indices(jax.random.key(args.seed), cfg.static(), params,
                                                              idx))

    out = {"tasks": args.tasks, "users": args.users, "states": args.states, "cap": args.cap,
           "dives": args.dives, "device": f"{jax.devices()[0].device_kind}, jax {jax.__version__}",
           "load_avg_1min_before": os.getloadavg()[0]}
    states = states_of(args.states)
    pool = bnb.pool_sizes(args.states, args.users, args.tasks, args.cap)
    r = bnb.search_jit(params, states, pool, args.dives)
    out["overflow"] = bool(r.overflow.any())
    out["kept_per_state_and_level"] = [round(float(f) / args.states, 3) for f in np.asarray(r.frontier)]
    out["pool_per_state_and_level"] = [p / args.states for p in pool]
    out["wall_s"] = time_calls(lambda: bnb.search_jit(params, states, pool, args.dives))
    log = f"search_jit U={args.users} T={args.tasks} n={args.states}: {out['wall_s']:.3f} s warm; tracing"
    print(log, file=sys.stderr, flush=True)
    compiled = compile_with_level_names(params, states, pool, args.dives)
    out["wall_s_named"] = time_calls(lambda: compiled(params, states))
    out["trace"] = trace_search(compiled, params, states)
    scaling = {}
    for n in [int(v) for v in args.scaling.split(",") if v.strip()]:
        s = states_of(n)
        pl = bnb.pool_sizes(n, args.users, args.tasks, args.cap)
        t = time_calls(lambda s=s, pl=pl: bnb.search_jit(params, s, pl, args.dives))
        scaling[str(n)] = {"median_s": t, "states_per_s": n / t,
                           "overflow": bool(bnb.search_jit(params, s, pl, args.dives).overflow.any())}
        print(f"  n={n}: {t:.3f} s, {n / t:.0f} states/s", file=sys.stderr, flush=True)
    out["scaling"] = scaling
    out["load_avg_1min_after"] = os.getloadavg()[0]
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1)
    keys = ("thunk_ms_total", "by_phase_ms", "by_level_ms")
    print(json.dumps({k: out["trace"][k] for k in keys}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
