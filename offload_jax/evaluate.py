"""Run policies over a labeled dataset and score them with the dataset's scenario (`metrics.scores`).

`evaluate_policies` returns per policy: `objective_ratio_mean` (mean of per-state J / optimal J),
`latency_ratio_mean` and, where the scenario has energy (dag), `energy_ratio_mean` (means of
per-state ratios of totals over users to the label's), `latency_ratio_of_means`, `latency_mean_s`
(and `energy_mean_j`), `accuracy` and `per_task_accuracy` (over the decisions that matter: padding
slots excluded), `exact_match`, `params` (None for non-learned policies) and `num_states`.
`evaluate_cli` is the `offload-jax evaluate` command: runs from their directories, baselines by name,
a markdown table and the JSON `{"runs": {NAME: {...}}}`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from offload_jax import atomic, metrics, models
from offload_jax.config import ConfigError
from offload_jax.policies import (
    HYBRIDS,
    Policy,
    check_run_matches,
    make_policy,
    parse_policy_names,
    run_policy,
)
from offload_jax.scenarios.base import Objective, Scenario

JSON_FORMAT = "offload-jax-evaluation/1"
# Batch means combined over batches weighted by the batch's states (the accuracies: by its decisions
# that matter).
_STATE_MEANS = ("objective_ratio_mean", "objective_ratio_excess_sq", "latency_ratio_mean",
                "energy_ratio_mean", "exact_match")
# Latency and energy of every state and user, summed in float64: exact for float32 values of a few
# decades, so the sums do not depend on the batching.
_TOTALS = ("latency_s", "energy_j")


@functools.partial(jax.jit, static_argnums=0)
def _scores(scenario: Scenario, params, state, pred, label, optimal: Objective) -> dict:
    mask = scenario.real_mask(state)
    out = metrics.scores(pred, label, mask, scenario.objective(params, state, pred), optimal)
    return {**out, "real": mask.sum(), "real_per_task": mask.sum(axis=0)}


def _slice(tree, start: int, stop: int):
    return jax.tree.map(lambda v: np.asarray(v)[start:stop], tree)


def _float64_sum(values) -> float:
    return float(np.sum(np.asarray(values), dtype=np.float64))


def evaluate_policies(dataset: Any, policies: Mapping[str, Policy], key: jax.Array,
                      batch_size: int = 8192, progress: bool = False,
                      paired_with: str | None = None) -> dict[str, dict[str, Any]]:
    """{name: metrics} of every policy on `dataset` (a `dataset.Dataset`: its scenario scores them).

    Batches of jittable policies are jitted; host drivers (`Policy.host`) are called per batch as they
    are. A ratio or share is the weighted mean over batches of `metrics.scores` (weights: the batch's
    states, or its decisions that matter for the accuracies); `latency_ratio_of_means` is the float64
    sum of the policy's per-state latencies (totals over users) over that of the labels (so an
    optimal policy scores exactly 1, whatever the batching). Batch b of a policy gets key
    `fold_in(key, b)` (only `random` uses it). `paired_with` (one of `policies`): each result also
    holds "paired_with" and `metrics.paired_difference` of its per-state J / J* against that policy's
    on the same states.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if paired_with is not None and paired_with not in policies:
        raise ConfigError(f"--paired-with (paired_with) must name a policy or run evaluated here, one of "
                          f"{sorted(policies)}, got {paired_with!r}")
    scenario = dataset.scenario
    params = scenario.params
    label = np.asarray(dataset.label)
    optimal = Objective(value=np.asarray(dataset.objective), latency=np.asarray(dataset.latency, np.float32),
                        energy=dataset.values.get("energy"))
    n = label.shape[0]
    if n == 0:
        raise ConfigError("the dataset holds no states")
    out = {}
    ratios: dict[str, list[np.ndarray]] = {}  # per-state J / J*, kept for a paired comparison
    for name, policy in policies.items():
        decide = policy.fn if policy.host else jax.jit(policy.fn)
        sums: dict[str, Any] = {}
        batches = range(0, n, batch_size)
        if progress:
            from tqdm.auto import tqdm  # noqa: PLC0415

            batches = tqdm(batches, desc=f"evaluate {name}", unit="batch", leave=False)
        for b, start in enumerate(batches):
            stop = min(start + batch_size, n)
            state = _slice(dataset.states, start, stop)
            pred = decide(jax.random.fold_in(key, b), state)
            s = _scores(scenario, params, state, pred, label[start:stop], _slice(optimal, start, stop))
            real, real_per_task = float(s["real"]), np.asarray(s["real_per_task"], np.float64)
            per_task = np.where(real_per_task > 0, np.asarray(s["per_task_accuracy"], np.float64), 0.0)
            weighted = {**{m: np.float64(s[m]) * (stop - start) for m in _STATE_MEANS if m in s},
                        **{m: _float64_sum(s[m]) for m in _TOTALS if m in s},
                        "accuracy": np.float64(s["accuracy"]) * real, "real": real,
                        "per_task_accuracy": per_task * real_per_task, "real_per_task": real_per_task}
            sums = {m: sums.get(m, 0.0) + v for m, v in weighted.items()}
            if paired_with is not None:
                ratios.setdefault(name, []).append(np.asarray(s["objective_ratio"]))
        out[name] = _result(sums, _float64_sum(optimal.latency), n, policy.params)
    if paired_with is not None:
        reference = np.concatenate(ratios[paired_with])
        for name in out:
            out[name] = {**out[name], "paired_with": paired_with,
                         **metrics.paired_difference(np.concatenate(ratios[name]), reference)}
    return out


