"""The scenario interface: everything below the scenario line (datasets, evaluation, policies, timing,
training) sees a scenario only through it.

A scenario is a frozen dataclass holding its configuration (`cfg`: every key of a manifest's `system`
section, validated). Like a gymnax environment it splits what fixes shapes and program structure
(`static`, hashable: a static jit argument) from what only sets values (`params`, a pytree passed at
call time, so a sweep over a value is one vmapped program). Every method that computes takes
`params` explicitly; `scenario.params` is the configured default.

Decisions have `decision_shape` ((T,) for the chain, (U, T) for dag); a placement's sites are
0 local, 1 edge, 2 cloud. `objective(params, state, x)` is the one home of the scenario's
objective: (J, latency, energy) per state.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

LOCAL, EDGE, CLOUD = 0, 1, 2
SITES = ("local", "edge", "cloud")
NUM_SITES = 3

# A baseline policy: (params, key, states (n, ...)) -> placements (n, *decision_shape) int8.
Baseline = Callable[[Any, jax.Array, Any], jax.Array]


class Objective(NamedTuple):
    """Values of placements, per state (leading axis n)."""

    value: jax.Array  # (n,) the objective J the labels minimize
    latency: jax.Array  # (n,) chain, (n, U) dag: seconds
    energy: jax.Array | None  # (n, U) dag: device energy in J; None where the scenario has no energy


class Labeler:
    """Labels batches of states: `labeler(key, params, indices)` -> (state, label, results, summary).

    `results` maps the shard's value arrays (`Scenario.result_shapes`) to arrays; `summary` is the
    per-batch sums of `Scenario.summary_sums`. Scenarios return a jitted function or a host driver
    (an exact search that grows its room on overflow); either way the output is a function of the
    indices alone. `valid` (int): the first `valid` indices are real, the rest padding.
    """

    def __call__(self, key: jax.Array, params: Any, indices: jax.Array, valid: int):
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Scenario(abc.ABC):
    """Base class of scenarios (see the module docstring)."""

    cfg: Any

    name: ClassVar[str]
    format: ClassVar[str]  # dataset format of its `generate` output
    solvers: ClassVar[tuple[str, ...]]  # exact labelers; the first is the default
    # Most decisions (sub-task slots per state) each solver accepts, and its default states per call.
    max_decisions: ClassVar[Mapping[str, int]]
    default_batch: ClassVar[Mapping[str, int]]
    size_keys: ClassVar[tuple[str, ...]]  # the `cfg` keys that fix the state's and the decision's shapes

    # ------------------------------------------------------------------ shapes and values

    @property
    @abc.abstractmethod
    def static(self) -> Any:
        """What fixes shapes (hashable)."""

    @property
    @abc.abstractmethod
    def params(self) -> Any:
        """The configured values (a pytree)."""

    @property
    @abc.abstractmethod
    def decision_shape(self) -> tuple[int, ...]:
        """Shape of one state's placement."""

    @property
    def decisions(self) -> int:
        return int(np.prod(self.decision_shape))

    @property
    @abc.abstractmethod
    def state_type(self) -> type:
        """The NamedTuple of a state's arrays (fields in SPEC order)."""

    @abc.abstractmethod
    def state_shapes(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Per-sample shape and dtype of every state array (SPEC order)."""

    @abc.abstractmethod
    def result_shapes(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Per-sample shape and dtype of the label and its value arrays in a shard."""

    @abc.abstractmethod
    def value_rules(self) -> dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]]:
        """{array: (what its values must be, values -> mask of the good ones)} for dataset reads."""

    def sizes(self) -> dict[str, int]:
        """{key: value} of `size_keys`: what a trained network's input and output depend on."""
        return {k: getattr(self.cfg, k) for k in self.size_keys}

    def manifest_keys(self) -> dict[str, Any]:
        """The scenario's own manifest keys besides format, num_states, seed, solver, system, shards,
        versions."""
        return {"tasks": self.cfg.tasks}

    # ------------------------------------------------------------------ computing

    @abc.abstractmethod
    def sample(self, key: jax.Array, params: Any, indices: jax.Array) -> Any:
        """States number `indices` (n,) of the stream of `key` (state i depends only on (key, i))."""

    @abc.abstractmethod
    def objective(self, params: Any, state: Any, x: jax.Array) -> Objective:
        """The objective of placements x (n, *extra, *decision_shape) of states (n, ...): values
        (n, *extra) (`extra`: several placements per state, e.g. samples, valued together)."""

    def candidate_values(self, params: Any, state: Any, x: jax.Array) -> jax.Array:
        """`objective(params, state, x).value`, computed the way that is fastest for scoring a decision's
        candidates (dag: the schedules unrolled where U*T is small); the same numbers."""
        return self.objective(params, state, x).value

    def expected_objective(self, params: Any, state: Any, probs: jax.Array) -> jax.Array | None:
        """(n,) the exact expected J when each decision takes site s with probability probs[..., s],
        independently, where the scenario has a closed form; None where it has none (training then
        estimates the expectation from samples)."""
        return None

    def improve(self, params: Any, state: Any, x: jax.Array, rounds: int | None = None) -> jax.Array | None:
        """Placements (n, *decision_shape) at least as good as `x`, by the scenario's local search from
        x (at most `rounds` improving moves when given); None where the scenario has none (the chain:
        its exact DP is cheaper). What a hybrid policy (a network's placement, then search) calls
        (`policies.HYBRIDS`)."""
        return None

    @property
    def has_local_search(self) -> bool:
        """Whether `improve` is implemented (it returns placements, not None)."""
        return type(self).improve is not Scenario.improve

    def real_mask(self, state: Any) -> jax.Array:
        """(n, *decision_shape) bool: the decisions that matter (padding slots do not)."""
        return jnp.ones(state.cycles.shape, bool)

    @abc.abstractmethod
    def baselines(self) -> dict[str, Baseline]:
        """Every policy that needs no trained run, by name (the exact ones included)."""

    @abc.abstractmethod
    def labeler(self, solver: str, mesh: jax.sharding.Mesh) -> Labeler:
        """The labeler of `solver`, splitting each batch over the devices of `mesh`."""

    def check_solver(self, solver: str) -> None:
        """Refuse an unknown solver or a system larger than it accepts, naming the field."""
        from offload_jax.config import ConfigError  # noqa: PLC0415

        if solver not in self.solvers:
            raise ConfigError(f"solver must be one of {list(self.solvers)} for scenario {self.name!r}, "
                              f"got {solver!r}")
        limit = self.max_decisions[solver]
        if self.decisions > limit:
            raise ConfigError(f"{self._size_name()}: the {solver} solver accepts at most {limit}, "
                              f"got {self.decisions}")

    def _size_name(self) -> str:
        return "tasks"

    # ------------------------------------------------------------------ shared helpers

    @property
    def packed_size(self) -> int:
        """Length of the float32 vector `pack` makes of one state."""
        return sum(int(np.prod(shape)) for shape, _ in self.state_shapes().values())

    def pack(self, state: Any) -> jax.Array:
        """States (n, ...) -> (n, packed_size) float32 (the module function `pack`)."""
        return pack(state)

    def unpack(self, vec: jax.Array) -> Any:
        """Inverse of `pack`: (n, packed_size) float32 -> states (n, ...). Exact: every field is
        float32, boolean or a small integer (below 2^24), which float32 holds as it is."""
        chex.assert_shape(vec, (None, self.packed_size))
        fields, start = {}, 0
        for name, (shape, dtype) in self.state_shapes().items():
            size = int(np.prod(shape))
            fields[name] = vec[:, start:start + size].reshape((vec.shape[0], *shape)).astype(dtype)
            start += size
        return self.state_type(**fields)

    def fixed(self, site: int, n: int) -> jax.Array:
        """Every decision of n states on one site."""
        return jnp.full((n, *self.decision_shape), site, jnp.int8)

    def summary_sums(self, params: Any, state: Any, label: jax.Array, value: jax.Array,
                     valid: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Over the states where `valid`: (label count per site over the decisions that matter (3,),
        sum of the all-local / all-edge / all-cloud objective over the label's (3,))."""
        mask = self.real_mask(state) & valid.reshape(-1, *([1] * len(self.decision_shape)))
        counts = jnp.stack([jnp.sum((label == s) & mask) for s in range(NUM_SITES)]).astype(jnp.int32)
        n = label.shape[0]
        ratios = jnp.stack([self.objective(params, state, self.fixed(s, n)).value / value
                            for s in range(NUM_SITES)])
        return counts, jnp.sum(jnp.where(valid[None, :], ratios, 0.0), axis=1)


def pack(state: Any) -> jax.Array:
    """States (n, ...) -> (n, P) float32: one vector per state, its fields flattened in SPEC order (the
    state NamedTuple's). What an end device holds after measuring: decision benchmarks time every
    policy from it, so that every policy pays the same input overhead."""
    n = state.cycles.shape[0]
    return jnp.concatenate([jnp.reshape(v, (n, -1)).astype(jnp.float32) for v in state], axis=1)

