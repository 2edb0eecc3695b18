"""Exact solvers: chain DP == enumeration == brute force over all 3^T placements, ties included."""

import functools
import resource

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from reference import all_placements, brute_force_labels, one_state, spec_latencies_all

from offload_jax.config import ConfigError, SystemConfig
from offload_jax.scenarios.chain import cost, solvers, system

# Every call below uses batches of B states, so each solver compiles once per T (and suffix).
B = 8
DP = jax.jit(solvers.solve_dp)
ENUMERATE = jax.jit(solvers.solve_enumerate, static_argnames="suffix_tasks")
PATH_LATENCY = jax.jit(cost.path_latency)
STAGE_COSTS = jax.jit(cost.stage_costs)


def _costs(states) -> cost.StageCosts:
    """Stage costs of a batch of 512 states. They do not read the sub-carriers: keeping one of them
    makes one compile per T serve every system."""
    states = system.SystemState(*(np.asarray(a) for a in states))  # slicing numpy compiles nothing
    return STAGE_COSTS(states._replace(snr=states.snr[:, :1], subcarrier_free=states.subcarrier_free[:, :1]))


def _chunks(costs, count):
    """The first `count` batches of B states of `costs`."""
    costs = cost.StageCosts(*(np.asarray(a) for a in costs))  # slicing numpy compiles nothing
    return [cost.StageCosts(*(a[s:s + B] for a in costs)) for s in range(0, count * B, B)]


def _to_costs(first, step, last) -> cost.StageCosts:
    return cost.StageCosts(*(np.asarray(a, np.float32) for a in (first, step, last)))


def _check_exact(costs: cost.StageCosts, suffixes=(8,)):
    """DP, enumeration (each chunking in `suffixes`) and brute force give the same labels and latency,
    and the latency is exactly path_latency(label). Returns the labels."""
    ref_labels, ref_latency = brute_force_labels(*costs)
    results = {"dp": DP(costs)}
    results.update({f"enumerate/{s}": ENUMERATE(costs, suffix_tasks=s) for s in suffixes})
    for name, (labels, latency) in results.items():
        labels, latency = np.asarray(labels), np.asarray(latency)
        assert labels.dtype == np.int8 and labels.shape == ref_labels.shape, name
        assert latency.dtype == np.float32 and latency.shape == ref_latency.shape, name
        np.testing.assert_array_equal(labels, ref_labels, err_msg=name)
        np.testing.assert_array_equal(latency, ref_latency, err_msg=name)
        np.testing.assert_array_equal(np.asarray(PATH_LATENCY(costs, jnp.asarray(labels))), latency,
                                      err_msg=name)
    return ref_labels


@st.composite
def system_configs(draw):
    """Random but valid systems: magnitudes spread wide, so every site wins somewhere."""

    def log_range(lo_exp, hi_exp, max_decades):
        lo = 10.0 ** draw(st.floats(lo_exp, hi_exp))
        return (lo, lo * 10.0 ** draw(st.floats(0.0, max_decades)))

    snr_lo = draw(st.floats(-20.0, 30.0))
    delay_lo = draw(st.floats(0.0, 0.3))
    return SystemConfig(
        tasks=draw(st.integers(1, 8)),
        cycles_range=log_range(6, 10, 2),
        data_bits_range=log_range(3, 8, 2),
        f_local_range=log_range(8, 10, 1),
        edge_cores=draw(st.integers(1, 16)),
        edge_core_hz=10.0 ** draw(st.floats(8, 10)),
        f_cloud_range=log_range(9, 11, 1),
        subcarriers=draw(st.sampled_from([1, 3, 8])),
        subcarrier_bandwidth=10.0 ** draw(st.floats(4, 7)),
        subcarrier_free_prob=draw(st.floats(0.0, 1.0)),
        mean_snr_db_range=(snr_lo, snr_lo + draw(st.floats(0.0, 20.0))),
        downlink_factor=draw(st.floats(0.1, 10.0)),
        backhaul_rate_range=log_range(5, 9, 2),
        cloud_delay_range=(delay_lo, delay_lo + draw(st.floats(0.0, 0.3))),
    ).validate()


