"""The pruned search returns the exhaustive search's label on every state, ties included."""

import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import four_cpu_devices_env

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
    solver = bnb.Solver(cap=cap, growth=4)  # (4x: fewer programs to compile; the overflow test doubles)
    labels_b, j_b = solver(params, states)
    np.testing.assert_array_equal(np.asarray(labels_b), np.asarray(labels))
    np.testing.assert_array_equal(np.asarray(j_b), np.asarray(j))
    if overrides.get("topology") == "file":  # padding slots: 3^pad placements share the optimum's J
        assert np.mean(np.asarray(states.cycles) == 0) > 0.2
        assert np.all(np.asarray(labels)[np.asarray(states.cycles) == 0] == 0)
    return solver


@pytest.mark.parametrize("overrides", CASES)
def test_pruned_search_equals_exhaustive_search(overrides):
    _check_equal(512, overrides, cap=4)


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    {"tasks": 4, "users": 2, "w_energy": 0.5}, {"tasks": 8, "topology": "file", "topology_file": ALIBABA},
    {"tasks": 10}])
def test_pruned_search_equals_exhaustive_search_on_thousands_of_states(overrides):
    _check_equal(4000, overrides, cap=4)


def test_overflow_is_reported_and_the_pool_grows():
    # The states and the grown pool of the first CASES entry: its programs are compiled once for both tests.
    params, states = _states(512, **CASES[0])  # (CASES[1] is a pytest.param)
    # (the Solver's own program below: the same pool, dives and `Jobs`, so it is compiled once)
    r = bnb.search_jit(params, states, bnb.pool_sizes(512, 2, 3, 2), 2, bnb.Jobs.whole(512, 6))
    assert r.overflow.shape == (512,)
    assert bool(r.overflow.any())  # 2 nodes a state on average: too few at levels 2-4 (see frontier)
    assert not bool(r.overflow.all())  # the pool is filled in state order: the first states fit
    exhaustive = jax.jit(search.solve_enumerate)(params, states)
    fits = ~np.asarray(r.overflow)
    np.testing.assert_array_equal(np.asarray(r.label)[fits], np.asarray(exhaustive[0])[fits])
    assert r.frontier.shape == (6,) and np.all(np.asarray(r.frontier[:-1]) <= 512 * 3 ** np.arange(1, 6))
    solver = bnb.Solver(cap=2)  # 512 jobs a call (a power of two: no padding jobs to share the pool with)
    labels, _ = solver(params, states)
    assert solver.cap == 4 and np.max(solver.frontier) > 2 and solver.splits == 0
    np.testing.assert_array_equal(np.asarray(labels), np.asarray(exhaustive[0]))


def test_a_batch_of_another_size_shares_the_compiled_search():
    # A call's jobs are padded to a power of two: 300 states run the 512-job program of the tests above
    # (the padding jobs search nothing), with the labels of those states in the 512-state batch.
    params, states = _states(512, **CASES[0])
    whole, j = bnb.Solver(cap=4, growth=4)(params, states)
    before = bnb.search_jit._cache_size()
    part = jax.tree.map(lambda a: a[:300], states)
    labels, j_part = bnb.Solver(cap=4, growth=4)(params, part)
    assert bnb.search_jit._cache_size() == before
    np.testing.assert_array_equal(np.asarray(labels), np.asarray(whole)[:300])
    np.testing.assert_array_equal(np.asarray(j_part), np.asarray(j)[:300])


@pytest.mark.slow  # two programs of their own (~25 s)
def test_precompile_leaves_no_compile_for_the_calls():
    # Shapes no other test compiles (4 jobs a call at cap 2, 2 at cap 4): precompile compiles both and
    # leaves the cap as it was; then a call that grows the cap compiles nothing.
    params, states = _states(40, **CASES[0])
    solver = bnb.Solver(cap=2, budget=8, max_cap=4)
    before = bnb.search_jit._cache_size()
    solver.precompile(params, states)
    assert solver.cap == 2 and bnb.search_jit._cache_size() == before + 2
    labels, _ = solver(params, states)
    assert solver.cap == 4 and bnb.search_jit._cache_size() == before + 2
    exhaustive = jax.jit(search.solve_enumerate)(params, states)[0]
    np.testing.assert_array_equal(np.asarray(labels), np.asarray(exhaustive))
    # Growing 4x at a time (the optimal policy's solver): cap 1 straight to 4 (whose program is above's),
    # one program more, the same labels.
    quick = bnb.Solver(cap=1, budget=8, max_cap=4, growth=4)
    quick.precompile(params, states)
    assert quick.cap == 1 and bnb.search_jit._cache_size() == before + 3
    labels, _ = quick(params, states)
    assert quick.cap == 4 and bnb.search_jit._cache_size() == before + 3
    np.testing.assert_array_equal(np.asarray(labels), np.asarray(exhaustive))
    with pytest.raises(ValueError, match="growth must be an integer >= 2, got 1"):
        bnb.Solver(growth=1)


