"""Every decision maker behind one signature.

A policy maps `(key, state)` -> placements: `state` is a batch of the scenario's states (leading axis
n), the result is (n, *decision_shape) int8 in {0, 1, 2} (0 local, 1 edge, 2 cloud). Only `random`
uses the key. The baselines are the scenario's (`Scenario.baselines`, their one home), run with the
scenario's configured values; learned policies close over their parameters (split from the NNX
module) and feature statistics. Every policy is a pure, jittable function of its arguments, except a
host driver (`Policy.host`, e.g. dag's `optimal`: an exact search that grows its memory on overflow),
which is called as it is.

`make_policy(name, scenario=...)` builds any of `policy_names(scenario)`; `packed(policy, scenario)`
wraps one to take the packed float32 vectors of `Scenario.pack` (what the decision benchmark times).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from offload_jax import droo
from offload_jax.config import ConfigError
from offload_jax.decoding import argmax_sites, decide, real_or_all
from offload_jax.features import FeatureStats, features
from offload_jax.models import count_params, decode_steps, decoder, input_count
from offload_jax.scenarios.base import Scenario

# Policies backed by a trained run (`runs.load_run`); a run of kind "droo" decides as DROO does.
LEARNED_NAMES = ("teacher", "student_kd", "student_ce", "droo")


@dataclasses.dataclass(frozen=True)
class Hybrid:
    """A learned policy's placement, then the scenario's local search from it (`Scenario.improve`):
    `base` names the learned policy (its run is runs[base]); `rounds` bounds the search's improving
    moves (None: until no single change lowers the objective; 1: the best of the placement and its
    single changes, a fixed cost)."""

    base: str
    rounds: int | None = None


# Hybrid policies, offered where the scenario has a local search.
HYBRIDS = {"student_kd_ls": Hybrid("student_kd"), "student_kd_ls1": Hybrid("student_kd", rounds=1)}

PolicyFn = Callable[[jax.Array, Any], jax.Array]


@dataclasses.dataclass(frozen=True, eq=False)
class Policy:
    """A named decision function. `params` counts trainable parameters (None for non-learned ones);
    `host`: a host driver that cannot be jitted (evaluation and timing call it as it is)."""

    name: str
    fn: PolicyFn
    params: int | None = None
    host: bool = False

    def __call__(self, key: jax.Array, state: Any) -> jax.Array:
        return self.fn(key, state)


def baseline_names(scenario: Scenario) -> tuple[str, ...]:
    """The policies of `scenario` that need no trained run."""
    return tuple(scenario.baselines())


def hybrid_names(scenario: Scenario) -> tuple[str, ...]:
    """The hybrid policies `scenario` offers: all of `HYBRIDS` where it has a local search, else none."""
    return tuple(HYBRIDS) if scenario.has_local_search else ()


def policy_names(scenario: Scenario) -> tuple[str, ...]:
    """Every policy name of `scenario`: its baselines, the learned ones, then the hybrids."""
    return (*baseline_names(scenario), *LEARNED_NAMES, *hybrid_names(scenario))


def _check_out(x: jax.Array, state: Any) -> jax.Array:
    chex.assert_shape(x, state.cycles.shape)  # cycles has the decision's shape in every scenario
    return x.astype(jnp.int8)


@functools.lru_cache(maxsize=64)  # one function per (scenario, name): its jitted programs are reused
def _baseline_policy(scenario: Scenario, name: str) -> Policy:
    """Baseline `name` of `scenario`, deciding with the scenario's configured values (`scenario.params`)."""
    baseline, values = scenario.baselines()[name], scenario.params
    if getattr(baseline, "host", False):
        return Policy(name, lambda key, state: _check_out(baseline(values, key, state), state), host=True)

    def fn(key, state):
        # Opaque values, as in sampling: XLA folding constants into the arithmetic would round the
        # objective differently from one program (batch size) to another.
        return _check_out(baseline(jax.lax.optimization_barrier(values), key, state), state)

    return Policy(name, fn)


def network_fns(model: nnx.Module, stats: FeatureStats) -> tuple[Callable, Callable]:
    """(state -> the features the model reads, features -> (partial=None -> logits)), closing over the
    model's split parameters (no NNX state in the jit); the second is `models.decoder`: what does not
    read the partial placement runs once per decision, however many passes."""
    graphdef, params = nnx.split(model)
    stats = FeatureStats(jnp.asarray(stats.mean), jnp.asarray(stats.std))
    count = input_count(model)  # it reads the first `count` features

    def feats(state):
        return features(state, stats, count)

    def decoder_of(x):
        return decoder(nnx.merge(graphdef, params), x)

    return feats, decoder_of


def logits_fn(model: nnx.Module, stats: FeatureStats) -> Callable[[Any], jax.Array]:
    """state -> (n, *D, 3) logits of one pass (nothing given, for a conditional model)."""
    feats, decoder_of = network_fns(model, stats)
    return lambda state: decoder_of(feats(state))(None)


def model_policy(model: nnx.Module, stats: FeatureStats, name: str = "model",
                 steps: int | None = None) -> Policy:
    """Learned policy: per-decision argmax of the model's logits (ties to the lowest label), or for a
    conditional model its `decode_steps` passes (`decoding.decide`; `steps` overrides how many); dag
    padding slots (cycles 0) on 0, as the labels have them."""
    feats, decoder_of = network_fns(model, stats)
    steps = decode_steps(model) if steps is None else steps
    if steps < 1 or (steps > 1 and decode_steps(model) == 1):
        raise ConfigError(f"steps must be >= 1, and 1 for a network that reads no decisions "
                          f"(decode_steps 1), got {steps}")

    def fn(key, state):
        del key
        dag = state.cycles.ndim == 3  # (n, U, T): padding slots exist
        if steps > 1:
            real = real_or_all(state.cycles > 0 if dag else None, state.cycles.shape)
            return _check_out(decide(decoder_of(feats(state)), real, steps), state)
        x = argmax_sites(decoder_of(feats(state))(None))
        if dag:
            x = jnp.where(state.cycles > 0, x, jnp.int8(0))
        return _check_out(x, state)

    return Policy(name, fn, count_params(model))


