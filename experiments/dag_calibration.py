"""Calibrate the dag defaults (SPEC "Scenario `dag`", issue 10 item 6) and report the baselines.

    python experiments/dag_calibration.py --out experiments/results/dag_calibration \
        [--part sweep|settings|all] [--states 2048] [--seed 0] [--only NAME,...] \
        [--candidate '{"name": "x", "fat": 0.5, "edge_bits_range": [1e5, 4e6]}'] \
        [--topology-file /work/shared/data/alibaba_dags.json]

Part `sweep`: for candidate values of the dag keys that shape the problem (fat, density, jump,
edge_bits_range, io_bits_range; the chain's keys keep their values), label --states layered states at
T = 10, U = 1, w_energy = 0 exactly (`bnb.Solver`) and report the label shares by site (over real
sub-tasks) and the objective ratio (mean over states of J / J*) of every baseline: local, edge,
cloud, random, greedy, local_search. The values are call-time parameters of every program (sampler,
search, heuristics, objective), so one compilation serves every candidate.

Part `settings`: for the configured defaults (`DagConfig()`), the same numbers at T = 6, 8, 10 (U = 1)
and U = 2 x T = 4, each with w_energy 0 and 0.5, on layered graphs and on the graphs of a topology file
(the Alibaba job graphs with at most T sub-tasks, padded to T slots). w_energy is a call-time value too.

Writes OUT/dag_calibration.json (every number, per part, with latency and energy ratios and standard
errors; a rerun of one part keeps the other),
OUT/dag_calibration.md and OUT/calibration.png / OUT/settings.png. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from exp_common import DPI, load_avg, log, md_table

from offload_jax import atomic
from offload_jax.config import ConfigError
from offload_jax.scenarios.base import SITES
from offload_jax.scenarios.dag import DagScenario, bnb, schedule
from offload_jax.scenarios.dag import state as dag_state
from offload_jax.scenarios.dag.config import DagConfig

SCRIPT = "dag_calibration"
ALIBABA = "/work/shared/data/alibaba_dags.json"
BASELINES = ("local", "edge", "cloud", "random", "greedy", "local_search")
SHAPE_KEYS = ("fat", "density", "jump", "edge_bits_range", "io_bits_range")
# Candidates of the sweep: the values of SHAPE_KEYS (every key given, so a candidate does not depend on
# the defaults of the day). Grouped: the previous defaults and the first exploration (per-edge data
# [4e5, 1e7]), per-edge data sizes around a middle setting, device input / result sizes, then the
# graph's shape.
_MID = {"fat": 0.5, "density": 0.5, "jump": 1, "edge_bits_range": (2e5, 6e6), "io_bits_range": (1e5, 4e6)}
CANDIDATES: tuple[dict, ...] = (
    {"name": "previous", "fat": 0.5, "density": 0.4, "jump": 1, "edge_bits_range": (1e5, 4e6),
     "io_bits_range": (1e5, 4e6)},
    {"name": "exploration", "fat": 0.5, "density": 0.5, "jump": 1, "edge_bits_range": (4e5, 1e7),
     "io_bits_range": (1e5, 4e6)},
    {**_MID, "name": "mid"},
    {**_MID, "name": "edge_small", "edge_bits_range": (5e4, 2e6)},
    {**_MID, "name": "edge_1e5_4e6", "edge_bits_range": (1e5, 4e6)},
    {**_MID, "name": "edge_1e5_1e7", "edge_bits_range": (1e5, 1e7)},
    {**_MID, "name": "edge_large", "edge_bits_range": (1e6, 2e7)},
    {**_MID, "name": "edge_xlarge", "edge_bits_range": (2e6, 4e7)},
    {**_MID, "name": "io_small", "io_bits_range": (5e4, 1e6)},
    {**_MID, "name": "io_1e5_1e7", "io_bits_range": (1e5, 1e7)},
    {**_MID, "name": "io_large", "io_bits_range": (4e5, 4e7)},
    {**_MID, "name": "fat_0.3", "fat": 0.3},
    {**_MID, "name": "fat_0.7", "fat": 0.7},
    {**_MID, "name": "density_0.3", "density": 0.3},
    {**_MID, "name": "density_0.7", "density": 0.7},
    {**_MID, "name": "jump_0", "jump": 0},
    {**_MID, "name": "jump_2", "jump": 2},
)
# (users, tasks) of the settings part, and its objective weights.
SETTINGS = ((1, 6), (1, 8), (1, 10), (2, 4))
W_ENERGY = (0.0, 0.5)


# ---------------------------------------------------------------------------------------------- measuring


class Bench:
    """Jitted baselines and objective of one static system (shapes, graph family); the values (params)
    are call-time arguments, so every candidate / weight of the same static reuses the compiled code."""

    def __init__(self, scenario: DagScenario):
        self.scenario = scenario
        self.static = scenario.static
        self.solver = bnb.Solver()
        base = scenario.baselines()
        self.policies = {name: jax.jit(base[name]) for name in BASELINES}
        self.objective = jax.jit(schedule.batch_objective)
        static = self.static
        self.sample = jax.jit(lambda key, params, idx: dag_state.sample_indices(key, static, params, idx))


def _shares(label: np.ndarray, real: np.ndarray) -> dict:
    """Share of the real sub-tasks on each site, with a standard error that treats states as clusters."""
    real_per_state = real.reshape(real.shape[0], -1).sum(1).astype(np.float64)
    total = real_per_state.sum()
    out = {}
    for s, name in enumerate(SITES):
        count = ((label == s) & real).reshape(real.shape[0], -1).sum(1).astype(np.float64)
        share = count.sum() / total
        se = np.sqrt(np.sum((count - share * real_per_state) ** 2)) / total
        out[name] = {"share": float(share), "se": float(se)}
    return out


def _ccr(states) -> np.ndarray:
    """Per state, communication-to-computation ratio in the spirit of daggen's `ccr`: the mean uplink time
    of an edge's data over the mean on-device compute time of a sub-task (user 0)."""
    adj = np.asarray(states.adj[:, 0])
    bits = np.asarray(states.edge_bits[:, 0]).sum(axis=(1, 2)) / np.maximum(adj.sum(axis=(1, 2)), 1)
    cycles = np.asarray(states.cycles[:, 0])
    compute = cycles.sum(1) / np.maximum((cycles > 0).sum(1), 1) / np.asarray(states.f_local[:, 0])
    return bits / np.asarray(states.rate_up[:, 0]) / compute


