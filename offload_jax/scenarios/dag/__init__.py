"""Scenario `dag` (SPEC "Scenario `dag`"): task graphs with parallel branches, U users sharing the edge,
device energy in the objective; exact labels by pruned search (`bnb`, the default) or exhaustive
enumeration; datasets offload-jax-dataset/2."""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from offload_jax.scenarios.base import NUM_SITES, Baseline, Labeler, Objective, Scenario
from offload_jax.scenarios.dag import bnb, heuristics, schedule, search
from offload_jax.scenarios.dag import state as dag_state
from offload_jax.scenarios.dag.config import DagConfig, DagParams, DagStatic


def _on_real(state, x):
    """x on the real slots, 0 on padding (its site changes nothing; 0 is the label's by the tie rule)."""
    return jnp.where(state.cycles > 0, x, 0).astype(jnp.int8)


def _fixed(site: int) -> Baseline:
    def fn(params, key, state):
        del params, key
        return _on_real(state, jnp.full(state.cycles.shape, site, jnp.int8))

    fn.__doc__ = f"Every sub-task on site {site}."
    return fn


def _random(params, key, state):
    """Each sub-task on a site drawn uniformly and independently from `key` (padding slots on 0)."""
    del params
    return _on_real(state, jax.random.randint(key, state.cycles.shape, 0, NUM_SITES, dtype=jnp.int32))


def _greedy(params, key, state):
    del key
    return heuristics.greedy(params, state)


def _local_search(params, key, state):
    del key
    return heuristics.local_search(params, state)


class _Optimal:
    """The fastest exact method as a policy: the pruned search's host driver (not jittable: it grows
    its pool on overflow). `host = True` tells evaluation and timing to call it as it is. Each call
    starts from the solver's first pool size, so one hard state does not slow the easy ones after it
    (the labeler keeps the grown size: its batches are large and alike). The pool grows 4x at a
    time (32, 128, 512 nodes a level): three programs to compile instead of the five of doubling (each
    ~15-30 s here, in the first calls of a process), and on the dag quickstart's 100 timing states at
    batch 1 the same median (8.8 vs 8.9 ms), a lower mean (15.2 vs 18.0 ms) and p99 (115 vs 138 ms)
    (one interleaved run, the CPU shared with a training job). One state at a time it starts at
    `ONE_STATE_CAP` nodes a level (128, 512): on those 100 states 2.41 ms median, mean 3.18, p99 21.8
    against 2.78 / 4.86 / 29.0 from 32 and 3.10 / 4.07 / 24.0 at 512 alone (3 calls each, idle CPU;
    medians at T = 14 14.6 against 18.2 ms, at U = 3 x T = 6 17.9 against 23.6, 60 states 2 calls each),
    and one program fewer to compile; a batch starts where the labeler does (32 nodes a level, its
    compiled program shared: `bnb.Solver._call_size`)."""

    host = True
    ONE_STATE_CAP = 128

    def __init__(self):
        self._solver = bnb.Solver(growth=4)
        self._cap = self._solver.cap

    def __call__(self, params, key, state):
        del key
        self._solver.cap = self.ONE_STATE_CAP if state.cycles.shape[0] == 1 else self._cap
        return self._solver(params, state)[0]


class _DagLabeler(Labeler):
    """Sampling (jitted, split over the mesh), the exact solver, then the label's objective and the
    summary sums (jitted). The values are arguments of every program, never folded constants."""

    def __init__(self, scenario: DagScenario, solver: str, mesh):
        batch = NamedSharding(mesh, PartitionSpec("batch"))
        replicated = NamedSharding(mesh, PartitionSpec())
        static = scenario.static
        self._sample = jax.jit(lambda key, params, idx: dag_state.sample_indices(key, static, params, idx),
                               in_shardings=(replicated, replicated, batch), out_shardings=batch)
        if solver == "bnb":
            self._solve = bnb.Solver(mesh=mesh)
        else:
            self._solve = jax.jit(search.solve_enumerate, in_shardings=(replicated, batch),
                                  out_shardings=(batch, batch))

        def finish(params, state, label, n_valid):
            obj = scenario.objective(params, state, label)
            valid = jnp.arange(label.shape[0]) < n_valid
            sums = scenario.summary_sums(params, state, label, obj.value, valid)
            return {"objective": obj.value, "latency": obj.latency, "energy": obj.energy}, sums

        self._finish = jax.jit(finish, in_shardings=(replicated, batch, batch, replicated),
                               out_shardings=(batch, replicated))

    def __call__(self, key, params, indices, valid):
        state = self._sample(key, params, indices)
        label, _ = self._solve(params, state)
        results, sums = self._finish(params, state, label, valid)
        return state, label, results, sums


