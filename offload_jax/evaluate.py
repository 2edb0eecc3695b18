"""Run policies over a labeled dataset and score them with the cost model (`metrics.summary`).

`evaluate_policies` returns per policy: `accuracy` (mean per-sub-task accuracy), `per_task_accuracy`,
`exact_match`, `latency_ratio_mean` (mean of per-state latency / optimal latency),
`latency_ratio_of_means`, `latency_mean_s`, `params` (None for non-learned policies) and
`num_states`. `evaluate_cli` is the `offload-jax evaluate` command: runs from their directories,
baselines by name, a markdown table and the issue-3 JSON `{"runs": {NAME: {...}}}`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from offload_jax import atomic, metrics
from offload_jax.config import ConfigError, SystemConfig
from offload_jax.policies import Policy, check_run_matches, make_policy, run_policy
from offload_jax.scenarios.chain.cost import path_latency, stage_costs
from offload_jax.scenarios.chain.system import SystemState

JSON_FORMAT = "offload-jax-evaluation/1"
_MEAN_METRICS = ("accuracy", "per_task_accuracy", "exact_match", "latency_ratio_mean")


@jax.jit
def _summary(state: SystemState, pred: jax.Array, label: jax.Array, optimal: jax.Array) -> dict:
    costs = stage_costs(state)
    return {**metrics.summary(costs, pred, label, optimal), "latency_s": path_latency(costs, pred)}


def _batch(state: SystemState, start: int, stop: int) -> SystemState:
    return SystemState(*(np.asarray(v)[start:stop] for v in state))


def evaluate_policies(dataset: Any, policies: Mapping[str, Policy], key: jax.Array,
                      batch_size: int = 8192, progress: bool = False) -> dict[str, dict[str, Any]]:
    """{name: metrics} of every policy on `dataset` (anything with `.states`, `.label`, `.latency`).

    Batches are jitted; each metric is the state-weighted mean over batches of `metrics.summary`;
    `latency_ratio_of_means` is the float64 sum of the policy's per-state latencies over that of the
    dataset's optimal latencies (so an optimal policy scores exactly 1, whatever the batching).
    Batch b of a policy gets key `fold_in(key, b)` (only `random` uses it).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    label, optimal = np.asarray(dataset.label), np.asarray(dataset.latency, np.float32)
    n = label.shape[0]
    if n == 0:
        raise ConfigError("the dataset holds no states")
    out = {}
    for name, policy in policies.items():
        decide = jax.jit(policy.fn)
        sums: dict[str, np.ndarray] = {}
        latency_sum_s = 0.0
        batches = range(0, n, batch_size)
        if progress:
            from tqdm.auto import tqdm  # noqa: PLC0415

            batches = tqdm(batches, desc=f"evaluate {name}", unit="batch", leave=False)
        for b, start in enumerate(batches):
            stop = min(start + batch_size, n)
            state = _batch(dataset.states, start, stop)
            pred = decide(jax.random.fold_in(key, b), state)
            summary = _summary(state, pred, label[start:stop], optimal[start:stop])
            for m in _MEAN_METRICS:
                sums[m] = sums.get(m, 0.0) + np.asarray(summary[m], np.float64) * (stop - start)
            latency_sum_s += float(np.sum(np.asarray(summary["latency_s"]), dtype=np.float64))
        result: dict[str, Any] = {m: sums[m] / n for m in _MEAN_METRICS}
        result["latency_ratio_of_means"] = latency_sum_s / float(np.sum(optimal, dtype=np.float64))
        result["latency_mean_s"] = latency_sum_s / n
        result = {k: (v.tolist() if v.ndim else float(v)) if isinstance(v, np.ndarray) else v
                  for k, v in result.items()}
        result["params"] = policy.params
        result["num_states"] = n
        out[name] = result
    return out


def markdown_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per policy: params, accuracy, exact match, the two latency ratios."""
    lines = ["| policy | params | accuracy | exact match | latency ratio (mean) | latency ratio of means |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        params = "-" if r.get("params") is None else f"{r['params']:,}"
        lines.append(f"| {name} | {params} | {r['accuracy']:.4f} | {r['exact_match']:.4f} "
                     f"| {r['latency_ratio_mean']:.4f} | {r['latency_ratio_of_means']:.4f} |")
    return "\n".join(lines)


def run_name(run_dir: str | os.PathLike) -> str:
    """A run's name in tables: its directory's basename."""
    return Path(os.path.abspath(run_dir)).name


def load_run_policies(run_dirs: Sequence[str | os.PathLike], cfg: SystemConfig) -> dict[str, Policy]:
    """{basename: policy} for run directories, refusing runs trained for another T / sub-carriers."""
    from offload_jax.runs import load_run  # noqa: PLC0415 (orbax is heavy)

    out: dict[str, Policy] = {}
    for run_dir in run_dirs:
        name = run_name(run_dir)
        if name in out:
            raise ConfigError(f"--runs: two runs share the name {name!r}; give them distinct directory names")
        run = load_run(run_dir)
        check_run_matches(run, cfg, f"run {str(run_dir)!r}")
        out[name] = run_policy(run, name)
    return out


def evaluate_cli(data: str | os.PathLike, runs: Sequence[str], policy_names: Sequence[str],
                 json_path: str | os.PathLike | None, *, seed: int = 0, batch_size: int = 8192,
                 max_states: int | None = None, progress: bool = True) -> dict[str, Any]:
    """`offload-jax evaluate`: evaluate runs and named baselines on a dataset; write JSON; return it."""
    from offload_jax import dataset as dataset_lib  # noqa: PLC0415

    ds = dataset_lib.load(data, max_states=max_states)
    cfg = SystemConfig.from_dict(ds.manifest["system"])
    pols = {name: make_policy(name, cfg=cfg) for name in policy_names}
    for name, pol in load_run_policies(runs, cfg).items():
        if name in pols:
            raise ConfigError(f"run name {name!r} clashes with a --policies name; rename the run directory")
        pols[name] = pol
    if not pols:
        raise ConfigError("nothing to evaluate: give --runs RUN [RUN ...] and/or --policies NAMES")
    results = evaluate_policies(ds, pols, jax.random.key(seed), batch_size=batch_size, progress=progress)
    report = {"format": JSON_FORMAT, "dataset": str(data), "tasks": cfg.tasks,
              "num_states": int(ds.label.shape[0]), "seed": seed, "runs": results}
    if json_path is not None:
        atomic.write_json(json_path, report)
    return report