def measure(bench: Bench, params, n: int, seed: int, batch: int = 1024) -> dict:
    """Label n states of the stream `seed` exactly and score every baseline against the labels."""
    key = jax.random.key(seed)
    labels, reals, j_opt, lat_opt, en_opt, edges, ccr = [], [], [], [], [], [], []
    per = {name: {"j": [], "lat": [], "en": []} for name in BASELINES}
    label_s = 0.0
    for start in range(0, n, batch):
        idx = jnp.arange(start, min(n, start + batch), dtype=jnp.uint32)
        states = bench.sample(key, params, idx)
        t0 = time.perf_counter()
        label, _ = bench.solver(params, states)
        label = jax.block_until_ready(label)
        label_s += time.perf_counter() - t0
        j, lat, en = bench.objective(params, states, label)
        labels.append(np.asarray(label))
        reals.append(np.asarray(states.cycles) > 0)
        edges.append(np.asarray(states.adj).sum(axis=(-2, -1)).mean(axis=-1))
        ccr.append(_ccr(states))
        j_opt.append(np.asarray(j))
        lat_opt.append(np.asarray(lat).sum(-1))
        en_opt.append(np.asarray(en).sum(-1))
        policy_key = jax.random.fold_in(jax.random.key(seed + 1), start)
        for name, fn in bench.policies.items():
            x = fn(params, policy_key, states)
            jb, latb, enb = bench.objective(params, states, x)
            per[name]["j"].append(np.asarray(jb))
            per[name]["lat"].append(np.asarray(latb).sum(-1))
            per[name]["en"].append(np.asarray(enb).sum(-1))
    label, real = np.concatenate(labels), np.concatenate(reals)
    j_opt, lat_opt, en_opt = np.concatenate(j_opt), np.concatenate(lat_opt), np.concatenate(en_opt)
    out = {"states": n, "seed": seed, "label_s": round(label_s, 2),
           "mean_real_tasks_per_user": float(real.sum() / (n * real.shape[1])),
           "mean_edges": float(np.concatenate(edges).mean()),
           "ccr_median": float(np.median(np.concatenate(ccr))), "shares": _shares(label, real),
           "baselines": {}}
    for name in BASELINES:
        j = np.concatenate(per[name]["j"])
        ratio = j / j_opt
        lat_ratio = np.concatenate(per[name]["lat"]) / lat_opt
        en = np.concatenate(per[name]["en"])
        row = {"objective_ratio_mean": float(ratio.mean()),
               "objective_ratio_se": float(ratio.std(ddof=1) / np.sqrt(n)),
               "objective_ratio_p90": float(np.quantile(ratio, 0.9)),
               "objective_ratio_min": float(ratio.min()),  # >= 1 up to float32 rounding: J* is the minimum
               "optimal_share": float(np.mean(j <= j_opt)),
               "latency_ratio_mean": float(lat_ratio.mean())}
        if np.all(en_opt > 0):
            row["energy_ratio_mean"] = float((en / en_opt).mean())
        out["baselines"][name] = row
    return out


