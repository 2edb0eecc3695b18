"""More graphs the dag students never saw: published workflow shapes, degenerate shapes (no edges, pure
fan-out or fan-in, disconnected, short) and random-order DAGs, the kinds of graphs an outside judge
may bring (issue 12: the student trained on layered graphs stays below greedy and within 0.05 of local
search on graphs that are not in this repository).

    python experiments/unseen_graphs.py --quickstart QS --out experiments/results/unseen_graphs

QS is a finished `offload-jax quickstart --scenario dag` (its runs are scored, nothing is trained).
Every policy of `evaluate` on 1,000 fresh states of each set (T = 10 slots, shorter graphs padded),
through `dag_learning._score`, the same scoring as `dag_learning.py --part classics` and
`decoding.py --part unseen` (whose 13 sets are not repeated here). Writes OUT/unseen_graphs.{json,md,png};
a rerun reuses the datasets already generated (the same states).

The graphs (every edge i -> j with i < j, the SPEC's topology-file order):
- workflows of the Pegasus gallery (Juve et al., FGCS 2013; Bharathi et al., WORKS 2008) cut to 10
  sub-tasks: CyberShake, LIGO Inspiral, SIPHT; an FFT butterfly (Topcuoglu et al., IEEE TPDS 2002) of
  4 points between an entry and an exit task;
- degenerate shapes: 10 independent sub-tasks (a bag of tasks), one source feeding 9 (star out), 9
  feeding one (star in), two disjoint chains of 5, a series of diamonds, short graphs (a chain of 3, a
  fork-join of 5);
- random-order DAGs (edge i -> j with probability p for every i < j, as in many DAG-offloading
  papers' generators), 200 graphs of 10 sub-tasks per set, p = 0.15, 0.3 and 0.6, numpy seed 7.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dag_learning  # noqa: E402
from exp_common import DPI, load_avg, log, md_table  # noqa: E402

from offload_jax.scenarios.dag.config import Graph, write_topology_file  # noqa: E402

SCRIPT = "unseen_graphs"
TASKS = 10
EVAL_SEED = 107  # the datasets' seed (dag_learning's sets use 101-106)
RANDOM_P = (0.15, 0.3, 0.6)
RANDOM_GRAPHS = 200
RANDOM_SEED = 7


def _chain(first: int, n: int) -> list[tuple[int, int]]:
    return [(i, i + 1) for i in range(first, first + n - 1)]


def _fft_butterfly() -> list[tuple[int, int]]:
    """entry 0 -> inputs 1-4; stage 1: 5 + i reads inputs i and i ^ 1; stage 2 would need 4 more tasks,
    so the exit 9 reads stage 1 (the butterfly of the first FFT level, with its entry and exit)."""
    edges = [(0, 1 + i) for i in range(4)]
    edges += [(1 + j, 5 + i) for i in range(4) for j in sorted({i, i ^ 1})]
    edges += [(5 + i, 9) for i in range(4)]
    return sorted(edges)


# name -> (tasks, edges)
SHAPES = {
    # CyberShake: 2 ExtractSGT -> 3 SeismogramSynthesis -> a PeakValCalc each; ZipSeis reads the
    # syntheses, ZipPSA the peak values (two sinks)
    "cybershake_10": (10, [(0, 2), (0, 3), (1, 3), (1, 4), (2, 5), (3, 6), (4, 7), (2, 8), (3, 8), (4, 8),
                           (5, 9), (6, 9), (7, 9)]),
    # LIGO Inspiral: 2 TmpltBank -> 2 Inspiral -> Thinca -> 2 TrigBank -> 2 Inspiral -> Thinca
    "ligo_10": (10, [(0, 2), (1, 3), (2, 4), (3, 4), (4, 5), (4, 6), (5, 7), (6, 8), (7, 9), (8, 9)]),
    # SIPHT: 2 Patser -> Patser_concate; Transterm, Findterm, Blast -> SRNA -> FFN_parse, Blast_synteny
    # -> SRNA_annotate (which also reads Patser_concate): five sources
    "sipht_10": (10, [(0, 2), (1, 2), (3, 6), (4, 6), (5, 6), (6, 7), (6, 8), (2, 9), (7, 9), (8, 9)]),
    "fft_butterfly_10": (10, _fft_butterfly()),
    "independent_10": (10, []),
    "star_out_10": (10, [(0, i) for i in range(1, 10)]),
    "star_in_10": (10, [(i, 9) for i in range(9)]),
    "two_chains_5": (10, _chain(0, 5) + _chain(5, 5)),
    # 0 -> {1, 2} -> 3 -> {4, 5} -> 6 -> {7, 8} -> 9
    "diamonds_10": (10, [(0, 1), (0, 2), (1, 3), (2, 3), (3, 4), (3, 5), (4, 6), (5, 6), (6, 7), (6, 8),
                         (7, 9), (8, 9)]),
    "chain_3": (3, _chain(0, 3)),
    "fork_join_5": (5, [(0, 1), (0, 2), (0, 3), (1, 4), (2, 4), (3, 4)]),
}


def random_order_graphs(p: float, count: int = RANDOM_GRAPHS, seed: int = RANDOM_SEED) -> list[Graph]:
    """`count` graphs of TASKS sub-tasks, edge i -> j (i < j) with probability p each (numpy, `seed`)."""
    rng = np.random.default_rng([seed, round(p * 1000)])
    rows, cols = np.triu_indices(TASKS, 1)
    graphs = []
    for k in range(count):
        keep = rng.random(rows.size) < p
        edges = tuple((int(i), int(j)) for i, j in zip(rows[keep], cols[keep], strict=True))
        graphs.append(Graph(f"random_p{p}_{k}", TASKS, edges))
    return graphs


def topology_files(out: Path) -> dict[str, Path]:
    """Every set's topology file under out/graphs/ (`write_topology_file`: atomic, the same bytes every
    time)."""
    sets = {name: [Graph(name, n, tuple(edges))] for name, (n, edges) in SHAPES.items()}
    sets.update({f"random_p{p}": random_order_graphs(p) for p in RANDOM_P})
    (out / "graphs").mkdir(parents=True, exist_ok=True)
    return {name: write_topology_file(out / "graphs" / f"{name}.json", graphs)
            for name, graphs in sets.items()}


SHOWN = ("greedy", "local_search", "droo", "teacher", "student_kd", "student_ce", "student_kd_ls")


def markdown(result: dict) -> str:
    rows, fails = [], []
    for name, r in result["sets"].items():
        kd, ls, greedy = (r[p]["objective_ratio"] for p in ("student_kd", "local_search", "greedy"))
        ok = kd < greedy and kd <= ls + 0.05
        if not ok:
            fails.append(name)
        rows.append([name, *(f"{r[p]['objective_ratio']:.3f}" if p in r else "" for p in SHOWN),
                     f"{kd - ls:+.3f}", "yes" if ok else "**no**"])
    verdict = ("the student is below greedy and within 0.05 of local search on every set" if not fails else
               f"the student misses (below greedy, within 0.05 of local search) on: {', '.join(fails)}")
    return "\n".join([
        "# More graphs the students never saw", "",
        f"The dag quickstart's runs (`{result['quickstart']}`, trained on synthetic layered graphs) and the "
        "baselines on 1,000 fresh states of each set (T = 10 slots; J / J*, mean of per-state ratios; "
        "`python experiments/unseen_graphs.py`, graphs described in its docstring). "
        f"1-min load average at the end: {result['load_avg']}.", "",
        md_table(["graphs", *SHOWN, "student_kd - local_search", "target met"], rows), "",
        f"Issue 12's target on unseen graphs: {verdict}.", "",
        "![unseen graphs](unseen_graphs.png)", ""])


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["sets"])
    shown = ("greedy", "local_search", "student_kd", "teacher")
    fig, ax = plt.subplots(figsize=(11, 4))
    width = 0.8 / len(shown)
    for k, policy in enumerate(shown):
        values = [result["sets"][n][policy]["objective_ratio"] for n in names]
        ax.bar(np.arange(len(names)) + (k - (len(shown) - 1) / 2) * width, values, width, label=policy)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(np.arange(len(names)), names, rotation=35, ha="right")
    ax.set_ylabel("J / J* (mean)")
    ax.set_ylim(0.95, None)
    ax.legend(ncol=4)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quickstart", required=True, help="a finished dag quickstart's output directory")
    ap.add_argument("--out", default="experiments/results/unseen_graphs")
    ap.add_argument("--states", type=int, default=1_000, help="fresh states per set")
    ap.add_argument("--sets", default="all", help="comma-separated set names, or all")
    args = ap.parse_args()
    quickstart, out = Path(args.quickstart), Path(args.out)
    if not (quickstart / "report.json").exists():
        raise SystemExit(f"--quickstart {quickstart}: no finished dag quickstart there")
    if args.states < 1:
        raise SystemExit(f"--states must be >= 1, got {args.states}")
    from offload_jax import atomic, scenarios

    out.mkdir(parents=True, exist_ok=True)
    files = topology_files(out)
    chosen = list(files) if args.sets == "all" else [s.strip() for s in args.sets.split(",")]
    unknown = sorted(set(chosen) - set(files))
    if unknown:
        raise SystemExit(f"--sets: unknown {unknown}; allowed: {', '.join(files)} or all")
    path = out / "unseen_graphs.json"
    result = json.loads(path.read_text()) if path.exists() else {"sets": {}}
    result["quickstart"] = str(quickstart)
    for name in chosen:
        log(SCRIPT, f"{name}")
        cfg = scenarios.make("dag", {"tasks": TASKS, "topology": "file",
                                     "topology_file": str(files[name])}).cfg
        result["sets"][name] = dag_learning._score(quickstart / "runs", out / "data" / name, cfg,
                                                   args.states, EVAL_SEED)
        result["load_avg"] = load_avg()
        atomic.write_json(path, result)
    plot(result, out / "unseen_graphs.png")
    atomic.write_text(out / "unseen_graphs.md", markdown(result))
    log(SCRIPT, f"wrote {out}")


if __name__ == "__main__":
    main()
