"""Decision-latency benchmark: how long each policy takes to decide, all in one run.

For each policy: batch-1 latency (p50, p99 over --calls calls) of the AOT-compiled
policy on one state (--states K: on K states in turn) packed into a float32 vector already on the device, the
compiled identity on that vector (the overhead floor), throughput at batch --batch,
and the exported numpy student on the same vector, all timed in interleaved rounds.
The process first applies timing.LATENCY_SETTINGS (synchronous CPU dispatch) and compiles
every batch-1 program with timing.BATCH1_COMPILER_OPTIONS, the same for every policy; both are
recorded in the JSON with the load average (--jax-defaults: neither, for comparison).
A timed call ends when the program returns, which with synchronous dispatch is when the decision
is ready (checked before timing; else, and with --block, every call ends with block_until_ready()).
See offload_jax/timing.py.

    python benchmarks/bench_decision.py --json runs/bench_decision.json [--runs DIR]
    python benchmarks/bench_decision.py --json runs/bench_decision_dag.json --scenario dag --tasks 10 \
        [--users U]

--runs DIR: a quickstart output (DIR/runs/{teacher,student_kd,student_ce,droo}); without it
the learned policies use freshly initialized weights of the default sizes (a network's decision
time does not depend on the weights' values; a hybrid's local search does: time student_kd_ls and
student_kd_ls1 with --runs, over many states with --states).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from offload_jax import atomic, config, export, export_runtime, features, models, policies, scenarios, timing
from offload_jax import runs as run_dirs
from offload_jax.droo import DROOConfig


def random_runs(scenario, seed: int = 0) -> dict[str, run_dirs.LoadedRun]:
    """The learned policies with freshly initialized weights of the scenario's default sizes."""
    cfg = scenario.cfg
    states = scenario.sample(jax.random.key(seed), scenario.params, jnp.arange(4096, dtype=jnp.uint32))
    stats = features.compute_stats(features.raw_features(states))
    name = scenario.name
    runs = {}
    for i, (run, model_cfg) in enumerate([("teacher", config.DEFAULT_MODELS[name, "teacher"]),
                                          ("student_kd", config.DEFAULT_MODELS[name, "student"]),
                                          ("student_ce", config.DEFAULT_MODELS[name, "student"]),
                                          ("droo", DROOConfig().model)]):
        model = models_init(cfg, model_cfg, seed + i)
        meta = {"kind": "droo", "droo": DROOConfig().to_dict()} if run == "droo" else {"kind": run}
        runs[run] = run_dirs.LoadedRun(model=model, stats=stats, model_cfg=model_cfg, system=cfg, meta=meta)
    return runs


