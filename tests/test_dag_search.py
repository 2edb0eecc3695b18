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


@pytest.mark.parametrize("overrides", [
    {"tasks": 4, "users": 2, "w_energy": 0.5},  # two users sharing the edge, energy in J
    # real job graphs padded to 6 slots, latency only: many exact ties (padding, off-critical-path sites)
    {"tasks": 6, "topology": "file", "topology_file": ALIBABA},
])
def test_pruned_search_equals_exhaustive_search(overrides):
    params, states = _states(1500, **overrides)
    labels, j = jax.jit(search.solve_enumerate)(params, states)
    solver = bnb.Solver(cap=2)  # small on purpose: the pool must grow where frontiers are wide
    labels_b, j_b = solver(params, states)
    assert solver.cap > 2 or overrides.get("topology") == "file"
    np.testing.assert_array_equal(np.asarray(labels_b), np.asarray(labels))
    np.testing.assert_array_equal(np.asarray(j_b), np.asarray(j))
    if overrides.get("topology") == "file":  # padding slots: 3^pad placements share the optimum's J
        assert np.mean(np.asarray(states.cycles) == 0) > 0.2
        assert np.all(np.asarray(labels)[np.asarray(states.cycles) == 0] == 0)


def test_overflow_is_reported_and_the_frontier_counted():
    params, states = _states(64, tasks=5)
    r = bnb.search_jit(params, states, bnb.pool_sizes(64, 1, 5, 1))
    assert bool(r.overflow)
    r = bnb.search_jit(params, states, bnb.pool_sizes(64, 1, 5, 3**4))  # every node fits
    assert not bool(r.overflow)
    assert r.frontier.shape == (5,) and np.all(np.asarray(r.frontier[:-1]) <= 64 * 3 ** np.arange(1, 5))