def _result(sums: dict[str, Any], optimal_latency_s: float, n: int, params: int | None) -> dict:
    means = {m: float(sums[m] / n) for m in _STATE_MEANS if m in sums}
    exact = means.pop("exact_match")
    # The standard error of objective_ratio_mean over the states (sample variance; the ratios' excess over
    # 1 keeps the difference of means well conditioned: ratios are >= 1 and near it).
    excess = means["objective_ratio_mean"] - 1.0
    variance = max(means.pop("objective_ratio_excess_sq") - excess * excess, 0.0) * n / max(n - 1, 1)
    means["objective_ratio_sem"] = float(np.sqrt(variance / n))
    real = sums["real_per_task"] > 0  # a slot that is padding in every state has no accuracy (None)
    per_task = (sums["per_task_accuracy"] / np.where(real, sums["real_per_task"], 1.0)).astype(object)
    per_task[~real] = None
    result = {**means, "accuracy": float(sums["accuracy"] / sums["real"]),
              "per_task_accuracy": per_task.tolist(), "exact_match": exact,
              "latency_ratio_of_means": float(sums["latency_s"] / optimal_latency_s),
              "latency_mean_s": float(sums["latency_s"] / n)}
    if "energy_j" in sums:
        result["energy_mean_j"] = float(sums["energy_j"] / n)
    return {**result, "params": params, "num_states": n}


