"""Scenario `chain` (SPEC.md, the paper's): an application of T sub-tasks in a chain, one device,
latency as the objective; exact chain DP and exhaustive enumeration; datasets offload-jax-dataset/1."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from offload_jax.config import SystemConfig
from offload_jax.scenarios.base import NUM_SITES, SITES, Baseline, Labeler, Objective, Scenario
from offload_jax.scenarios.chain import cost, solvers, system
from offload_jax.scenarios.chain.solvers import MAX_TASKS, SOLVERS


def _random(params, key, state):
    """Each sub-task on a site drawn uniformly and independently from `key`."""
    del params
    return jax.random.randint(key, state.cycles.shape, 0, NUM_SITES, dtype=jnp.int32).astype(jnp.int8)


def _greedy(params, key, state):
    """Myopic: from local, sub-task t takes the site minimizing move(data_bits[t], prev -> s) + compute.

    That quantity is `costs.first[s]` for t = 0 and `costs.step[t-1, prev, s]` for t >= 1; the final
    return hop is ignored; ties go to the lowest label (`argmin` returns the first minimum).
    """
    del params, key
    costs = cost.stage_costs(state)
    x0 = jnp.argmin(costs.first, axis=-1)

    def step(prev, table):  # table (n, 3, 3): row prev, column next site
        row = jnp.take_along_axis(table, prev[:, None, None], axis=1)[:, 0, :]
        nxt = jnp.argmin(row, axis=-1)
        return nxt, nxt

    _, rest = jax.lax.scan(step, x0, jnp.moveaxis(costs.step, 1, 0))
    return jnp.concatenate([x0[:, None], jnp.moveaxis(rest, 0, 1)], axis=1).astype(jnp.int8)


def _optimal(solver: str) -> Baseline:
    def fn(params, key, state):
        """The exact optimum (the SPEC label)."""
        del params, key
        return solvers.solve(cost.stage_costs(state), solver)[0]

    return fn


class _ChainLabeler(Labeler):
    """One jitted program per (system, solver, mesh): sampling, stage costs, solver, the label's latency
    and the summary sums, the batch split over the mesh. The values are its arguments, never constants
    folded into it: the bytes of a dataset do not depend on the program around the sampler."""

    def __init__(self, scenario: ChainScenario, solver: str, mesh):
        batch = NamedSharding(mesh, PartitionSpec("batch"))
        replicated = NamedSharding(mesh, PartitionSpec())

        def fn(key, params, indices, n_valid):
            state = system.sample_with(key, scenario.static, params, indices)
            costs = cost.stage_costs(state)
            label, _ = solvers.solve(costs, solver)
            latency = cost.path_latency(costs, label)
            valid = jnp.arange(indices.shape[0]) < n_valid
            sums = scenario.summary_sums(params, state, label, latency, valid)
            return state, label, {"latency": latency}, sums

        self._fn = jax.jit(fn, in_shardings=(replicated, replicated, batch, replicated),
                           out_shardings=(batch, batch, batch, replicated))

    def __call__(self, key, params, indices, valid):
        return self._fn(key, params, indices, valid)


@dataclasses.dataclass(frozen=True)
class ChainScenario(Scenario):
    cfg: SystemConfig

    name: ClassVar[str] = "chain"
    format: ClassVar[str] = "offload-jax-dataset/1"
    solvers: ClassVar[tuple[str, ...]] = SOLVERS
    max_decisions: ClassVar[dict[str, int]] = MAX_TASKS
    # DP is cheap per state and wants large batches; enumeration holds 3^8 latencies per state in
    # flight. Both fit in memory up to solvers.MAX_TASKS (measurements there).
    default_batch: ClassVar[dict[str, int]] = {"dp": 65536, "enumerate": 1024}
    size_keys: ClassVar[tuple[str, ...]] = ("tasks", "subcarriers")

    @property
    def static(self) -> system.ChainStatic:
        return system.static_of(self.cfg)

    @property
    def params(self) -> system.ChainParams:
        return system.params_of(self.cfg)

    @property
    def decision_shape(self) -> tuple[int, ...]:
        return (self.cfg.tasks,)

    @property
    def state_type(self) -> type:
        return system.SystemState

    def state_shapes(self):
        return system.state_shapes(self.cfg)

    def result_shapes(self):
        return {"label": ((self.cfg.tasks,), np.dtype(np.int8)), "latency": ((), np.dtype(np.float32))}

    def value_rules(self):
        positive = ("finite and > 0", lambda a: (a > 0) & (a < np.inf))  # NaN fails both comparisons
        names = ("cycles", "data_bits", "f_local", "f_edge", "f_cloud", "snr", "rate_up", "rate_down",
                 "backhaul_rate", "latency")
        edge_cores = self.cfg.edge_cores
        return {**dict.fromkeys(names, positive),
                "cloud_delay": ("finite and >= 0", lambda a: (a >= 0) & (a < np.inf)),
                "edge_cores_free": (f"in [1, edge_cores={edge_cores}]",
                                    lambda a: (a >= 1) & (a <= edge_cores)),
                "subcarrier_free": ("true for at least one sub-carrier of each state",
                                    lambda a: a.any(axis=-1)),
                "label": ("in {0, 1, 2}", lambda a: (a >= 0) & (a < NUM_SITES))}

    def sample(self, key, params, indices):
        return system.sample_with(key, self.static, params, indices)

    def objective(self, params, state, x) -> Objective:
        costs = cost.stage_costs(state)
        latency = cost.path_latency
        for _ in range(x.ndim - 2):  # placements per state beyond one: the states' costs broadcast
            latency = jax.vmap(latency, in_axes=(None, 1), out_axes=1)
        value = latency(costs, x)
        return Objective(value=value, latency=value, energy=None)

    def expected_objective(self, params, state, probs):
        return cost.expected_latency(cost.stage_costs(state), probs)

    def baselines(self) -> dict[str, Baseline]:
        fixed = {name: functools.partial(_fixed, site=site) for site, name in enumerate(SITES)}
        exact = {f"optimal_{s}": _optimal(s) for s in SOLVERS}
        return {**fixed, "random": _random, "greedy": _greedy, **exact}

    def labeler(self, solver: str, mesh) -> Labeler:
        return _labeler(self, solver, mesh)


def _fixed(params, key, state, site: int):
    """Every sub-task on one site."""
    del params, key
    return jnp.full(state.cycles.shape, site, jnp.int8)


@functools.lru_cache(maxsize=8)
def _labeler(scenario: ChainScenario, solver: str, mesh) -> _ChainLabeler:
    return _ChainLabeler(scenario, solver, mesh)


def from_dict(system_section: dict[str, Any]) -> ChainScenario:
    return ChainScenario(SystemConfig.from_dict(system_section))
