"""Where the quickstart's student goes wrong on the classic shapes: per-slot site shares and accuracy.

For each shape scored by `dag_learning.py --part classics` (its datasets under DAG_LEARNING/classics/),
the share of states in which each sub-task slot is placed on the device / edge / cloud by the exact
label and by the quickstart's distilled student, and the student's per-slot accuracy. It trains
nothing; it needs those datasets and the dag quickstart's runs.

    python experiments/tree_sites.py     # a minute on the 2-core CPU
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dag_learning  # noqa: E402
from exp_common import log, md_table  # noqa: E402

SCRIPT = "tree_sites"
SITES = ("local", "edge", "cloud")


def _shares(x) -> list[list[float]]:
    """x (n, slots) sites -> per slot, the share of states on each site."""
    return [[float((x[:, t] == s).mean()) for s in range(len(SITES))] for t in range(x.shape[1])]


def measure(dag_learning_dir: Path, quickstart: Path) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from offload_jax import dataset, policies, runs

    loaded = {"student_kd": runs.load_run(quickstart / "runs" / "student_kd")}
    result = {}
    for shape, (tasks, _) in dag_learning.CLASSICS.items():
        ds = dataset.load(dag_learning_dir / "classics" / shape)
        scenario = ds.scenario
        policy = policies.make_policy("student_kd", scenario=scenario, runs=loaded)
        x = np.asarray(jax.jit(policy.fn)(jax.random.key(0), ds.states))[:, 0, :tasks]
        label = np.asarray(ds.label)[:, 0, :tasks]
        ratio = np.asarray(scenario.objective(scenario.params, ds.states, jnp.asarray(x[:, None])).value)
        result[shape] = {"states": int(len(x)), "student_ratio": float((ratio / ds.objective).mean()),
                         "label_share": _shares(label), "student_share": _shares(x),
                         "accuracy": [float(a) for a in (x == label).mean(axis=0)]}
    return result


def markdown(result: dict) -> str:
    lines = ["# The quickstart's student on the classic shapes, slot by slot", "",
             "Per sub-task slot: the share of states placing it on the device (local), the edge and the "
             "cloud, by the exact label and by the student (label / student, in %), and the student's "
             "accuracy there.", ""]
    for shape, r in result.items():
        rows = [[t, *(f"{100 * a:.0f} / {100 * b:.0f}"
                      for a, b in zip(r["label_share"][t], r["student_share"][t], strict=True)),
                 f"{r['accuracy'][t]:.2f}"] for t in range(len(r["accuracy"]))]
        lines += [f"## {shape} (student J / J* {r['student_ratio']:.3f}, {r['states']:,} states)", "",
                  md_table(["slot", *SITES, "accuracy"], rows), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="experiments/results/tree_sites")
    ap.add_argument("--dag-learning", default="experiments/results/dag_learning")
    ap.add_argument("--quickstart", default="experiments/results/quickstart_dag")
    args = ap.parse_args(argv)
    from offload_jax import atomic

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = measure(Path(args.dag_learning), Path(args.quickstart))
    atomic.write_json(out / "tree_sites.json", result, sort_keys=True)
    atomic.write_text(out / "tree_sites.md", markdown(result))
    log(SCRIPT, f"wrote {out / 'tree_sites.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