def _candidate_cfg(cand: dict, base: DagConfig) -> DagConfig:
    return base.with_overrides({k: (list(v) if isinstance(v, tuple) else v) for k, v in cand.items()
                                if k != "name"})


def run_sweep(args) -> dict:
    cands = list(CANDIDATES) + [json.loads(c) for c in args.candidate]
    cands.append({"name": "defaults", **{k: getattr(DagConfig(), k) for k in SHAPE_KEYS}})
    if args.only:
        keep = set(args.only.split(","))
        cands = [c for c in cands if c["name"] in keep]
    base = DagConfig(tasks=10, users=1, w_energy=0.0)
    bench = Bench(DagScenario(base.validate()))
    rows = []
    for k, cand in enumerate(cands):
        cfg = _candidate_cfg(cand, base)
        if cfg.static() != bench.static:
            raise ConfigError(f"candidate {cand['name']!r} changes the program's shapes")
        t0 = time.perf_counter()
        m = measure(bench, cfg.params(), args.states, args.seed)
        m["wall_s"] = round(time.perf_counter() - t0, 1)
        m["name"] = cand["name"]
        m["values"] = {key: getattr(cfg, key) for key in SHAPE_KEYS}
        rows.append(m)
        sh = m["shares"]
        log(SCRIPT, f"sweep {k + 1}/{len(cands)} {cand['name']}: shares "
                    + "/".join(f"{100 * sh[s]['share']:.1f}" for s in SITES)
                    + f"%, greedy {m['baselines']['greedy']['objective_ratio_mean']:.3f}, local_search "
                    f"{m['baselines']['local_search']['objective_ratio_mean']:.3f} ({m['wall_s']} s, "
                    f"load {load_avg()})")
    return {"tasks": 10, "users": 1, "w_energy": 0.0, "topology": "layered", "states": args.states,
            "candidates": rows}


def run_settings(args) -> dict:
    rows = []
    families = [("layered", {})]
    if args.topology_file:
        families.append(("file", {"topology": "file", "topology_file": args.topology_file}))
    total = len(families) * len(SETTINGS) * len(W_ENERGY)
    done = 0
    for family, overrides in families:
        for users, tasks in SETTINGS:
            cfg = DagConfig().with_overrides({**overrides, "users": users, "tasks": tasks})
            bench = Bench(DagScenario(cfg))
            for w in W_ENERGY:
                params = cfg.with_overrides({"w_energy": w}).params()
                t0 = time.perf_counter()
                m = measure(bench, params, args.states, args.seed)
                m.update(wall_s=round(time.perf_counter() - t0, 1), topology=family, users=users, tasks=tasks,
                         w_energy=w)
                if family == "file":
                    m["graphs"] = len(cfg.static().graphs)
                rows.append(m)
                done += 1
                sh = m["shares"]
                log(SCRIPT, f"settings {done}/{total} {family} U={users} T={tasks} w_energy={w}: shares "
                            + "/".join(f"{100 * sh[s]['share']:.1f}" for s in SITES)
                            + f"%, greedy {m['baselines']['greedy']['objective_ratio_mean']:.3f}, "
                            f"local_search {m['baselines']['local_search']['objective_ratio_mean']:.3f} "
                            f"({m['wall_s']} s, load {load_avg()})")
    return {"defaults": {k: getattr(DagConfig(), k) for k in SHAPE_KEYS}, "states": args.states,
            "topology_file": args.topology_file, "rows": rows}