@settings(max_examples=40, deadline=None)
@given(data=st.data(), tasks=st.integers(1, 8))
def test_exact_ties_go_to_the_lexicographically_smallest_placement(data, tasks):
    # Small integer costs: sums are exact in float32 and ties are everywhere.
    first = data.draw(hnp.arrays(np.int8, (B, 3), elements=st.integers(0, 3)), label="first")
    step = data.draw(hnp.arrays(np.int8, (B, tasks - 1, 3, 3), elements=st.integers(0, 3)), label="step")
    last = data.draw(hnp.arrays(np.int8, (B, 3), elements=st.integers(0, 3)), label="last")
    costs = _to_costs(first, step, last)
    labels = _check_exact(costs)  # (other chunkings with ties: test_enumeration_chunking_...)
    # The reference's tie-breaking itself, in exact integers: the label is the first optimal placement.
    xs = all_placements(tasks)
    for i in range(B):
        totals = first[i][xs[:, 0]].astype(np.int64) + last[i][xs[:, -1]]
        for t in range(1, tasks):
            totals += step[i, t - 1][xs[:, t - 1], xs[:, t]]
        np.testing.assert_array_equal(xs[np.argmax(totals == totals.min())], labels[i])


def test_all_zero_costs_give_all_local():
    for tasks in (1, 4):
        costs = _to_costs(np.zeros((B, 3)), np.zeros((B, tasks - 1, 3, 3)), np.zeros((B, 3)))
        labels = _check_exact(costs, suffixes=(8, 1))
        assert not labels.any()


@functools.cache
def _default_states():
    """States of the default system with T = 8; the first T sub-tasks of each make a T-task state.
    (test_cost.py samples the same shape, so the sampler compiles once for both.)"""
    states = system.sample(jax.random.key(2024), SystemConfig(tasks=8), 512)
    return system.SystemState(*map(np.asarray, states))  # numpy: slicing it compiles nothing


def _first_tasks(states, tasks):
    return states._replace(cycles=states.cycles[:, :tasks], data_bits=states.data_bits[:, :tasks + 1])


@pytest.mark.parametrize("tasks", range(1, 9))
def test_many_default_states_all_t(tasks):
    for chunk in _chunks(_costs(_first_tasks(_default_states(), tasks)), 512 // B):
        _check_exact(chunk)


def _random_system_check(cfg, seed):
    states = system.sample(jax.random.key(seed), cfg, 512)
    labels = np.concatenate([_check_exact(chunk) for chunk in _chunks(_costs(states), 4)])
    # Optimal for the SPEC formula itself (float64), up to float32 rounding of the cost tables.
    arrays = system.to_numpy(states)
    index = np.ravel_multi_index(labels.T.astype(np.int64), (3,) * cfg.tasks)
    for i in range(len(labels)):
        everything = spec_latencies_all(one_state(arrays, i))
        assert everything[index[i]] <= everything.min() * (1 + 1e-5)


# Each drawn system compiles the sampler once (~1 s), hence few examples in the default run;
# test_many_default_states_all_t adds thousands of states at no compile cost, and a slow test more systems.
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=system_configs(), seed=st.integers(0, 2**32 - 1))
def test_solvers_agree_with_brute_force_on_random_systems(cfg, seed):
    _random_system_check(cfg, seed)


@pytest.mark.slow
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=system_configs(), seed=st.integers(0, 2**32 - 1))
def test_solvers_agree_with_brute_force_on_many_random_systems(cfg, seed):
    _random_system_check(cfg, seed)


@pytest.mark.parametrize(("tasks", "suffixes"), [(5, (1, 2, 4)), (8, (3,))])
def test_enumeration_chunking_does_not_change_the_result(tasks, suffixes):
    chunk = _chunks(_costs(_first_tasks(_default_states(), tasks)), 1)[0]
    _check_exact(chunk, suffixes=suffixes)
    # Integer costs with many ties: the order across chunks must still be lexicographic.
    rng = np.random.default_rng(tasks)
    ties = _to_costs(rng.integers(0, 2, (B, 3)), rng.integers(0, 2, (B, tasks - 1, 3, 3)),
                     rng.integers(0, 2, (B, 3)))
    _check_exact(ties, suffixes=suffixes)


def test_bad_solver_arguments_are_refused():
    costs = _chunks(_costs(_first_tasks(_default_states(), 2)), 1)[0]
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="suffix_tasks"):
            solvers.solve_enumerate(costs, suffix_tasks=bad)
    with pytest.raises(ValueError, match="dp"):
        solvers.solve(costs, "greedy")
    solve = jax.jit(solvers.solve, static_argnums=1)
    for name in solvers.SOLVERS:
        labels, latency = solve(costs, name)
        np.testing.assert_array_equal(np.asarray(labels), np.asarray(DP(costs)[0]))
        np.testing.assert_array_equal(np.asarray(latency), np.asarray(DP(costs)[1]))