def test_trees_too_large_for_the_budget_are_split_into_subtrees():
    # The program of the test above (512 jobs, 2 nodes each a level), a budget of 1,200 nodes a level and no
    # pool growth: every state whose frontier passes the room left is searched again, and the first one to
    # overflow in each call as jobs over subtrees (prefixes).
    params, states = _states(512, **CASES[0])
    solver = bnb.Solver(cap=2, budget=1200, max_cap=2)
    labels, j = solver(params, states)
    assert solver.cap == 2 and solver.splits >= 1  # repeated, nested splits: the four-device test (slow)
    exhaustive = jax.jit(search.solve_enumerate)(params, states)
    np.testing.assert_array_equal(np.asarray(labels), np.asarray(exhaustive[0]))
    np.testing.assert_array_equal(np.asarray(j), np.asarray(exhaustive[1]))


@pytest.mark.slow  # a fresh process compiles the sharded search (~30 s)
def test_split_trees_on_four_devices_give_the_exhaustive_labels():
    script = """
import jax, numpy as np
from offload_jax.scenarios.dag import bnb, search
from offload_jax.scenarios.dag import state as dag_state
from offload_jax.scenarios.dag.config import DagConfig
assert jax.device_count() == 4, jax.devices()
cfg = DagConfig().with_overrides({"tasks": 3, "users": 2, "subcarriers": 2, "w_energy": 0.5})
states = dag_state.sample(jax.random.key(1), cfg.static(), cfg.params(), 200)
mesh = jax.make_mesh((4,), ("batch",))
solver = bnb.Solver(cap=2, budget=8, max_cap=2, mesh=mesh)
labels, j = solver(cfg.params(), states)
ref = jax.jit(search.solve_enumerate)(cfg.params(), states)
assert solver.splits > 10, solver.splits
np.testing.assert_array_equal(np.asarray(labels), np.asarray(ref[0]))
np.testing.assert_array_equal(np.asarray(j), np.asarray(ref[1]))
"""
    env = four_cpu_devices_env()
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_jobs_cover_subtrees_and_share_their_incumbent():
    # Three jobs split one state's tree by its first site; alone, the one whose subtree holds the label finds
    # it and the others nothing better; with a shared group all three return it. Inactive jobs search
    # nothing. (The program of the tests above: 512 jobs, 2 nodes each a level, 2 dives.)
    params, states = _states(512, **CASES[0])
    one = jax.tree.map(lambda a: np.repeat(a[:1], 512, axis=0), states)
    ref = jax.jit(search.solve_enumerate)(params, states)
    prefix = np.full((512, 6), -1, np.int8)
    prefix[:3, 0] = [0, 1, 2]
    pool = bnb.pool_sizes(512, 2, 3, 2)
    alone = bnb.Jobs(prefix, np.arange(512) < 3, np.full(512, np.inf, np.float32),
                     np.full(512, bnb.INT_MAX, np.int32), np.arange(512, dtype=np.int32))
    r = bnb.search_jit(params, one, pool, 2, alone)
    assert not bool(r.overflow.any())
    label = np.asarray(ref[0])[0]
    mine = int(label[0, 0])
    np.testing.assert_array_equal(np.asarray(r.label)[mine], label)
    for k in range(3):
        if k != mine:
            assert float(r.objective[k]) >= float(ref[1][0])
    assert int(r.frontier[0]) <= 3  # at most 1 node per active job at the fixed level
    shared = alone._replace(group=np.where(np.arange(512) < 3, 0, np.arange(512)).astype(np.int32))
    r = bnb.search_jit(params, one, pool, 2, shared)
    np.testing.assert_array_equal(np.asarray(r.label)[:3], np.broadcast_to(label, (3, 2, 3)))
    np.testing.assert_array_equal(np.asarray(r.objective)[:3], float(ref[1][0]))
