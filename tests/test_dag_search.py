"""The pruned search returns the exhaustive search's label on every state, ties included."""

import jax
import numpy as np
import pytest

from offload_jax.scenarios.dag import bnb, search
from offload_jax.scenarios.dag import state as dag_state
from offload_jax.scenarios.dag.config import DagConfig

ALIBABA = "/work/shared/data/alibaba_dags.json"


def _states(n, seed=1, **overrides):
    cfg = DagConfig().with_overrides(overrides)
    return cfg.params(), dag_state.sample(jax.random.key(seed), cfg.static(), cfg.params(), n)


CASES = [
    {"tasks": 3, "users": 2, "subcarriers": 2, "w_energy": 0.5},  # two users sharing the edge, energy in J
    # real job graphs padded to 6 slots, latency only: many exact ties (padding, off-critical-path sites);
    # slow (its own compiles, ~25 s); the slow thousands-of-states test covers file graphs at T = 8 too
    pytest.param({"tasks": 6, "subcarriers": 2, "topology": "file", "topology_file": ALIBABA},
                 marks=pytest.mark.slow),
]


def _check_equal(n, overrides, cap):
    params, states = _states(n, **overrides)
    labels, j = jax.jit(search.solve_enumerate)(params, states)
    solver = bnb.Solver(cap=cap)
    labels_b, j_b = solver(params, states)
    np.testing.assert_array_equal(np.asarray(labels_b), np.asarray(labels))
    np.testing.assert_array_equal(np.asarray(j_b), np.asarray(j))
    if overrides.get("topology") == "file":  # padding slots: 3^pad placements share the optimum's J
        assert np.mean(np.asarray(states.cycles) == 0) > 0.2
        assert np.all(np.asarray(labels)[np.asarray(states.cycles) == 0] == 0)
    return solver


@pytest.mark.parametrize("overrides", CASES)
def test_pruned_search_equals_exhaustive_search(overrides):
    _check_equal(600, overrides, cap=4)


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    {"tasks": 4, "users": 2, "w_energy": 0.5}, {"tasks": 8, "topology": "file", "topology_file": ALIBABA},
    {"tasks": 10}])
def test_pruned_search_equals_exhaustive_search_on_thousands_of_states(overrides):
    _check_equal(4000, overrides, cap=4)


def test_overflow_is_reported_and_the_pool_grows():
    # The states and the grown pool of the first CASES entry: its programs are compiled once for both tests.
    params, states = _states(600, **CASES[0])  # (CASES[1] is a pytest.param)
    r = bnb.search_jit(params, states, bnb.pool_sizes(600, 2, 3, 2), 2)
    assert bool(r.overflow)  # 2 nodes a state on average: too few at levels 2-4 (see frontier)
    assert r.frontier.shape == (6,) and np.all(np.asarray(r.frontier[:-1]) <= 600 * 3 ** np.arange(1, 6))
    solver = bnb.Solver(cap=2)
    labels, _ = solver(params, states)
    assert solver.cap == 4 and np.max(solver.frontier) > 2
    exhaustive = jax.jit(search.solve_enumerate)(params, states)[0]
    np.testing.assert_array_equal(np.asarray(labels), np.asarray(exhaustive))
