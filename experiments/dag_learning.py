"""Learning on the dag scenario: where the distilled student wins on the quality-time plane, where it does
not, and how it holds on graphs it never saw.

    python experiments/dag_learning.py --out experiments/results/dag_learning --part all

Every setting runs the quickstart's pipeline (`offload_jax.quickstart.run`: generate, teacher, student_kd,
student_ce, DROO, evaluate every policy on a fresh dataset, batch-1 decision timing) at a reduced budget
(`BUDGET`), into OUT/<setting>/ (resumable: a rerun redoes only what is missing), then this script
collects the reports into OUT/dag_learning.{json,md} and PNGs. Parts:

- `plane`: T = 8, 10, 12, 14 (U = 1) and U = 3 x T = 6; every policy's objective ratio against its
  batch-1 decision time, `optimal` timed as the fastest exact method at batch 1 (the pruned search,
  `bnb`; exhaustive enumeration is 6x slower at T = 10, benchmarks/RESULTS.md);
- `seeds`: T = 10 with seeds 0, 1, 2 (seed 0 is the plane's T = 10): KD + objective term vs labels
  alone, and DROO, as mean and spread over seeds;
- `energy`: T = 10 with w_energy = 0.5 (latency and energy ratios);
- `users`: U = 2 x T = 5, the student deciding both users' placements at once;
- `generalization`: the dag quickstart's runs (`--quickstart`) and the plane's T = 10 runs (trained on
  layered graphs) scored on the real job graphs of `--topologies` (Alibaba trace); and a pipeline
  trained on one half of those graphs' distinct structures, scored on the other half (no structure in
  common) and on fresh states of its own half;
- `mixture`: a pipeline trained on synthetic graphs of every size, scored on the real job graphs;
- `families`: the quickstart's runs on layered graphs with other knobs and on the chain;
- `classics`: the quickstart's runs on task-graph shapes of the scheduling and workflow literature
  (`CLASSICS`: Gaussian elimination, fork-join, trees, a wavefront mesh, Montage- and Epigenomics-like
  workflows), one graph per dataset, none of them in training.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent))
from exp_common import DPI, load_avg, log, md_table  # noqa: E402

from offload_jax import quickstart  # noqa: E402

SCRIPT = "dag_learning"
ALIBABA = "/work/shared/data/alibaba_dags.json"
# Per setting: 30k labeled states (1.5k held out), teacher 2,000 steps, students 4,000, 1,000 fresh
# evaluation states, 300 timed batch-1 calls per policy (a third of the quickstart's budget), trained on
# the setting's own graphs (the `mixture` part trains on synthetic graphs of every size).
BUDGET = dataclasses.replace(quickstart.DAG, train_states=30_000, holdout=1_500, eval_states=1_000,
                             teacher_steps=2_000, student_steps=4_000, calls=300, timing_batch=256,
                             batch_reps=3, train_graphs=0)
PLANE = {"T8": (1, 8), "T10": (1, 10), "T12": (1, 12), "T14": (1, 14), "U3xT6": (3, 6)}
PARTS = ("plane", "seeds", "energy", "users", "generalization", "mixture", "families", "classics")
# Other graph families at T = 10 for the `families` part: the chain, and daggen-style layered graphs with
# knobs other than the calibrated defaults (fat 0.5, density 0.5, jump 1).
FAMILIES = {"chain": {"topology": "chain"}, "thin_sparse": {"fat": 0.2, "density": 0.2, "jump": 1},
            "wide_dense": {"fat": 0.8, "density": 0.8, "jump": 2},
            "deep_dense_skips": {"fat": 0.4, "density": 0.8, "jump": 3}}


def _gaussian_elimination(m: int) -> list[tuple[int, int]]:
    """Gaussian elimination of an m x m matrix (Topcuoglu, Hariri, Wu, IEEE TPDS 2002, the HEFT paper):
    step k has a pivot task, then one update task per column j > k; the pivot feeds the step's
    updates, update (k, k+1) the next pivot, update (k, j) the next step's update of column j."""
    ids, n = {}, 0
    for k in range(m - 1):
        for j in range(k, m):  # j == k: the pivot
            ids[k, j], n = n, n + 1
    edges = []
    for k in range(m - 1):
        edges += [(ids[k, k], ids[k, j]) for j in range(k + 1, m)]
        if k + 1 < m - 1:
            edges.append((ids[k, k + 1], ids[k + 1, k + 1]))
            edges += [(ids[k, j], ids[k + 1, j]) for j in range(k + 2, m)]
    return sorted(edges)


