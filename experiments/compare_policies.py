"""The paper's comparisons: every policy at the default system, across SNR, backhaul rate and T.

    python experiments/compare_policies.py [--out DIR] [--base QUICKSTART_DIR] [--tiny]

(a) mean latency of every policy (ratio to the optimum, and seconds) at the default system, from a
    quickstart output (`--base`; without it `quickstart.run` is run into DIR/base);
(b) latency ratio of every policy vs mean SNR and vs backhaul rate: new evaluation datasets with the
    swept range pinned to one value (`mean_snr_db_range=[x,x]`, `backhaul_rate_range=[b,b]`), scored
    with the base's runs, which were trained on the default distribution (so each point is a slice of
    the training distribution, not a shift away from it); and vs T: one smaller quickstart per T in
    DIR/T<T> (every T needs its own trained runs);
(c) decision latency per policy (log scale) from the base's report.

Writes DIR/compare_policies.{md,json} and PNG plots into DIR. Every stage resumes (datasets and
quickstarts are resumable; evaluations are recomputed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from exp_common import DPI, load_avg, log, md_table, parse_numbers

from offload_jax import runs as run_dirs
from offload_jax.config import ConfigError, SystemConfig

NAME = "compare_policies"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / NAME
SNR_DB = (0.0, 5.0, 10.0, 15.0, 20.0)
BACKHAUL_BPS = (5e6, 1e7, 2e7, 5e7, 1e8)
T_VALUES = (6, 8, 10, 12)
# Policies shown in the zoomed plots (the ones near the optimum).
ZOOM = ("greedy", "teacher", "student_kd", "student_ce", "droo", "optimal_dp")


# Students learn more slowly than the teacher (the quickstart gives them 8,000 steps to its 4,000).
STUDENT_STEP_FACTOR = 2


@dataclasses.dataclass(frozen=True)
class Budget:
    """Sizes of everything this script trains or evaluates itself (the base quickstart has its own)."""

    sweep_states: int = 10_000  # states per (b) evaluation dataset
    enumerate_states: int = 1_000  # optimal_enumerate is scored on the first ones only (it is slow)
    snr_db: tuple[float, ...] = SNR_DB
    backhaul_bps: tuple[float, ...] = BACKHAUL_BPS
    t_values: tuple[int, ...] = T_VALUES
    t_train_states: int = 100_000
    t_holdout: int = 5_000
    t_eval_states: int = 5_000
    t_steps: int = 2_000  # the teacher's; each student gets STUDENT_STEP_FACTOR times as many
    t_batch_size: int = 512
    t_calls: int = 300  # timed batch-1 calls per policy in each T's quickstart
    seed: int = 0

    @property
    def t_student_steps(self) -> int:
        return STUDENT_STEP_FACTOR * self.t_steps


# Tiny: two points per pinned sweep and T=4 only, which is the base itself (quickstart.TINY), so
# the whole run trains one quickstart.
TINY_BUDGET = Budget(sweep_states=300, enumerate_states=50, snr_db=(0.0, 20.0), backhaul_bps=(5e6, 1e8),
                     t_values=(4,), t_train_states=3_000, t_holdout=500, t_eval_states=500, t_steps=60,
                     t_batch_size=256, t_calls=50)


def _quickstart_config(budget: Budget, tasks: int, tiny: bool):
    from offload_jax import quickstart

    if tiny:
        return dataclasses.replace(quickstart.TINY, tasks=tasks, seed=budget.seed)
    return dataclasses.replace(
        quickstart.QuickstartConfig(), tasks=tasks, train_states=budget.t_train_states,
        holdout=budget.t_holdout, eval_states=budget.t_eval_states, teacher_steps=budget.t_steps,
        student_steps=budget.t_student_steps, batch_size=budget.t_batch_size, calls=budget.t_calls,
        seed=budget.seed)


def _config_json(qcfg) -> dict:
    """A QuickstartConfig as its report.json records it (`quickstart.config_dict`)."""
    from offload_jax import quickstart

    return json.loads(json.dumps(quickstart.config_dict(qcfg)))


def _read_report(base: Path) -> dict:
    path = base / "report.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--base {str(base)!r}: no readable report.json (a quickstart output dir is "
                          f"expected; run `offload-jax quickstart --out DIR`): {exc}") from None


def base_policies(base: Path, cfg: SystemConfig) -> dict:
    """Every policy of the chain (`policies.policy_names`), learned ones from the base's runs. Built
    once: the jitted evaluation of a policy object is compiled once and reused on every sweep point."""
    from offload_jax import policies, scenarios

    runs = {name: run_dirs.load_run(base / "runs" / name) for name in policies.LEARNED_NAMES}
    scenario = scenarios.of(cfg)
    return {name: policies.make_policy(name, scenario=scenario, runs=runs)
            for name in policies.policy_names(scenario)}


def evaluate_point(pols: dict, cfg: SystemConfig, data_dir: Path, num_states: int, enumerate_states: int,
                   seed: int, progress: bool = False) -> dict:
    """Generate (or resume) one evaluation dataset of `cfg` and score every policy in `pols` on it;
    optimal_enumerate (if present) only on the first `enumerate_states` states."""
    import jax

    from offload_jax import dataset, evaluate

    dataset.generate(data_dir, cfg, num_states, seed, progress=progress)
    ds = dataset.load(data_dir)
    slow = {n: p for n, p in pols.items() if n == "optimal_enumerate"}
    key = jax.random.key(seed)
    out = evaluate.evaluate_policies(ds, {n: p for n, p in pols.items() if n not in slow}, key,
                                     progress=progress)
    if slow:
        first = dataset.load(data_dir, max_states=enumerate_states)
        out.update(evaluate.evaluate_policies(first, slow, key, progress=progress))
    return {"results": {n: out[n] for n in pols},
            "optimal_latency_mean_s": float(np.mean(np.asarray(ds.latency, np.float64))),
            "dataset": str(data_dir)}


def pinned_sweep(pols: dict, base_cfg: SystemConfig, key: str, values, data_root: Path, tag: str,
                 num_states: int, enumerate_states: int, seed0: int, progress: bool = False) -> dict:
    """Latency ratio of every policy on datasets of `base_cfg` with `key` pinned to [x, x], x in `values`
    (dataset of point i: `data_root/<tag>_<x>`, seed `seed0 + i`)."""
    points = []
    for i, x in enumerate(values):
        log(NAME, f"{tag} = {x:g}")
        cfg = base_cfg.with_overrides({key: [x, x]})
        points.append(evaluate_point(pols, cfg, data_root / f"{tag}_{x:g}", num_states, enumerate_states,
                                     seed0 + i, progress))
    return {"key": key, "x": list(values), "num_states": num_states,
            "enumerate_states": min(enumerate_states, num_states),
            "latency_ratio_mean": {n: [p["results"][n]["latency_ratio_mean"] for p in points] for n in pols},
            "latency_mean_s": {n: [p["results"][n]["latency_mean_s"] for p in points] for n in pols},
            "optimal_latency_mean_s": [p["optimal_latency_mean_s"] for p in points],
            "datasets": [p["dataset"] for p in points]}


def _tasks_sweep(out: Path, base: Path, base_report: dict, budget: Budget, tiny: bool,
                 progress: bool) -> dict:
    from offload_jax import quickstart

    reports, dirs, configs = [], [], []
    for t in budget.t_values:
        qcfg = _quickstart_config(budget, t, tiny)
        run_dir = out / f"T{t}"
        if _config_json(qcfg) == base_report.get("config"):
            run_dir = base  # the base is exactly this run: do not train it twice
        done = run_dir / "report.json"  # written last: it exists only for a finished quickstart
        if done.exists() and json.loads(done.read_text()).get("config") == _config_json(qcfg):
            log(NAME, f"T = {t}: reusing the finished quickstart in {run_dir}")
        else:
            log(NAME, f"T = {t}: quickstart into {run_dir}")
            quickstart.run(run_dir, qcfg, progress=progress)
        reports.append(json.loads(done.read_text()))
        dirs.append(str(run_dir))
        configs.append(_config_json(qcfg))
    names = list(reports[0]["policies"])  # every policy, in the quickstart's order
    return {"x": list(budget.t_values), "runs": dirs, "configs": configs,
            "latency_ratio_mean": {n: [r["policies"][n]["latency_ratio_mean"] for r in reports]
                                   for n in names},
            "decision_us_p50": {n: [r["policies"][n]["decision_us_p50"] for r in reports] for n in names},
            "numpy_student_us_p50": [r["numpy_student"]["decision_us_p50"] for r in reports],
            "eval_states": [r["config"]["eval_states"] for r in reports],
            "seconds": [r["seconds"]["total"] for r in reports]}


# --- outputs ----------------------------------------------------------------------------------------


def _plots(out: Path, report: dict) -> list[str]:
    from offload_jax.plots import bar_chart, line_chart

    files = []
    default = report["default"]["policies"]
    t = report["default"]["tasks"]
    files.append(bar_chart({n: p["latency_ratio_mean"] for n, p in default.items()},
                           out / "a_latency_ratio.png",
                           ylabel="latency / optimal (mean of per-state ratios)", reference=1.0, log=True,
                           title=f"(a) Decision quality at the default system, T={t}", dpi=DPI))
    files.append(bar_chart({n: p["latency_mean_s"] for n, p in default.items()},
                           out / "a_latency_seconds.png",
                           ylabel="mean latency (s)", title=f"(a) Mean latency at the default system, T={t}",
                           dpi=DPI))
    d = report["decision"]
    times = {n: p["decision_us_p50"] for n, p in default.items()}
    times["student (numpy)"] = d["numpy_student_us_p50"]
    times["identity floor"] = d["identity_us_p50"]
    files.append(bar_chart(times, out / "c_decision_latency.png", ylabel="batch-1 decision time p50 (us)",
                           log=True, title=f"(c) Time to decide, T={t} (log scale)", dpi=DPI))
    labels = {"snr": ("mean SNR (dB), pinned", False), "backhaul": ("backhaul rate (bit/s), pinned", True),
              "tasks": ("sub-tasks T (one quickstart per T)", False)}
    for tag, (xlabel, logx) in labels.items():
        sweep = report["sweeps"][tag]
        series = sweep["latency_ratio_mean"]
        files.append(line_chart(sweep["x"], series, out / f"b_{tag}.png", xlabel=xlabel, logx=logx, logy=True,
                                ylabel="latency / optimal (log scale)", reference=1.0,
                                title=f"(b) Latency ratio vs {xlabel.split(' (')[0]}", dpi=DPI))
        files.append(line_chart(sweep["x"], {n: series[n] for n in ZOOM}, out / f"b_{tag}_zoom.png",
                                xlabel=xlabel, logx=logx, ylabel="latency / optimal", reference=1.0,
                                title=f"(b) Near the optimum: latency ratio vs {xlabel.split(' (')[0]}",
                                dpi=DPI))
    tasks = report["sweeps"]["tasks"]
    files.append(line_chart(tasks["x"], tasks["decision_us_p50"], out / "c_decision_vs_tasks.png",
                            xlabel="sub-tasks T", ylabel="batch-1 decision time p50 (us, log)", logy=True,
                            title="(c) Time to decide vs T", dpi=DPI))
    return [Path(f).name for f in files]


def _fmt(v: float, digits: int = 4) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def report_markdown(report: dict) -> str:
    default, t = report["default"]["policies"], report["default"]["tasks"]
    b = report["budget"]
    t_config = report["sweeps"]["tasks"]["configs"][0]  # every T's quickstart has the same budget
    lines = [f"# Policy comparison (T={t} unless swept)", "",
             f"Base quickstart: `{report['base']}` (relative to this directory; its config: "
             f"{report['default']['config_summary']}). "
             f"Decision times on {report['decision']['device']}. Latency ratio = policy latency / optimal "
             "latency, mean of per-state ratios.", "",
             "## (a) Default system", "",
             md_table(["policy", "latency ratio", "ratio of means", "mean latency (s)", "accuracy",
                       "exact match", "decision p50 (us)", "params"],
                      [[n, _fmt(p["latency_ratio_mean"]), _fmt(p["latency_ratio_of_means"]),
                        _fmt(p["latency_mean_s"]), _fmt(p["accuracy"]), _fmt(p["exact_match"]),
                        _fmt(p["decision_us_p50"], 1), "-" if p["params"] is None else f"{p['params']:,}"]
                       for n, p in default.items()]),
             "![latency ratio](a_latency_ratio.png) ![mean latency](a_latency_seconds.png)", ""]
    snr, bh, tasks = (report["sweeps"][k] for k in ("snr", "backhaul", "tasks"))
    lines += ["## (b) Sweeps", "",
              f"SNR and backhaul: {b['sweep_states']:,} fresh states per point (optimal_enumerate on the "
              f"first {snr['enumerate_states']:,}), scored with the base's runs. These runs were trained on "
              "the default distribution, in which the mean SNR is uniform in [0, 20] dB and the backhaul "
              "rate log-uniform in [5e6, 1e8] bit/s: each point pins one value *inside* that range, so it "
              "is a slice of the training distribution, not a shift away from it.", ""]
    for title, sweep, fmt in (("Latency ratio vs mean SNR (dB)", snr, "{:g} dB"),
                              ("Latency ratio vs backhaul rate", bh, "{:.0e}")):
        xs = [fmt.format(x) for x in sweep["x"]]
        rows = [[n, *(_fmt(v) for v in vals)] for n, vals in sweep["latency_ratio_mean"].items()]
        rows.append(["(optimal mean latency, s)", *(_fmt(v) for v in sweep["optimal_latency_mean_s"])])
        lines += [f"### {title}", "", md_table(["policy", *xs], rows)]
    lines += ["![snr](b_snr.png) ![snr zoom](b_snr_zoom.png)", "",
              "![backhaul](b_backhaul.png) ![backhaul zoom](b_backhaul_zoom.png)", "",
              "### Latency ratio vs T", "",
              f"One quickstart per T (default teacher and student): {t_config['train_states']:,} training "
              f"states (the last {t_config['holdout']:,} held out), {t_config['teacher_steps']:,} steps for "
              f"the teacher and {t_config['student_steps']:,} for each student at batch "
              f"{t_config['batch_size']}, every policy scored on "
              f"{t_config['eval_states']:,} fresh "
              "states of its T (optimal_enumerate included, also at T=12). Smaller than the base's budget, "
              "so the T=10 point differs from (a).", "",
              md_table(["policy", *(f"T={x}" for x in tasks["x"])],
                       [[n, *(_fmt(v) for v in vals)] for n, vals in tasks["latency_ratio_mean"].items()]),
              "![tasks](b_tasks.png) ![tasks zoom](b_tasks_zoom.png)", "",
              "## (c) Decision latency", "",
              f"Batch-1 p50 of the AOT-compiled policy on one packed state already on the device "
              f"(identity floor {report['decision']['identity_us_p50']:.1f} us); exported numpy student "
              f"{report['decision']['numpy_student_us_p50']:.1f} us.", "",
              md_table(["policy", "p50 (us)", "p99 (us)", "p50 / identity", "batch-1024 states/s"],
                       [[n, _fmt(p["decision_us_p50"], 1), _fmt(p["decision_us_p99"], 1),
                         _fmt(p["decision_us_p50"] / report["decision"]["identity_us_p50"], 2),
                         "-" if p["batch_states_per_s"] is None else f"{p['batch_states_per_s']:,.0f}"]
                        for n, p in default.items()]),
              "Per T (p50, us):", "",
              md_table(["policy", *(f"T={x}" for x in tasks["x"])],
                       [[n, *(_fmt(v, 1) for v in vals)] for n, vals in tasks["decision_us_p50"].items()]),
              "![decision](c_decision_latency.png) ![decision vs T](c_decision_vs_tasks.png)", "",
              f"Wall time (s): {report['seconds']}; 1-minute load average at start / end: "
              f"{report['load_avg']['start']} / {report['load_avg']['end']} (2 shared CPU cores).", ""]
    return "\n".join(lines)


def run(out: Path, base: Path | None, budget: Budget, *, tiny: bool = False, progress: bool = True) -> dict:
    from offload_jax import atomic, dataset, quickstart, timing

    try:  # every quickstart here times decisions; the settings must be set before JAX's backend starts
        timing.configure_for_latency()
    except RuntimeError as exc:
        log(NAME, f"decision latency measured with this process's JAX settings: {exc}")
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    start_load = load_avg()
    t0 = time.perf_counter()
    if base is None:
        base = out / "base"
        log(NAME, f"no --base: running the quickstart into {base}")
        quickstart.run(base, quickstart.TINY if tiny else quickstart.QuickstartConfig(), progress=progress)
    base_report = _read_report(base)
    base_cfg = SystemConfig.from_dict(dataset.read_manifest(base / base_report["dataset"])["system"])
    seconds["base"] = round(time.perf_counter() - t0, 1)

    t1 = time.perf_counter()
    pols = base_policies(base, base_cfg)
    sizes = (budget.sweep_states, budget.enumerate_states)
    data = out / "data"
    sweeps = {"snr": pinned_sweep(pols, base_cfg, "mean_snr_db_range", budget.snr_db, data, "snr", *sizes,
                                  budget.seed + 1000, progress),
              "backhaul": pinned_sweep(pols, base_cfg, "backhaul_rate_range", budget.backhaul_bps, data,
                                       "backhaul", *sizes, budget.seed + 2000, progress)}
    seconds["snr_backhaul"] = round(time.perf_counter() - t1, 1)
    t2 = time.perf_counter()
    sweeps["tasks"] = _tasks_sweep(out, base, base_report, budget, tiny, progress)
    seconds["tasks"] = round(time.perf_counter() - t2, 1)
    seconds["total"] = round(time.perf_counter() - t0, 1)
    for tag in ("snr", "backhaul"):  # paths relative to OUT, so the committed JSON is portable
        sweeps[tag]["datasets"] = [os.path.relpath(d, out) for d in sweeps[tag]["datasets"]]
    sweeps["tasks"]["runs"] = [os.path.relpath(d, out) for d in sweeps["tasks"]["runs"]]

    c = base_report["config"]
    summary = (f"{c['train_states']:,} training states, teacher {c['teacher_steps']:,} and students "
               f"{c['student_steps']:,} steps at batch {c['batch_size']}, {c['eval_states']:,} eval states")
    report = {"format": f"offload-jax-experiment/{NAME}/1", "base": os.path.relpath(base, out),
              "budget": dataclasses.asdict(budget),
              "default": {"tasks": base_report["tasks"], "policies": base_report["policies"],
                          "config": c, "config_summary": summary},
              "decision": {"device": base_report["device"], "identity_us_p50": base_report["identity_us_p50"],
                           "timing_settings": base_report.get("timing_settings"),
                           "numpy_student_us_p50": base_report["numpy_student"]["decision_us_p50"]},
              "sweeps": sweeps, "seconds": seconds, "load_avg": {"start": start_load, "end": load_avg()},
              "command": " ".join(["python experiments/compare_policies.py", *sys.argv[1:]])}
    report["plots"] = _plots(out, report)
    atomic.write_json(out / f"{NAME}.json", report)
    atomic.write_text(out / f"{NAME}.md", report_markdown(report))
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="compare_policies.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output dir (default {DEFAULT_OUT})")
    p.add_argument("--base", type=Path, default=None,
                   help="a quickstart output dir to reuse (default: run the quickstart into OUT/base)")
    p.add_argument("--tiny", action="store_true", help="a seconds-long setting for smoke tests")
    p.add_argument("--t-values", default=None, help="comma-separated T of the T sweep (default 6,8,10,12)")
    p.add_argument("--t-steps", type=int, default=None,
                   help=f"teacher steps in the T sweep; students get {STUDENT_STEP_FACTOR}x as many "
                        "(default 2000)")
    p.add_argument("--t-train-states", type=int, default=None, help="training states per T (default 100000)")
    p.add_argument("--sweep-states", type=int, default=None,
                   help="states per SNR/backhaul point (default 10000)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    try:
        budget = TINY_BUDGET if args.tiny else Budget()
        changes = {}
        if args.t_values is not None:
            changes["t_values"] = tuple(parse_numbers(args.t_values, "--t-values", int))
        for flag in ("t_steps", "t_train_states", "sweep_states"):
            if getattr(args, flag) is not None:
                changes[flag] = getattr(args, flag)
        budget = dataclasses.replace(budget, **changes)
        for name in ("sweep_states", "enumerate_states", "t_steps", "t_train_states"):
            if getattr(budget, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(budget, name)}")
        if any(t < 1 for t in budget.t_values):
            raise ConfigError(f"--t-values: each T must be >= 1, got {budget.t_values}")
        report = run(args.out, args.base, budget, tiny=args.tiny, progress=not args.no_progress)
    except ConfigError as exc:
        p.exit(2, f"compare_policies.py: error: {exc}\n")
    print(report_markdown(report).split("## (b)")[0])
    print(f"(written to {args.out}: {NAME}.md, {NAME}.json, {', '.join(report['plots'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