@dataclasses.dataclass(frozen=True)
class DagScenario(Scenario):
    cfg: DagConfig

    name: ClassVar[str] = "dag"
    format: ClassVar[str] = "offload-jax-dataset/2"
    solvers: ClassVar[tuple[str, ...]] = ("bnb", "enumerate")
    # Exhaustive search: 3^14 = 4.8M placements per state (about a second each here); the pruned
    # search: placements are numbered in int32 (3^19 < 2^31), and U = 3 x T = 6 is the largest.
    max_decisions: ClassVar[dict[str, int]] = {"bnb": 18, "enumerate": search.MAX_ENUMERATE_DECISIONS}
    # bnb: the Solver's first call size (POOL_BUDGET // its first cap), so a labeler's calls and the
    # `optimal` policy's on an evaluation batch share one compile
    default_batch: ClassVar[dict[str, int]] = {"bnb": 8192, "enumerate": 256}
    size_keys: ClassVar[tuple[str, ...]] = ("users", "tasks", "subcarriers")

    @functools.cached_property
    def static(self) -> DagStatic:
        return self.cfg.static()

    @property
    def params(self) -> DagParams:
        return self.cfg.params()

    @property
    def decision_shape(self) -> tuple[int, ...]:
        return (self.cfg.users, self.cfg.tasks)

    @property
    def state_type(self) -> type:
        return dag_state.DagState

    def state_shapes(self):
        return dag_state.state_shapes(self.static)

    def result_shapes(self):
        u, t = self.cfg.users, self.cfg.tasks
        f32 = np.dtype(np.float32)
        return {"label": ((u, t), np.dtype(np.int8)), "objective": ((), f32), "latency": ((u,), f32),
                "energy": ((u,), f32)}

    def value_rules(self):
        positive = ("finite and > 0", lambda a: (a > 0) & (a < np.inf))
        non_negative = ("finite and >= 0", lambda a: (a >= 0) & (a < np.inf))
        cores = self.cfg.edge_cores
        return {**dict.fromkeys(("f_local", "f_edge", "f_cloud", "snr", "rate_up", "rate_down",
                                 "backhaul_rate", "objective", "latency"), positive),
                **dict.fromkeys(("cycles", "edge_bits", "in_bits", "out_bits", "cloud_delay", "energy"),
                                non_negative),
                "edge_cores_free": (f"in [1, edge_cores={cores}]", lambda a: (a >= 1) & (a <= cores)),
                "subcarrier_free": ("true for at least one sub-carrier of each user",
                                    lambda a: a.any(axis=-1)),
                "adj": ("only i < j (slots in dispatch order)",
                        lambda a: ~(a & ~np.triu(np.ones(a.shape[-2:], bool), 1))),
                "label": ("in {0, 1, 2}", lambda a: (a >= 0) & (a < NUM_SITES))}

    def manifest_keys(self):
        return {"scenario": self.name, "users": self.cfg.users, "tasks": self.cfg.tasks}

    def _size_name(self) -> str:
        return "users * tasks"

    def sample(self, key, params, indices):
        return dag_state.sample_indices(key, self.static, params, indices)

    def objective(self, params, state, x) -> Objective:
        j, lat, en = schedule.batch_objective(params, state, x)
        return Objective(value=j, latency=lat, energy=en)

    def candidate_values(self, params, state, x):
        unroll = schedule.unrolls(self.cfg.users * self.cfg.tasks)
        return schedule.batch_objective(params, state, x, unroll)[0]

    def real_mask(self, state):
        return state.cycles > 0

    def improve(self, params, state, x, rounds=None):
        return heuristics.local_search(params, state, x, rounds)  # local_search_from casts x to int8

    def baselines(self) -> dict[str, Baseline]:
        return {"local": _fixed(0), "edge": _fixed(1), "cloud": _fixed(2), "random": _random,
                "greedy": _greedy, "local_search": _local_search, "optimal": _Optimal()}

    def labeler(self, solver: str, mesh) -> Labeler:
        return _labeler(self, solver, mesh)


@functools.lru_cache(maxsize=8)
def _labeler(scenario: DagScenario, solver: str, mesh) -> _DagLabeler:
    return _DagLabeler(scenario, solver, mesh)
