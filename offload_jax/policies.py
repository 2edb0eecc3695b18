"""Every decision maker behind one signature.

A policy maps `(key, state)` -> placements: `state` is a `SystemState` batch (leading axis n), the
result is (n, T) int8 in {0, 1, 2}. Every policy is a pure, jittable function of its arguments;
learned policies close over their parameters (split from the NNX module) and feature statistics,
so `jax.jit(policy)` is self-contained. Only `random` uses the key.

`make_policy(name, ...)` builds any of `POLICY_NAMES`; `packed(policy, cfg)` wraps one to take the
packed float32 vectors of `Scenario.pack` (what the decision benchmark times).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from offload_jax import droo, scenarios
from offload_jax.config import ConfigError, SystemConfig
from offload_jax.features import FeatureStats, features, num_features
from offload_jax.models import count_params, input_count
from offload_jax.scenarios.chain import solvers
from offload_jax.scenarios.chain.cost import CLOUD, EDGE, LOCAL, NUM_SITES, stage_costs
from offload_jax.scenarios.chain.system import SystemState

FIXED_SITE_POLICIES = {"local": LOCAL, "edge": EDGE, "cloud": CLOUD}
# Policies that need nothing but the state (no trained run).
BASELINE_NAMES = ("local", "edge", "cloud", "random", "greedy", "optimal_dp", "optimal_enumerate")
# Policies backed by a trained run (`train.load_run`); a run of kind "droo" decides as DROO does.
LEARNED_NAMES = ("teacher", "student_kd", "student_ce", "droo")
POLICY_NAMES = BASELINE_NAMES + LEARNED_NAMES

PolicyFn = Callable[[jax.Array, SystemState], jax.Array]


@dataclasses.dataclass(frozen=True, eq=False)
class Policy:
    """A named decision function; `params` counts trainable parameters (None for non-learned ones)."""

    name: str
    fn: PolicyFn
    params: int | None = None

    def __call__(self, key: jax.Array, state: SystemState) -> jax.Array:
        return self.fn(key, state)


def _check_out(x: jax.Array, state: SystemState) -> jax.Array:
    chex.assert_shape(x, state.cycles.shape)
    return x.astype(jnp.int8)


def fixed_site(site: int) -> PolicyFn:
    """Every sub-task on one site."""

    def fn(key, state):
        del key
        return jnp.full(state.cycles.shape, site, dtype=jnp.int8)

    return fn


def random_policy(key: jax.Array, state: SystemState) -> jax.Array:
    """Each sub-task on a site drawn uniformly and independently from `key`."""
    return jax.random.randint(key, state.cycles.shape, 0, NUM_SITES, dtype=jnp.int32).astype(jnp.int8)


def greedy_policy(key: jax.Array, state: SystemState) -> jax.Array:
    """Myopic: from local, sub-task t takes the site minimizing move(data_bits[t], prev -> s) + compute.

    That quantity is `costs.first[s]` for t = 0 and `costs.step[t-1, prev, s]` for t >= 1; the final
    return hop is ignored; ties go to the lowest label (`argmin` returns the first minimum).
    """
    del key
    costs = stage_costs(state)
    x0 = jnp.argmin(costs.first, axis=-1)

    def step(prev, table):  # table (n, 3, 3): row prev, column next site
        row = jnp.take_along_axis(table, prev[:, None, None], axis=1)[:, 0, :]
        nxt = jnp.argmin(row, axis=-1)
        return nxt, nxt

    _, rest = jax.lax.scan(step, x0, jnp.moveaxis(costs.step, 1, 0))
    x = jnp.concatenate([x0[:, None], jnp.moveaxis(rest, 0, 1)], axis=1)
    return _check_out(x, state)


def optimal_dp(key: jax.Array, state: SystemState) -> jax.Array:
    """The exact optimum by the chain DP (the SPEC label)."""
    del key
    return _check_out(solvers.solve_dp(stage_costs(state))[0], state)


def optimal_enumerate(key: jax.Array, state: SystemState) -> jax.Array:
    """The exact optimum by exhaustive search over 3^T placements (the SPEC label)."""
    del key
    return _check_out(solvers.solve_enumerate(stage_costs(state))[0], state)


def logits_fn(model: nnx.Module, stats: FeatureStats) -> Callable[[SystemState], jax.Array]:
    """state -> (n, T, 3) logits, closing over the model's split parameters (no NNX state in the jit)."""
    graphdef, params = nnx.split(model)
    stats = FeatureStats(jnp.asarray(stats.mean), jnp.asarray(stats.std))
    count = input_count(model)  # it reads the first `count` features

    def fn(state):
        return nnx.merge(graphdef, params)(features(state, stats, count))

    return fn