# ---------------------------------------------------------------------------------------------- reporting


def _fmt_range(r) -> str:
    return f"[{r[0]:.0e}, {r[1]:.0e}]".replace("e+0", "e")


def _share_cells(m: dict) -> list[str]:
    return [f"{100 * m['shares'][s]['share']:.1f}" for s in SITES]


def _ratio_cells(m: dict) -> list[str]:
    return [f"{m['baselines'][b]['objective_ratio_mean']:.3f}" for b in BASELINES]


def markdown(report: dict) -> str:
    head = ["# dag scenario: calibration and baselines", ""]
    sweep = report.get("sweep")
    if sweep:
        head += [f"## Sweep: T = {sweep['tasks']}, U = {sweep['users']}, layered, w_energy = "
                 f"{sweep['w_energy']}, {sweep['states']} states per candidate (exact labels: bnb)", "",
                 "Label shares in % of real sub-tasks; baselines: mean over states of J / J*; "
                 "`ls opt` = share of states where local search finds an optimal placement. `edges`: mean "
                 "edges per graph; `ccr`: median over states of (mean uplink time of an edge's data) / (mean "
                 "on-device compute time of a sub-task). Every candidate sees the same uniforms (common "
                 "random numbers), so differences between rows are less noisy than the rows' own errors.", "",
                 f"Machine: {sweep['machine']}; load average {sweep['load_avg_1min']}; {sweep['wall_s']} s.",
                 f"Command: `{sweep['command']}`", ""]
        rows = []
        for m in sweep["candidates"]:
            v = m["values"]
            rows.append([m["name"], v["fat"], v["density"], v["jump"], _fmt_range(v["edge_bits_range"]),
                         _fmt_range(v["io_bits_range"]), f"{m['mean_edges']:.1f}", f"{m['ccr_median']:.2f}",
                         *_share_cells(m),
                         *_ratio_cells(m), f"{100 * m['baselines']['local_search']['optimal_share']:.0f}%"])
        head.append(md_table(["candidate", "fat", "density", "jump", "edge_bits", "io_bits", "edges", "ccr",
                              *[f"{s} %" for s in SITES], *BASELINES, "ls opt"], rows))
    settings = report.get("settings")
    if settings:
        d = settings["defaults"]
        head += [f"## Settings with the defaults (fat {d['fat']}, density {d['density']}, jump {d['jump']}, "
                 f"edge_bits {_fmt_range(d['edge_bits_range'])}, io_bits {_fmt_range(d['io_bits_range'])}), "
                 f"{settings['states']} states each", "",
                 "`file`: graphs of the topology file with at most T sub-tasks (shares over real "
                 "sub-tasks; `tasks/user`: mean real sub-tasks per user).", "",
                 f"Machine: {settings['machine']}; load average {settings['load_avg_1min']}; "
                 f"{settings['wall_s']} s.", f"Command: `{settings['command']}`", ""]
        rows = []
        for m in settings["rows"]:
            rows.append([m["topology"], m["users"], m["tasks"], m["w_energy"],
                         f"{m['mean_real_tasks_per_user']:.2f}", *_share_cells(m), *_ratio_cells(m),
                         f"{100 * m['baselines']['local_search']['optimal_share']:.0f}%"])
        head.append(md_table(["graphs", "U", "T", "w_energy", "tasks/user", *[f"{s} %" for s in SITES],
                              *BASELINES, "ls opt"], rows))
    return "\n".join(head) + "\n"