def _mirror(tasks: int, edges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The same graph with every edge reversed, renumbered i -> tasks-1-i (still i < j)."""
    return sorted((tasks - 1 - j, tasks - 1 - i) for i, j in edges)


_OUT_TREE = [(0, 1), (0, 2), (0, 3), (1, 4), (1, 5), (2, 6), (2, 7), (3, 8), (3, 9)]
# name -> (tasks, edges); every graph numbered in a topological order (i < j), as the SPEC's file format.
CLASSICS = {
    "gaussian_elimination_m4": (9, _gaussian_elimination(4)),
    "fork_join_8": (10, [(0, i) for i in range(1, 9)] + [(i, 9) for i in range(1, 9)]),
    "fork_join_2x3": (9, [(0, 1), (0, 2), (0, 3), (1, 4), (2, 4), (3, 4), (4, 5), (4, 6), (4, 7), (5, 8),
                          (6, 8), (7, 8)]),
    "out_tree_10": (10, _OUT_TREE),
    "in_tree_10": (10, _mirror(10, _OUT_TREE)),
    # a wavefront (Laplace / LU sweep): cell (i, j) = 3 i + j feeds (i + 1, j) and (i, j + 1)
    "mesh_3x3": (9, [(3 * i + j, 3 * (i + 1) + j) for i in range(2) for j in range(3)]
                 + [(3 * i + j, 3 * i + j + 1) for i in range(3) for j in range(2)]),
    # Montage (Juve et al., FGCS 2013) on two images: mProject x2 -> mDiffFit -> mConcatFit -> mBgModel
    # -> mBackground x2 (each also reads its projection) -> mImgtbl -> mAdd
    "montage_9": (9, [(0, 2), (1, 2), (2, 3), (3, 4), (0, 5), (4, 5), (1, 6), (4, 6), (5, 7), (6, 7),
                      (7, 8)]),
    # Epigenomics (ibid.) with two lanes: split -> 3-stage pipeline per lane -> merge -> index -> pileup
    "epigenomics_10": (10, [(0, 1), (1, 2), (2, 3), (0, 4), (4, 5), (5, 6), (3, 7), (6, 7), (7, 8), (8, 9)]),
}
MIXTURE_GRAPHS = 20_000  # synthetic training graphs of the `mixture` part (graphs.mixture, seed 0)
LEARNED = ("teacher", "student_kd", "student_ce", "droo")


def _pipeline(out: Path, name: str, *, users: int = 1, tasks: int = 10, seed: int = 0,
              overrides: dict | None = None) -> dict:
    """The quickstart pipeline of one setting into out/name; its report."""
    qcfg = dataclasses.replace(BUDGET, users=users, tasks=tasks, seed=seed,
                               system_overrides=tuple(sorted((overrides or {}).items())))
    saved = out / name / "report.json"
    if saved.exists():  # a finished setting of the same budget is not redone (its timings included)
        report = json.loads(saved.read_text())
        now = json.loads(json.dumps(quickstart.config_dict(qcfg)))
        default = json.loads(json.dumps(quickstart.config_dict(quickstart.QuickstartConfig())))
        saved_cfg = report.get("config", {})  # a key added since the report was written: its default
        if all(saved_cfg.get(k, default[k]) == v for k, v in now.items()):
            log(SCRIPT, f"{name}: finished before, its report reused")
            return report
    log(SCRIPT, f"{name}: U={users} T={tasks} seed={seed} {overrides or ''}")
    t0 = time.perf_counter()
    report = quickstart.run(out / name, qcfg, progress=False)
    report["experiment_wall_s"] = round(time.perf_counter() - t0, 1)
    return report


def _row(report: dict) -> dict:
    """The per-policy numbers a table and a plot need."""
    return {name: {"objective_ratio": p["objective_ratio_mean"], "latency_ratio": p["latency_ratio_mean"],
                   "energy_ratio": p["energy_ratio_mean"], "decision_us_p50": p["decision_us_p50"],
                   "params": p["params"]}
            for name, p in report["policies"].items()}


def part_plane(out: Path, settings: list[str] | None = None, done: dict | None = None) -> dict:
    """The plane's settings (all, or `settings`), merged into those already `done`."""
    chosen = settings or list(PLANE)
    new = {name: _row(_pipeline(out, name, users=PLANE[name][0], tasks=PLANE[name][1])) for name in chosen}
    merged = {**(done or {}), **new}
    return {name: merged[name] for name in PLANE if name in merged}  # PLANE's order, whatever ran first


def part_seeds(out: Path) -> dict:
    per_seed = {seed: _row(_pipeline(out, "T10" if seed == 0 else f"T10_seed{seed}", seed=seed))
                for seed in (0, 1, 2)}
    summary = {}
    for name in per_seed[0]:
        values = [per_seed[s][name]["objective_ratio"] for s in per_seed]
        summary[name] = {"mean": statistics.fmean(values), "min": min(values), "max": max(values),
                         "per_seed": values}
    return {"per_seed": per_seed, "objective_ratio": summary}


def part_energy(out: Path) -> dict:
    return _row(_pipeline(out, "T10_energy", overrides={"w_energy": 0.5}))


def part_users(out: Path) -> dict:
    return _row(_pipeline(out, "U2xT5", users=2, tasks=5))


def _halves(out: Path, topologies: str) -> tuple[Path, Path]:
    """Two topology files that share no graph structure: the file's distinct structures (sub-task count
    and edge list) in order of first appearance, even-numbered ones in the first, odd in the second
    (every graph of a structure goes with it)."""
    from offload_jax import atomic

    doc = json.loads(Path(topologies).read_text())
    keys = [(g["tasks"], tuple(sorted(map(tuple, g["edges"])))) for g in doc["graphs"]]
    order: dict[tuple, int] = {}
    for key in keys:
        order.setdefault(key, len(order))
    paths = []
    for parity, name in ((0, "even"), (1, "odd")):
        graphs = [g for g, key in zip(doc["graphs"], keys, strict=True) if order[key] % 2 == parity]
        path = out / f"topologies_{name}.json"
        atomic.write_json(path, {**doc, "graphs": graphs})
        paths.append(path)
    return paths[0], paths[1]


def _score(runs_dir: Path, data_dir: Path, cfg, n: int, seed: int) -> dict:
    """Every policy (the runs of runs_dir and the scenario's baselines) on a fresh dataset of `cfg`."""
    from offload_jax import dataset, evaluate, policies, runs

    dataset.generate(data_dir, cfg, n, seed, progress=False)
    ds = dataset.load(data_dir)
    loaded = {name: runs.load_run(runs_dir / name) for name in LEARNED}
    pols = {name: policies.make_policy(name, scenario=ds.scenario, runs=loaded)
            for name in policies.policy_names(ds.scenario)}
    quality = evaluate.evaluate_policies(ds, pols, jax.random.key(seed), progress=False)
    return {name: {"objective_ratio": q["objective_ratio_mean"], "accuracy": q["accuracy"]}
            for name, q in quality.items()}


def part_generalization(out: Path, topologies: str, quickstart_dir: str | None) -> dict:
    from offload_jax import scenarios

    n = BUDGET.eval_states
    file_cfg = scenarios.make("dag", {"tasks": 10, "topology": "file", "topology_file": topologies}).cfg
    result = {}
    if quickstart_dir and (Path(quickstart_dir) / "report.json").exists():  # the quickstart's runs
        result["quickstart_to_file"] = _score(Path(quickstart_dir) / "runs", out / "quickstart_on_file",
                                              file_cfg, n, 101)
    _pipeline(out, "T10")  # the plane's T = 10 setting (layered graphs)
    layered_on_file = _score(out / "T10" / "runs", out / "T10" / "data" / "alibaba", file_cfg, n, 101)
    even, odd = _halves(out, topologies)
    _pipeline(out, "T10_even", overrides={"topology": "file", "topology_file": str(even)})
    odd_cfg = scenarios.make("dag", {"tasks": 10, "topology": "file", "topology_file": str(odd)}).cfg
    even_cfg = scenarios.make("dag", {"tasks": 10, "topology": "file", "topology_file": str(even)}).cfg
    runs_even = out / "T10_even" / "runs"
    return {**result, "layered_to_file": layered_on_file,
            "even_to_odd": _score(runs_even, out / "T10_even" / "data" / "odd", odd_cfg, n, 102),
            "even_to_even": _score(runs_even, out / "T10_even" / "data" / "even_fresh", even_cfg, n, 103)}


def part_mixture(out: Path, topologies: str) -> dict:
    """A pipeline trained on `graphs.mixture` (layered graphs of 2..10 sub-tasks, knobs drawn per graph,
    random topological order; given as a topology file), scored on the real job graphs (all of them: it saw
    none), on default layered graphs, and on the odd half of the real structures (the even-half runs'
    unseen set)."""
    from offload_jax import scenarios
    from offload_jax.scenarios.dag import graphs

    n = BUDGET.eval_states
    mix = out / "mixture_topologies.json"
    if not mix.exists():
        graphs.write_mixture(mix, 0, MIXTURE_GRAPHS, 10)
    _pipeline(out, "T10_mix", overrides={"topology": "file", "topology_file": str(mix)})
    runs_mix = out / "T10_mix" / "runs"
    file_cfg = scenarios.make("dag", {"tasks": 10, "topology": "file", "topology_file": topologies}).cfg
    _, odd = _halves(out, topologies)
    odd_cfg = scenarios.make("dag", {"tasks": 10, "topology": "file", "topology_file": str(odd)}).cfg
    layered_cfg = scenarios.make("dag", {"tasks": 10}).cfg
    return {"mix_to_file": _score(runs_mix, out / "T10_mix" / "data" / "alibaba", file_cfg, n, 101),
            "mix_to_odd": _score(runs_mix, out / "T10_mix" / "data" / "odd", odd_cfg, n, 102),
            "mix_to_layered": _score(runs_mix, out / "T10_mix" / "data" / "layered", layered_cfg, n, 104)}


def part_families(out: Path, quickstart_dir: str) -> dict:
    """The dag quickstart's runs on other graph families at T = 10 (FAMILIES), every policy scored on
    1,000 fresh states of each."""
    from offload_jax import scenarios

    runs_dir = Path(quickstart_dir) / "runs"
    if not (Path(quickstart_dir) / "report.json").exists():
        raise SystemExit(f"--quickstart {quickstart_dir}: no finished dag quickstart there")
    result = {}
    for name, keys in FAMILIES.items():
        log(SCRIPT, f"families: {name} {keys}")
        cfg = scenarios.make("dag", {"tasks": 10, **keys}).cfg
        result[name] = _score(runs_dir, out / "families" / name, cfg, BUDGET.eval_states, 105)
    return result


def classic_topology_file(out: Path, name: str) -> Path:
    """out/classics/NAME.json: the graph of CLASSICS[name] alone in a topology file (written atomically,
    the same bytes every time)."""
    from offload_jax import atomic

    tasks, edges = CLASSICS[name]
    path = out / "classics" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = {"name": name, "tasks": tasks, "edges": [list(e) for e in edges]}
    atomic.write_json(path, {"format": "offload-jax-topologies/1", "graphs": [graph]})
    return path


def part_classics(out: Path, quickstart_dir: str) -> dict:
    """The dag quickstart's runs on the graphs of `CLASSICS` (T = 10 slots, shorter graphs padded), each
    graph alone in a topology file, every policy scored on 1,000 fresh states of it."""
    from offload_jax import scenarios

    runs_dir = Path(quickstart_dir) / "runs"
    if not (Path(quickstart_dir) / "report.json").exists():
        raise SystemExit(f"--quickstart {quickstart_dir}: no finished dag quickstart there")
    result = {}
    for name, (tasks, edges) in CLASSICS.items():
        log(SCRIPT, f"classics: {name} ({tasks} sub-tasks, {len(edges)} edges)")
        path = classic_topology_file(out, name)
        cfg = scenarios.make("dag", {"tasks": 10, "topology": "file", "topology_file": str(path)}).cfg
        result[name] = _score(runs_dir, out / "classics" / name, cfg, BUDGET.eval_states, 106)
    return result


# ----------------------------------------------------------------------------------------- output

PLOTTED = ("greedy", "local_search", "optimal", "teacher", "student_kd", "droo", "student_kd_ls")
ORDER = ("local", "edge", "cloud", "random", "greedy", "local_search", "optimal", "teacher", "student_kd",
         "student_ce", "droo", "student_kd_ls", "student_kd_ls1")


def _ratio_table(rows: dict[str, dict]) -> str:
    """Settings as columns: objective ratio (decision p50 in us)."""
    names = [n for n in ORDER if any(n in r for r in rows.values())]
    body = []
    for name in names:
        cells = []
        for r in rows.values():
            p = r.get(name)
            cells.append("" if p is None else (f"{p['objective_ratio']:.3f}" + (
                f" ({p['decision_us_p50']:.0f})" if "decision_us_p50" in p else "")))
        body.append([name, *cells])
    return md_table(["policy", *rows], body)


def markdown(report: dict) -> str:
    lines = ["# dag scenario: learning, quality vs time to decide, unseen graphs", "",
             f"Machine: {report['machine']}; budget per setting: {report['budget']}.",
             f"Command: `{report['command']}`", "",
             "Objective ratio = J / J* (mean of per-state ratios on fresh evaluation states); in parentheses "
             "the batch-1 decision time p50 in microseconds (AOT-compiled policy on one packed state; host "
             "drivers, "
             "`optimal` = the pruned exact search, as Python calls).", ""]
    if "plane" in report:
        lines += ["## Quality vs time to decide (T = 8..14, U = 3 x T = 6)", "",
                  _ratio_table(report["plane"]), "", "![plane](plane.png)", ""]
    if "seeds" in report:
        s = report["seeds"]["objective_ratio"]
        lines += ["## Seeds (T = 10): KD + objective term vs labels only, DROO", "",
                  md_table(["policy", "mean", "min", "max", "per seed"],
                           [[n, f"{v['mean']:.3f}", f"{v['min']:.3f}", f"{v['max']:.3f}",
                             ", ".join(f"{x:.3f}" for x in v["per_seed"])] for n, v in s.items()]), ""]
    if "energy" in report:
        e = report["energy"]
        lines += ["## Energy in the objective (T = 10, w_energy = 0.5)", "",
                  md_table(["policy", "objective ratio", "latency ratio", "energy ratio", "p50 (us)"],
                           [[n, f"{p['objective_ratio']:.3f}", f"{p['latency_ratio']:.3f}",
                             f"{p['energy_ratio']:.3f}", f"{p['decision_us_p50']:.0f}"]
                            for n, p in e.items()]), ""]
    if "users" in report:
        lines += ["## Two users sharing the edge (U = 2 x T = 5)", "",
                  _ratio_table({"U2xT5": report["users"]}), ""]
    if "generalization" in report:
        g = report["generalization"]
        lines += ["## Graphs never seen in training", "",
                  "`quickstart_to_file`: the dag quickstart's runs (100k states on 20k synthetic graphs of "
                  "2-10 sub-tasks, `train_graphs`), on the Alibaba job graphs; "
                  "`layered_to_file`: the plane's T = 10 runs, trained on layered graphs, on the same "
                  "graphs (padded to 10 slots). `even_to_odd`: runs trained on half of that file's distinct "
                  "graph structures, on the other half; `even_to_even`: the same runs on fresh states of "
                  "their own graphs.",
                  "", _ratio_table(g), "", "![generalization](generalization.png)", ""]
    if "mixture" in report:
        lines += ["## Training on a mixture of synthetic graphs", "",
                  f"Runs trained on {MIXTURE_GRAPHS:,} synthetic graphs (`graphs.mixture`: layered graphs "
                  "with 2-10 sub-tasks (10 in half), fat and density uniform in [0.1, 0.9], jump 1-3, "
                  "sub-tasks renumbered in a random topological order), given as a topology file. "
                  "`mix_to_file`: on all the real job graphs (same states as `layered_to_file`); "
                  "`mix_to_odd`: on the odd half of the real structures (as `even_to_odd`); "
                  "`mix_to_layered`: on default layered graphs (T = 10).", "",
                  _ratio_table(report["mixture"]), ""]
    if "families" in report:
        lines += ["## Other graph families (T = 10)", "",
                  "The dag quickstart's runs (trained on the synthetic mixture) on graph families with other "
                  "shapes: " + "; ".join(f"`{n}` = {k}" for n, k in FAMILIES.items()) + ".", "",
                  _ratio_table(report["families"]), ""]
    if "classics" in report:
        lines += ["## Task-graph shapes of the literature (T = 10 slots)", "",
                  "The dag quickstart's runs (trained on the synthetic mixture, none of these graphs) on one "
                  "published graph shape at a time (`CLASSICS`: "
                  + ", ".join(f"`{n}` ({t} sub-tasks)" for n, (t, _) in CLASSICS.items()) + ").", "",
                  _ratio_table(report["classics"]), ""]
    return "\n".join(lines)


def plots(report: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from offload_jax.plots import save_png

    if "plane" in report:
        settings = list(report["plane"])
        fig, axes = plt.subplots(1, len(settings), figsize=(3.6 * len(settings), 4.0), sharey=True,
                                 squeeze=False)
        axes = axes[0]
        for ax, setting in zip(axes, settings, strict=True):
            for name in PLOTTED:
                p = report["plane"][setting].get(name)
                if p is None:
                    continue
                ax.scatter([p["decision_us_p50"]], [p["objective_ratio"]], s=25)
                ax.annotate(name, (p["decision_us_p50"], p["objective_ratio"]), fontsize=7,
                            textcoords="offset points", xytext=(3, 3))
            ax.axhline(1.0, color="gray", ls="--", lw=1)
            ax.set_xscale("log")
            ax.set_title(setting)
            ax.set_xlabel("batch-1 decision p50 (us, log)")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("objective ratio J / J*")
        fig.suptitle("Quality vs time to decide (lower left is better)")
        save_png(fig, out / "plane.png", dpi=DPI)
    if "generalization" in report:
        g = report["generalization"]
        names = ("greedy", "local_search", "teacher", "student_kd", "student_ce", "droo")
        fig, ax = plt.subplots(figsize=(8, 4))
        width = 0.8 / len(g)
        for k, (case, rows) in enumerate(g.items()):
            ax.bar([i + k * width for i in range(len(names))], [rows[n]["objective_ratio"] for n in names],
                   width, label=case)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names, fontsize=8)
        ax.axhline(1.0, color="gray", ls="--", lw=1)
        ax.set_ylabel("objective ratio J / J*")
        ax.set_title("Graphs never seen in training (T = 10)")
        ax.legend(fontsize=8)
        save_png(fig, out / "generalization.png", dpi=DPI)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="experiments/results/dag_learning")
    ap.add_argument("--part", default="all", help=f"comma-separated of {', '.join(PARTS)}, or all")
    ap.add_argument("--settings", default=None,
                    help=f"plane only: comma-separated of {', '.join(PLANE)} (default all); merged into the "
                         "settings OUT already holds. One process per setting keeps a process's compiled "
                         "programs (and memory maps) few")
    ap.add_argument("--topologies", default=ALIBABA, help="topology file of the real job graphs")
    ap.add_argument("--quickstart", default="experiments/results/quickstart_dag",
                    help="a dag quickstart's output: its runs are also scored on the real job graphs")
    args = ap.parse_args(argv)
    parts = PARTS if args.part == "all" else tuple(p.strip() for p in args.part.split(","))
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        ap.error(f"--part: unknown {unknown}; allowed: {', '.join(PARTS)} or all")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from offload_jax import atomic, timing

    try:  # before JAX's backend starts (jax.devices below)
        timing.configure_for_latency()
    except RuntimeError as exc:
        log(SCRIPT, f"decision latency measured with this process's JAX settings: {exc}")
    summary = out / "dag_learning.json"
    report = json.loads(summary.read_text()) if summary.exists() else {}
    report.update({"machine": f"{jax.devices()[0].platform}, jax {jax.__version__}, load {load_avg()}",
                   "budget": {k: getattr(BUDGET, k) for k in ("train_states", "holdout", "eval_states",
                                                               "teacher_steps", "student_steps", "calls")},
                   "command": "python experiments/dag_learning.py " + " ".join(argv or sys.argv[1:])})
    settings = None if args.settings is None else [x.strip() for x in args.settings.split(",") if x.strip()]
    if settings and sorted(set(settings) - set(PLANE)):
        ap.error(f"--settings: unknown {sorted(set(settings) - set(PLANE))}; allowed: {', '.join(PLANE)}")
    runners = {"plane": lambda o: part_plane(o, settings, report.get("plane")), "seeds": part_seeds,
               "energy": part_energy, "users": part_users,
               "generalization": lambda o: part_generalization(o, args.topologies, args.quickstart),
               "mixture": lambda o: part_mixture(o, args.topologies),
               "families": lambda o: part_families(o, args.quickstart),
               "classics": lambda o: part_classics(o, args.quickstart)}
    for part in parts:
        t0 = time.perf_counter()
        report[part] = runners[part](out)
        report.setdefault("seconds", {})[part] = round(time.perf_counter() - t0, 1)
        atomic.write_json(summary, report)  # after every part: an interrupted run keeps what it has
        atomic.write_text(out / "dag_learning.md", markdown(report))
        plots(report, out)
    log(SCRIPT, f"wrote {summary} and dag_learning.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