def droo_policy(model: nnx.Module, stats: FeatureStats, scenario, num_candidates: int,
                quantizer: str = "nested", name: str = "droo") -> Policy:
    """DROO's decision rule: the DNN's K quantized candidates, the best by the scenario's objective
    (`droo.decide`)."""
    logits = logits_fn(model, stats)
    values = scenario.params

    def fn(key, state):
        del key
        mask = None if scenario.name == "chain" else scenario.real_mask(state)
        score = lambda x: scenario.candidate_values(values, state, x)  # noqa: E731
        return droo.decide(logits(state), score, num_candidates, quantizer, mask)[0].astype(jnp.int8)

    return Policy(name, fn, count_params(model))


def hybrid_policy(start: Policy, scenario: Scenario, name: str, rounds: int | None = None) -> Policy:
    """`start`'s placement, then the scenario's local search from it (`Scenario.improve`, at most
    `rounds` moves when given): never worse than `start` by the objective; its decision time is the
    network's plus the search's."""
    values = scenario.params

    def fn(key, state):
        x = start.fn(key, state)
        return _check_out(scenario.improve(jax.lax.optimization_barrier(values), state, x, rounds), state)

    return Policy(name, fn, start.params)


def _describe(scenario: Scenario) -> str:
    return ", ".join([f"scenario={scenario.name}", *(f"{k}={v}" for k, v in scenario.sizes().items())])


def check_run_matches(run: Any, scenario: Scenario, what: str) -> None:
    """Refuse a run trained for another scenario or other state shapes (T, U, sub-carriers) than
    `scenario`'s; the error names both sides. The run's scenario is the one its system belongs to."""
    trained = run.scenario
    if trained.name != scenario.name or trained.state_shapes() != scenario.state_shapes():
        raise ConfigError(f"{what}: run has {_describe(trained)}, but the data has {_describe(scenario)}")


def run_policy(run: Any, name: str, steps: int | None = None) -> Policy:
    """The decision policy of a loaded run (`runs.LoadedRun`): DROO runs decide as DROO does; a network
    that decides in steps, in its own number of passes or in `steps` (`model_policy`)."""
    if run.meta.get("kind") == "droo":
        if steps is not None:
            raise ConfigError(f"run {name!r} is DROO: it does not decide in passes (steps must be None, "
                              f"got {steps})")
        droo_cfg = droo.config_of(run.meta)
        scenario = run.scenario
        return droo_policy(run.model, run.stats, scenario, droo_cfg.num_candidates(scenario.decisions),
                           droo_cfg.quantizer, name=name)
    return model_policy(run.model, run.stats, name=name, steps=steps)


def make_policy(name: str, *, scenario: Scenario, runs: Mapping[str, Any] | None = None,
                steps: int | None = None) -> Policy:
    """Policy `name` (one of `policy_names(scenario)`). Learned ones take their run from `runs[name]`,
    hybrids from `runs[HYBRIDS[name]]`, deciding in `steps` passes if given (`run_policy`); a run
    trained for another scenario or other shapes than `scenario`'s is refused."""
    if name in scenario.baselines():
        return _baseline_policy(scenario, name)
    if name in hybrid_names(scenario):
        base = HYBRIDS[name].base
        if not runs or base not in runs:
            raise ConfigError(f"policy {name!r} starts from policy {base!r}: it needs runs[{base!r}]")
        check_run_matches(runs[base], scenario, f"policy {name!r}")
        return hybrid_policy(run_policy(runs[base], base, steps), scenario, name, HYBRIDS[name].rounds)
    if name not in LEARNED_NAMES:
        raise ConfigError(f"unknown policy {name!r} for scenario {scenario.name!r}; allowed: "
                          f"{', '.join(policy_names(scenario))}")
    if not runs or name not in runs:
        raise ConfigError(f"policy {name!r} needs a trained run (runs[{name!r}])")
    run = runs[name]
    check_run_matches(run, scenario, f"policy {name!r}")
    if name == "droo" and run.meta.get("kind") != "droo":
        raise ConfigError(f"policy 'droo' needs a run of kind 'droo', got {run.meta.get('kind')!r}")
    return run_policy(run, name, steps)


def packed(policy: PolicyFn, scenario: Scenario) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """`policy` taking packed float32 vectors (n, scenario.packed_size) instead of states."""

    def fn(key, vec):
        return policy(key, scenario.unpack(vec))

    return fn


def parse_policy_names(text: str, scenario: Scenario, *, learned: bool = False,
                       hybrids: bool = False) -> list[str]:
    """Comma-separated policy names of `scenario` (or 'all' for every one): its baselines, and with
    `learned` the learned ones and hybrids too; with `hybrids` the hybrids may be named ('all' leaves
    them out). A name the scenario lacks is refused, listing the allowed ones."""
    if learned:
        allowed = every = policy_names(scenario)
    else:
        every = baseline_names(scenario)
        allowed = (*every, *hybrid_names(scenario)) if hybrids else every
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return list(every)
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        raise ConfigError(f"--policies: unknown or unsupported {bad or text!r} for scenario "
                          f"{scenario.name!r}; allowed: {', '.join(allowed)}")
    return names
