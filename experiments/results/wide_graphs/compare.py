"""Score a dag quickstart's student_kd and teacher (and greedy, local search once) on every evaluation set.

    python compare.py OUT.json NAME=QUICKSTART_DIR [NAME=QUICKSTART_DIR ...]

Results merge into OUT.json ({set: {policy or NAME:network: J / J*}}); a rerun skips what is there.
The sets' directories are this session's (`evaluation_sets`): edit them to where yours are.
"""

import glob
import json
import os
import sys

import jax

from offload_jax import atomic, dataset, evaluate, policies, runs

UNSEEN = "/work/main/experiments/results/unseen_graphs/data/*"  # experiments/unseen_graphs.py
DAG_LEARNING = "/tmp/dl"  # a copy of experiments/dag_learning.py's output (its data)


def evaluation_sets() -> dict[str, str]:
    sets = {"layered_eval": "/tmp/qs/final/data/eval", "alibaba": f"{DAG_LEARNING}/quickstart_on_file"}
    for d in (sorted(glob.glob(UNSEEN)) + sorted(glob.glob(f"{DAG_LEARNING}/classics/*"))
              + sorted(glob.glob(f"{DAG_LEARNING}/families/*"))):
        if os.path.isdir(d):
            sets[os.path.basename(d)] = d
    return sets


def arguments() -> tuple[str, dict[str, str], dict]:
    """(OUT, {NAME: DIR} of the NAME=DIR arguments, OUT's results so far)."""
    out = sys.argv[1]
    named = dict(a.split("=", 1) for a in sys.argv[2:])
    return out, named, (json.load(open(out)) if os.path.exists(out) else {})


def load(run_dirs: dict[str, str]) -> dict[str, runs.LoadedRun]:
    """{NAME: loaded run}, each read once for every set."""
    return {name: runs.load_run(d) for name, d in run_dirs.items()}


def score(data_dir: str, loaded: dict[str, runs.LoadedRun],
          baselines: tuple[str, ...] = ()) -> dict[str, float]:
    """J / J* of the loaded runs (each refused if made for other shapes) and the named baselines on one
    dataset, as `offload-jax evaluate` scores them (key 0); nothing to score: {}."""
    if not loaded and not baselines:
        return {}
    ds = dataset.load(data_dir)
    pols = {name: policies.make_policy(name, scenario=ds.scenario) for name in baselines}
    for name, run in loaded.items():
        policies.check_run_matches(run, ds.scenario, f"run {name!r}")
        pols[name] = policies.run_policy(run, name)
    r = evaluate.evaluate_policies(ds, pols, jax.random.key(0))
    return {name: v["objective_ratio_mean"] for name, v in r.items()}


def main() -> None:
    out, quickstarts, res = arguments()
    loaded = load({f"{q}:{n}": f"{qdir}/runs/{n}" for q, qdir in quickstarts.items()
                   for n in ("student_kd", "teacher")})
    for name, d in evaluation_sets().items():
        row = res.setdefault(name, {})
        todo = {k: run for k, run in loaded.items() if k not in row}
        row.update(score(d, todo, () if "local_search" in row else ("greedy", "local_search")))
        atomic.write_json(out, res, indent=1)
        print(name, {k: round(v, 4) for k, v in row.items()}, flush=True)


if __name__ == "__main__":
    main()