@pytest.mark.parametrize("solver", solvers.SOLVERS)
def test_solvers_refuse_more_tasks_than_they_accept(solver):
    limit = solvers.MAX_TASKS[solver]
    costs = _to_costs(np.ones((B, 3)), np.ones((B, limit, 3, 3)), np.ones((B, 3)))  # T = limit + 1
    with pytest.raises(ConfigError, match=rf"tasks: the {solver} solver accepts at most {limit} sub-tasks, "
                                          rf"got {limit + 1}"):
        jax.jit(solvers.solve, static_argnums=1)(costs, solver)  # refused when traced, before compiling


def test_rounding_created_tie_dp_and_enumeration_both_optimal():
    """A tie that only float32 rounding creates: (0,0,0) and (1,0,0) have partial sums 1 + 2^-23 and 1
    where they meet, and both totals round to 4. Enumeration returns the lexicographically smaller
    placement; the chain DP has kept only the smaller partial sum. Same latency, both optimal."""
    u = 2.0**-23
    first = np.tile([1 + u, 1.0, 100.0], (B, 1))
    step = np.full((B, 2, 3, 3), 100.0)
    step[:, 0, 0, 0] = step[:, 0, 1, 0] = 0.0
    step[:, 1, 0, 0] = 3.0
    last = np.tile([0.0, 100.0, 100.0], (B, 1))
    costs = _to_costs(first, step, last)
    ref_labels, ref_latency = brute_force_labels(*costs)
    enum_labels, enum_latency = ENUMERATE(costs, suffix_tasks=8)
    dp_labels, dp_latency = DP(costs)
    np.testing.assert_array_equal(np.asarray(enum_labels), ref_labels)
    np.testing.assert_array_equal(ref_labels[0], [0, 0, 0])
    np.testing.assert_array_equal(np.asarray(dp_latency), ref_latency)
    np.testing.assert_array_equal(np.asarray(enum_latency), ref_latency)
    assert set(map(tuple, np.asarray(dp_labels))) <= {(0, 0, 0), (1, 0, 0)}
    np.testing.assert_array_equal(np.asarray(PATH_LATENCY(costs, dp_labels)), ref_latency)


def test_default_system_label_shares_and_fixed_site_ratios_match_spec():
    """SPEC: at T=10 about 18% local, 48% edge, 34% cloud; all-local/edge/cloud 2.4x-3.8x optimal."""
    cfg = SystemConfig()

    @jax.jit
    def summary(key):
        costs = cost.stage_costs(system.sample(key, cfg, 20_000))
        labels, best = solvers.solve_dp(costs)
        shares = jnp.stack([jnp.mean(labels == s) for s in range(3)])
        ratios = jnp.stack([jnp.mean(cost.fixed_site_latency(costs, s) / best) for s in range(3)])
        return shares, ratios

    shares, ratios = (np.asarray(a) for a in summary(jax.random.key(0)))
    np.testing.assert_allclose(shares, [0.18, 0.48, 0.34], atol=0.05)
    assert np.all((ratios >= 2.0) & (ratios <= 4.5)), ratios


@pytest.mark.slow
def test_largest_enumeration_matches_dp_with_bounded_memory():
    tasks = solvers.MAX_TASKS["enumerate"]
    states = system.sample(jax.random.key(14), SystemConfig(tasks=tasks), 4)
    costs = STAGE_COSTS(states)
    # 3^13 = 1.6M placements per state, scanned in chunks of 3^8.
    enum_labels, enum_latency = ENUMERATE(costs, suffix_tasks=8)
    dp_labels, dp_latency = DP(costs)
    np.testing.assert_array_equal(np.asarray(enum_latency), np.asarray(dp_latency))
    np.testing.assert_array_equal(np.asarray(enum_labels), np.asarray(dp_labels))
    np.testing.assert_array_equal(np.asarray(PATH_LATENCY(costs, dp_labels)), np.asarray(dp_latency))
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is KiB on Linux
    assert peak_gib < 4.0, f"peak RSS {peak_gib:.2f} GiB"