def models_init(cfg, model_cfg, seed):
    """A network of `model_cfg` with nonzero biases, as after training (XLA would drop an add of zeros)."""
    model = models.build(model_cfg, cfg, rngs=nnx.Rngs(seed))
    params = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten_with_path(params)
    new = [0.01 * jax.random.normal(jax.random.fold_in(jax.random.key(seed), i), v.shape, v.dtype)
           if "bias" in jax.tree_util.keystr(path) else v for i, (path, v) in enumerate(leaves)]
    nnx.update(model, jax.tree.unflatten(treedef, new))
    return model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", required=True, help="output JSON path")
    ap.add_argument("--runs", help="quickstart output dir holding runs/{teacher,student_kd,student_ce,droo}")
    ap.add_argument("--scenario", default="chain", choices=sorted(scenarios.SCENARIOS),
                    help="without --runs: the scenario whose default system is timed")
    ap.add_argument("--tasks", type=int, default=10)
    ap.add_argument("--users", type=int, default=1, help="dag only: users sharing the edge")
    ap.add_argument("--calls", type=int, default=2000, help="timed batch-1 calls per policy (>= 2000)")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--policies", default="all",
                    help="comma-separated subset of the scenario's policies (baselines, learned) or 'all'")
    ap.add_argument("--states", type=int, default=1,
                    help="the batch-1 calls cycle through this many states (a search's time depends on the "
                         "state; default 1: every call on the same state)")
    ap.add_argument("--batch-reps", type=int, default=20,
                    help="timed calls of the batch-throughput measurement")
    ap.add_argument("--rounds", type=int, default=400,
                    help="interleaved timing rounds (short blocks: this VM's speed drifts within seconds)")
    ap.add_argument("--jax-defaults", action="store_true",
                    help="for comparison: JAX's asynchronous CPU dispatch, XLA's default batch-1 compilation")
    ap.add_argument("--passes", type=int, default=None,
                    help="student_kd (JAX and numpy) decides in this many passes (default: its own; a "
                         "student that decides in steps)")
    ap.add_argument("--block", action="store_true",
                    help="end every timed call with block_until_ready(), also where the result is ready "
                         "when the call returns (synchronous dispatch): a no-op Python method, ~1-2 us here")
    args = ap.parse_args(argv)
    if not args.jax_defaults:
        timing.configure_for_latency()  # before the first JAX computation of the process
    batch1_options = {} if args.jax_defaults else timing.BATCH1_COMPILER_OPTIONS

    if args.runs:
        runs = {n: run_dirs.load_run(Path(args.runs) / "runs" / n) for n in policies.LEARNED_NAMES}
        cfg = runs["student_kd"].system
        weights = f"trained ({args.runs})"
    else:
        sizes = {"tasks": args.tasks, **({"users": args.users} if args.scenario == "dag" else {})}
        try:
            scenario = scenarios.make(args.scenario, sizes)
        except config.ConfigError as exc:
            ap.error(str(exc))
        cfg = scenario.cfg
        runs = random_runs(scenario)
        weights = ("freshly initialized (a network's decision time does not depend on the values; "
                   "the hybrids' local search does: time student_kd_ls and student_kd_ls1 with --runs)")
    if not 1 <= args.states <= args.batch:
        ap.error(f"--states must be in [1, --batch={args.batch}], got {args.states}")
    scenario = scenarios.of(cfg)
    names = policies.parse_policy_names(args.policies, scenario, learned=True)
    pols = {n: policies.make_policy(n, scenario=scenario, runs=runs) for n in names}
    if args.passes is not None and "student_kd" in pols:
        student = runs["student_kd"]
        try:
            pols["student_kd"] = policies.model_policy(student.model, student.stats, "student_kd",
                                                       steps=args.passes)
        except config.ConfigError as exc:
            ap.error(f"--passes: {exc}")
    with tempfile.TemporaryDirectory() as tmp:
        student = runs["student_kd"]
        path = Path(tmp) / "student.npz"
        arrays = export.student_arrays(student.model, student.stats, student.model_cfg, student.system)
        np.savez(path, **arrays)
        numpy_student = export_runtime.StudentPolicy(path, decode_steps=args.passes)
    result = timing.decision_benchmark(pols, scenario, calls=args.calls, batch=args.batch,
                                       batch_reps=args.batch_reps, states=args.states,
                                       numpy_student=numpy_student, rounds=args.rounds,
                                       batch1_options=batch1_options, block=args.block)
    result["weights"] = weights
    result["passes"] = numpy_student.decode_steps
    result["params"] = {n: p.params for n, p in pols.items()}
    atomic.write_json(args.json, result)
    ident = result["identity"]["p50_us"]
    print(f"device: {result['device']}\nsettings: {result['settings']}\n1-min load average (start, end): "
          f"{result['load_avg_1min'][0]:.2f}, {result['load_avg_1min'][1]:.2f}\n"
          f"identity floor p50 {ident:.1f} us")
    print(f"{'policy':<18} {'p50 us':>9} {'p99 us':>9} {'x floor':>8} {'batch states/s':>15}")
    for name, r in result["policies"].items():
        print(f"{name:<18} {r['p50_us']:9.1f} {r['p99_us']:9.1f} {r['p50_over_identity']:8.2f} "
              f"{r['batch_states_per_s']:15.0f}")
    r = result["numpy_student"]
    print(f"{'numpy student':<18} {r['p50_us']:9.1f} {r['p99_us']:9.1f} {'':>8} "
          f"{r['batch_states_per_s']:15.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