def markdown_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per policy: params, accuracy, exact match, the latency ratios; where the scenario has
    energy (dag), also the objective and energy ratios (the chain's objective is its latency); where
    the results are paired (`evaluate_policies(paired_with=...)`), the mean per-state difference of
    the objective ratio to that policy's and its standard error."""
    energy = any("energy_ratio_mean" in r for r in results.values())
    extra = ["objective ratio (mean)", "energy ratio (mean)"] if energy else []
    paired = next((r["paired_with"] for r in results.values() if "paired_with" in r), None)
    head = ["policy", "params", "accuracy", "exact match", *extra, "latency ratio (mean)",
            "latency ratio of means", *([f"ratio - {paired}'s (+- SEM), same states"] if paired else [])]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name, r in results.items():
        params = "-" if r.get("params") is None else f"{r['params']:,}"
        keys = ["accuracy", "exact_match", *(["objective_ratio_mean", "energy_ratio_mean"] if energy else []),
                "latency_ratio_mean", "latency_ratio_of_means"]
        cells = [f"{r[k]:.4f}" for k in keys]
        if paired:
            cells.append(f"{r['objective_ratio_diff_mean']:+.4f} +- {r['objective_ratio_diff_sem']:.4f}")
        lines.append(f"| {name} | {params} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_name(run_dir: str | os.PathLike) -> str:
    """A run's name in tables: its directory's basename."""
    return Path(os.path.abspath(run_dir)).name


def load_runs(run_dirs: Sequence[str | os.PathLike], scenario: Scenario) -> dict[str, Any]:
    """{basename: runs.LoadedRun} for run directories, refusing runs trained for another scenario or
    shapes, and two runs of one name."""
    from offload_jax.runs import load_run  # noqa: PLC0415 (orbax is heavy)

    out: dict[str, Any] = {}
    for run_dir in run_dirs:
        name = run_name(run_dir)
        if name in out:
            raise ConfigError(f"--runs: two runs share the name {name!r}; give them distinct directory names")
        run = load_run(run_dir)
        check_run_matches(run, scenario, f"run {str(run_dir)!r}")
        out[name] = run
    return out


def load_run_policies(run_dirs: Sequence[str | os.PathLike], scenario: Scenario) -> dict[str, Policy]:
    """{basename: policy} for run directories (`load_runs`)."""
    return {name: run_policy(run, name) for name, run in load_runs(run_dirs, scenario).items()}


def evaluate_cli(data: str | os.PathLike, runs: Sequence[str], policies: str,
                 json_path: str | os.PathLike | None, *, seed: int = 0, batch_size: int = 8192,
                 max_states: int | None = None, decode_steps: int | None = None,
                 paired_with: str | None = None, progress: bool = True) -> dict[str, Any]:
    """`offload-jax evaluate`: evaluate runs and the baselines named in `policies` (comma-separated
    names of the dataset's scenario, 'all', or '' for none; a hybrid, e.g. student_kd_ls, where the
    run it starts from is among `runs`) on a dataset; write JSON; return it. `decode_steps`: the runs
    whose networks decide in steps (and the hybrids starting from them) decide in that many passes;
    the others (one-pass networks, DROO) as trained; each run's count is in its result's
    "decode_steps". `paired_with`: a policy or run name among those evaluated; each result also holds
    its per-state difference to that one's (`evaluate_policies`)."""
    from offload_jax import dataset as dataset_lib  # noqa: PLC0415

    ds = dataset_lib.load(data, max_states=max_states)
    scenario = ds.scenario
    names = parse_policy_names(policies, scenario, hybrids=True) if policies else []
    loaded = load_runs(runs, scenario)
    for name in names:
        base = HYBRIDS[name].base if name in HYBRIDS else None
        if base is not None and base not in loaded:
            raise ConfigError(f"--policies {name}: starts from the run named {base!r}; give it with "
                              f"--runs DIR/{base}")
    passes = {name: 1 if run.meta.get("kind") == "droo" else models.decode_steps(run.model)
              for name, run in loaded.items()}
    steps_of: dict[str, int] = {}
    if decode_steps is not None:
        if isinstance(decode_steps, bool) or not isinstance(decode_steps, int) or decode_steps < 1:
            raise ConfigError(f"--decode-steps must be an integer >= 1, got {decode_steps!r}")
        steps_of = {name: decode_steps for name, k in passes.items() if k > 1}
        if not steps_of:
            raise ConfigError(f"--decode-steps {decode_steps}: none of the runs decides in steps (each was "
                              f"trained to decide in one pass, or is DROO): {', '.join(loaded) or 'no runs'}")
        passes.update(steps_of)
    pols = {name: make_policy(name, scenario=scenario, runs=loaded,
                              steps=steps_of.get(HYBRIDS[name].base) if name in HYBRIDS else None)
            for name in names}
    for name, run in loaded.items():
        if name in pols:
            raise ConfigError(f"run name {name!r} clashes with a --policies name; rename the run directory")
        pols[name] = run_policy(run, name, steps_of.get(name))
    if not pols:
        raise ConfigError("nothing to evaluate: give --runs RUN [RUN ...] and/or --policies NAMES")
    results = evaluate_policies(ds, pols, jax.random.key(seed), batch_size=batch_size, progress=progress,
                                paired_with=paired_with)
    if decode_steps is not None:  # what each run, and each hybrid's start, decided in
        for name in results:
            base = HYBRIDS[name].base if name in HYBRIDS else name
            if base in passes:
                results[name]["decode_steps"] = passes[base]
    report = {"format": JSON_FORMAT, "dataset": str(data), "scenario": scenario.name,
              **scenario.manifest_keys(), "num_states": int(ds.label.shape[0]), "seed": seed, "runs": results}
    if json_path is not None:
        atomic.write_json(json_path, report)
    return report
