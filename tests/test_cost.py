"""The cost model against the SPEC text: scalar reference, hand-computed values, expectations."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import brute_force_expectation, one_state, spec_k_f, spec_latency

from offload_jax.config import SystemConfig
from offload_jax.scenarios.chain import cost, system

# A hand-built T=2 state. Rates and speeds are chosen so every term is a short decimal.
HAND = {
    "cycles": [1.0e9, 2.0e9],
    "data_bits": [8.0e6, 4.0e6, 2.0e6],
    "f_local": 1.0e9,
    "edge_cores_free": 2,
    "f_edge": 4.0e9,
    "f_cloud": 8.0e9,
    "snr": [1.0, 3.0],
    "subcarrier_free": [True, True],
    "rate_up": 8.0e6,
    "rate_down": 16.0e6,
    "backhaul_rate": 4.0e6,
    "cloud_delay": 0.25,
}
# Latency of each placement of HAND, worked out by hand from the SPEC formula:
#   move(D, a -> b) = D * K[a, b] + F[a, b];  K: 1/Ru = 1.25e-7, 1/Rd = 6.25e-8, 1/Rb = 2.5e-7;  tau = 0.25
#   compute: sub-task 0 takes 1, 0.25, 0.125 s; sub-task 1 takes 2, 0.5, 0.25 s (local, edge, cloud)
HAND_LATENCY = {
    (0, 0): 0 + 1 + 0 + 2 + 0,                                  # 3.0
    (0, 1): 0 + 1 + 4e6 / 8e6 + 0.5 + 2e6 / 16e6,               # 2.125
    (0, 2): 0 + 1 + (0.5 + 1 + 0.25) + 0.25 + (0.5 + 0.125 + 0.25),  # 3.875
    (1, 0): 1 + 0.25 + 0.25 + 2 + 0,                            # 3.5
    (1, 1): 1 + 0.25 + 0 + 0.5 + 0.125,                         # 1.875 (the optimum)
    (1, 2): 1 + 0.25 + (1 + 0.25) + 0.25 + 0.875,               # 3.625
    (2, 0): (1 + 2 + 0.25) + 0.125 + (1 + 0.25 + 0.25) + 2 + 0,  # 6.875
    (2, 1): 3.25 + 0.125 + (1 + 0.25) + 0.5 + 0.125,            # 5.25
    (2, 2): 3.25 + 0.125 + 0 + 0.25 + 0.875,                    # 4.5
}


def _hand_state(batch=1):
    dtypes = system.state_shapes(SystemConfig(tasks=2, subcarriers=2))
    return system.SystemState(**{k: jnp.asarray(np.broadcast_to(np.asarray(v, dtypes[k][1]),
                                                                (batch, *np.shape(v))))
                                 for k, v in HAND.items()})


N = 512
# Jitted once per shape: op-by-op execution would compile every primitive for every T.
STAGE_COSTS = jax.jit(cost.stage_costs)
LATENCY = jax.jit(cost.latency)
PATH_LATENCY = jax.jit(cost.path_latency)
EXPECTED_LATENCY = jax.jit(cost.expected_latency)
FIXED_SITE_LATENCY = jax.jit(cost.fixed_site_latency, static_argnums=1)
TRANSFER_MATRICES = jax.jit(cost.transfer_matrices)


@functools.cache
def _states(tasks):
    """N random states with `tasks` sub-tasks: the first sub-tasks of default states sampled with
    T = 8, with one sub-carrier kept (the cost model does not read them). test_solvers.py uses the
    same states and shapes, so the sampler and the jitted cost functions compile once for both."""
    full = system.sample(jax.random.key(0), SystemConfig(tasks=8), N)
    full = system.SystemState(*(np.asarray(a) for a in full))  # numpy: slicing compiles nothing
    return full._replace(cycles=full.cycles[:, :tasks], data_bits=full.data_bits[:, :tasks + 1],
                         snr=full.snr[:, :1], subcarrier_free=full.subcarrier_free[:, :1])


def test_transfer_matrices_match_spec_tables():
    k, f = (np.asarray(m)[0] for m in TRANSFER_MATRICES(_hand_state()))
    ru, rd, rb, tau = 8.0e6, 16.0e6, 4.0e6, 0.25
    expected_k = [[0, 1 / ru, 1 / ru + 1 / rb],
                  [1 / rd, 0, 1 / rb],
                  [1 / rb + 1 / rd, 1 / rb, 0]]
    expected_f = [[0, 0, tau], [0, 0, tau], [tau, tau, 0]]
    for a, b in itertools.product(range(3), repeat=2):
        np.testing.assert_allclose(k[a, b], expected_k[a][b], rtol=1e-6, err_msg=f"K[{a},{b}]")
        assert f[a, b] == expected_f[a][b], f"F[{a},{b}]"
    # And on random states, against the reference's copy of the SPEC tables.
    arrays = system.to_numpy(_states(3))
    k, f = (np.asarray(m) for m in TRANSFER_MATRICES(_states(3)))
    for i in range(5):
        ref_k, ref_f = spec_k_f(one_state(arrays, i))
        np.testing.assert_allclose(k[i], ref_k, rtol=1e-6)
        np.testing.assert_allclose(f[i], ref_f, rtol=1e-6)


def test_speeds_and_compute_times():
    state = _hand_state()
    np.testing.assert_array_equal(np.asarray(cost.speeds(state))[0], [1.0e9, 4.0e9, 8.0e9])
    np.testing.assert_allclose(np.asarray(cost.compute_times(state))[0], [[1, 0.25, 0.125], [2, 0.5, 0.25]])


def test_hand_computed_latency_of_a_t2_state():
    state = _hand_state(batch=9)
    xs = jnp.array(list(HAND_LATENCY), jnp.int32)
    got = np.asarray(LATENCY(state, xs))
    np.testing.assert_allclose(got, list(HAND_LATENCY.values()), rtol=1e-6)
    for x, value in HAND_LATENCY.items():  # the reference agrees with the hand computation
        assert spec_latency(HAND, x) == pytest.approx(value, rel=1e-12)
    costs = STAGE_COSTS(_hand_state())
    np.testing.assert_allclose(np.asarray(FIXED_SITE_LATENCY(costs, cost.LOCAL)), [3.0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(FIXED_SITE_LATENCY(costs, cost.EDGE)), [1.875], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(FIXED_SITE_LATENCY(costs, cost.CLOUD)), [4.5], rtol=1e-6)


def test_stage_cost_table_shapes():
    for tasks in (1, 2, 5):
        costs = STAGE_COSTS(_states(tasks))
        assert costs.first.shape == (N, 3)
        assert costs.step.shape == (N, tasks - 1, 3, 3)
        assert costs.last.shape == (N, 3)
        assert cost.num_tasks(costs) == tasks


@pytest.mark.parametrize("tasks", [1, 2, 3, 4, 5, 6])
def test_latency_equals_scalar_spec_reference(tasks):
    states = _states(tasks)
    arrays = system.to_numpy(states)
    rng = np.random.default_rng(tasks)
    xs = rng.integers(0, 3, size=(N, tasks))
    xs[:3] = np.arange(3)[:, None]  # rows 0, 1, 2: all-local, all-edge, all-cloud
    got = np.asarray(LATENCY(states, jnp.asarray(xs)))
    costs = STAGE_COSTS(states)
    # Not bit-equal: XLA rounds stage costs differently inside another program (see cost.py).
    via_costs = np.asarray(PATH_LATENCY(costs, jnp.asarray(xs)))
    np.testing.assert_allclose(got, via_costs, rtol=1e-6)
    ref = [spec_latency(one_state(arrays, i), xs[i]) for i in range(N)]
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    if tasks == 3:
        for site in range(3):
            assert np.asarray(FIXED_SITE_LATENCY(costs, site))[site] == via_costs[site]


def test_latency_broadcasts_over_extra_leading_axes():
    states = _states(3)
    xs = jnp.asarray(np.random.default_rng(0).integers(0, 3, size=(N, 3)))
    costs = STAGE_COSTS(states)
    flat = np.asarray(PATH_LATENCY(costs, xs))
    grid = jax.tree.map(lambda a: a.reshape(16, N // 16, *a.shape[1:]), costs)
    on_grid = np.asarray(PATH_LATENCY(grid, xs.reshape(16, N // 16, 3)))
    np.testing.assert_array_equal(on_grid.reshape(-1), flat)
    with pytest.raises(AssertionError):
        PATH_LATENCY(costs, xs[:, :2])  # wrong T is caught


@pytest.mark.parametrize("tasks", [1, 2, 3, 5])
def test_expected_latency_equals_brute_force_expectation(tasks):
    states = _states(tasks)
    arrays = system.to_numpy(states)
    logits = np.random.default_rng(tasks).normal(size=(N, tasks, 3)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    got = np.asarray(EXPECTED_LATENCY(STAGE_COSTS(states), jnp.asarray(probs, jnp.float32)))
    for i in range(4):
        ref = brute_force_expectation(one_state(arrays, i), probs[i])
        assert got[i] == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("tasks", [1, 2, 3, 6])
def test_expected_latency_of_one_hot_probs_is_exactly_path_latency(tasks):
    costs = STAGE_COSTS(_states(tasks))
    xs = jnp.asarray(np.random.default_rng(1).integers(0, 3, size=(N, tasks)))
    probs = jax.nn.one_hot(xs, 3, dtype=jnp.float32)
    np.testing.assert_array_equal(np.asarray(EXPECTED_LATENCY(costs, probs)),
                                  np.asarray(PATH_LATENCY(costs, xs)))