def plot_sweep(sweep: dict, path: Path) -> None:
    from offload_jax.plots import _pyplot, save_png  # noqa: PLC0415

    plt = _pyplot()
    rows = sweep["candidates"]
    names = [m["name"] for m in rows]
    y = np.arange(len(rows))
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 0.35 * len(rows) + 1.5), sharey=True)
    left = np.zeros(len(rows))
    for s, color in zip(SITES, ("tab:gray", "tab:blue", "tab:orange"), strict=True):
        share = np.array([100 * m["shares"][s]["share"] for m in rows])
        a.barh(y, share, left=left, color=color, label=s)
        left += share
    a.axvline(10, color="k", ls="--", lw=0.8)
    a.axvline(90, color="k", ls="--", lw=0.8)
    a.set_yticks(y, names)
    a.invert_yaxis()
    a.set_xlabel("optimal labels, % of sub-tasks (dashed: 10% / 90%)")
    a.legend(loc="upper center", bbox_to_anchor=(0.5, -0.06 - 1.0 / len(rows)), ncol=3, fontsize=8)
    for name, marker in (("greedy", "o"), ("local_search", "s")):
        b.plot([m["baselines"][name]["objective_ratio_mean"] for m in rows], y, marker, label=name)
    b.axvline(1.0, color="k", lw=0.8)
    b.set_xlabel("mean J / J* (random and the fixed sites: in the table)")
    b.legend(fontsize=8)
    b.grid(alpha=0.3)
    fig.suptitle(f"dag calibration: T = {sweep['tasks']}, layered, {sweep['states']} states per candidate")
    save_png(fig, path, dpi=DPI)


def plot_settings(settings: dict, path: Path) -> None:
    from offload_jax.plots import _pyplot, save_png  # noqa: PLC0415

    plt = _pyplot()
    rows = settings["rows"]
    labels = [f"{m['topology']} U={m['users']} T={m['tasks']} w_e={m['w_energy']}" for m in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(8, 0.6 * len(rows)), 4))
    width = 0.8 / len(BASELINES)
    for k, name in enumerate(BASELINES):
        ax.bar(x + (k - len(BASELINES) / 2 + 0.5) * width,
               [m["baselines"][name]["objective_ratio_mean"] for m in rows], width, label=name)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_yscale("log")
    ticks = [t for t in (1, 1.1, 1.2, 1.5, 2, 3, 5, 10, 20) if t <= ax.get_ylim()[1]]
    ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("mean J / J* (log scale)")
    ax.legend(fontsize=8, ncol=3)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("dag baselines with the calibrated defaults")
    save_png(fig, path, dpi=DPI)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--part", choices=("sweep", "settings", "all"), default="all")
    ap.add_argument("--states", type=int, default=2048, help="states per candidate / setting")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="", help="comma-separated candidate names of the sweep")
    ap.add_argument("--candidate", action="append", default=[],
                    help="an extra sweep candidate as JSON: name and every key of " + ", ".join(SHAPE_KEYS))
    ap.add_argument("--topology-file", default=ALIBABA, help="graphs of the settings part's `file` rows "
                    "('' skips them)")
    args = ap.parse_args(argv)
    if args.states < 1:
        raise SystemExit("--states must be >= 1")
    out = Path(args.out)
    atomic.make_dirs(out)
    json_path = out / "dag_calibration.json"
    report = json.loads(json_path.read_text()) if json_path.exists() else {}
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
               f"{jax.devices()[0].platform}, jax {jax.__version__}")
    command = "python experiments/dag_calibration.py " + " ".join(argv if argv is not None else sys.argv[1:])
    try:
        for part, run in (("sweep", run_sweep), ("settings", run_settings)):
            if args.part in (part, "all"):
                started, load = time.perf_counter(), {"before": load_avg()}
                report[part] = run(args)
                load["after"] = load_avg()
                report[part].update(machine=machine, command=command, load_avg_1min=load,
                                    wall_s=round(time.perf_counter() - started, 1))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    atomic.write_json(json_path, report)
    atomic.write_text(out / "dag_calibration.md", markdown(report))
    if "sweep" in report:
        plot_sweep(report["sweep"], out / "calibration.png")
    if "settings" in report:
        plot_settings(report["settings"], out / "settings.png")
    log(SCRIPT, f"wrote {json_path}, dag_calibration.md and the PNGs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