def argmax_sites(logits: jax.Array) -> jax.Array:
    """Argmax over the last axis (sites), ties to the lowest label: jnp.argmax for non-NaN logits.

    Written as a chain of compares, which XLA fuses into one elementwise loop; jnp.argmax is a
    variadic reduce that costs about 3 us more per batch-1 decision on CPU (benchmarks/RESULTS.md).
    """
    best, arg = logits[..., 0], jnp.zeros(logits.shape[:-1], jnp.int8)
    for site in range(1, logits.shape[-1]):
        better = logits[..., site] > best
        best = jnp.where(better, logits[..., site], best)
        arg = jnp.where(better, jnp.int8(site), arg)
    return arg


def model_policy(model: nnx.Module, stats: FeatureStats, name: str = "model") -> Policy:
    """Learned policy: per-sub-task argmax of the model's logits (ties to the lowest label)."""
    logits = logits_fn(model, stats)

    def fn(key, state):
        del key
        return _check_out(argmax_sites(logits(state)), state)

    return Policy(name, fn, count_params(model))


def droo_policy(model: nnx.Module, stats: FeatureStats, num_candidates: int, quantizer: str = "nested",
                name: str = "droo") -> Policy:
    """DROO's decision rule: the DNN's K quantized candidates, the best by the cost model (`droo.decide`)."""
    logits = logits_fn(model, stats)

    def fn(key, state):
        del key
        return _check_out(droo.decide(logits(state), stage_costs(state), num_candidates, quantizer)[0], state)

    return Policy(name, fn, count_params(model))


def check_run_matches(run: Any, cfg: SystemConfig, what: str) -> None:
    """Refuse a run trained for another number of sub-tasks / sub-carriers than `cfg`."""
    if (run.system.tasks, run.system.subcarriers) != (cfg.tasks, cfg.subcarriers) or int(
            run.stats.mean.shape[0]) != num_features(cfg.tasks, cfg.subcarriers):
        raise ConfigError(
            f"{what}: run has tasks={run.system.tasks}, subcarriers={run.system.subcarriers}, "
            f"but the data has tasks={cfg.tasks}, subcarriers={cfg.subcarriers}")


def run_policy(run: Any, name: str) -> Policy:
    """The decision policy of a loaded run (`train.LoadedRun`): DROO runs decide as DROO does."""
    if run.meta.get("kind") == "droo":
        droo_cfg = droo.config_of(run.meta)
        return droo_policy(run.model, run.stats, droo_cfg.num_candidates(run.system.tasks),
                           droo_cfg.quantizer, name=name)
    return model_policy(run.model, run.stats, name=name)


def make_policy(name: str, *, cfg: SystemConfig | None = None,
                runs: Mapping[str, Any] | None = None) -> Policy:
    """Policy `name` (one of POLICY_NAMES). Learned ones take their run from `runs[name]`.

    If `cfg` is given, a run trained for another T or number of sub-carriers is refused.
    """
    if name in FIXED_SITE_POLICIES:
        return Policy(name, fixed_site(FIXED_SITE_POLICIES[name]))
    simple = {"random": random_policy, "greedy": greedy_policy, "optimal_dp": optimal_dp,
              "optimal_enumerate": optimal_enumerate}
    if name in simple:
        return Policy(name, simple[name])
    if name not in LEARNED_NAMES:
        raise ConfigError(f"unknown policy {name!r}; allowed: {', '.join(POLICY_NAMES)}")
    if not runs or name not in runs:
        raise ConfigError(f"policy {name!r} needs a trained run (runs[{name!r}])")
    run = runs[name]
    if cfg is not None:
        check_run_matches(run, cfg, f"policy {name!r}")
    if name == "droo" and run.meta.get("kind") != "droo":
        raise ConfigError(f"policy 'droo' needs a run of kind 'droo', got {run.meta.get('kind')!r}")
    return run_policy(run, name)


def packed(policy: PolicyFn, cfg: SystemConfig) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """`policy` taking packed float32 vectors (n, packed_size) instead of a SystemState."""

    scenario = scenarios.of(cfg)

    def fn(key, vec):
        return policy(key, scenario.unpack(vec))

    return fn


def parse_policy_names(text: str, allowed: tuple[str, ...] = BASELINE_NAMES) -> list[str]:
    """Comma-separated policy names (or 'all' for every allowed one), checked against `allowed`."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return list(allowed)
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        raise ConfigError(
            f"--policies: unknown or unsupported {bad or text!r}; allowed: {', '.join(allowed)}")
    return names
