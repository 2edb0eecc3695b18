"""Tests of the slow `dag` reference itself (tests/dag_reference.py): chain equivalence, hand-computed
schedules, baselines, padding, exhaustive labels and ties, greedy and local search, the test sampler."""

import itertools

import numpy as np
import pytest
from dag_reference import (
    all_local_baseline,
    all_objectives,
    brute_force_label,
    check_state,
    dag_state_from_chain,
    dispatch_order,
    greedy,
    is_real,
    local_search,
    objective,
    partial_objective,
    placement_from_index,
    placement_index,
    random_dag_state,
    schedule,
)
from reference import spec_latency

REL = 1e-12


def _state(cycles, adj_edges, in_bits, out_bits, *, f_local, rate_up, rate_down, f_edge, f_cloud,
           backhaul_rate, cloud_delay):
    """A state from per-user lists; adj_edges[u] = {(i, j): bits}. snr / subcarriers are dummies."""
    cycles = np.array(cycles, dtype=np.float64)
    u_n, t_n = cycles.shape
    adj = np.zeros((u_n, t_n, t_n), dtype=bool)
    eb = np.zeros((u_n, t_n, t_n))
    for u, edges in enumerate(adj_edges):
        for (i, j), bits in edges.items():
            adj[u, i, j] = True
            eb[u, i, j] = bits
    return {
        "cycles": cycles, "adj": adj, "edge_bits": eb,
        "in_bits": np.array(in_bits, dtype=np.float64), "out_bits": np.array(out_bits, dtype=np.float64),
        "f_local": np.array(f_local, dtype=np.float64), "rate_up": np.array(rate_up, dtype=np.float64),
        "rate_down": np.array(rate_down, dtype=np.float64),
        "snr": np.ones((u_n, 1)), "subcarrier_free": np.ones((u_n, 1), dtype=bool),
        "edge_cores_free": np.int32(1), "f_edge": np.float64(f_edge), "f_cloud": np.float64(f_cloud),
        "backhaul_rate": np.float64(backhaul_rate), "cloud_delay": np.float64(cloud_delay),
    }


def _pad(state, extra):
    """The same state with `extra` padding slots appended to every user."""
    out = dict(state)
    for k in ("cycles", "in_bits", "out_bits"):
        out[k] = np.pad(np.asarray(state[k]), ((0, 0), (0, extra)))
    for k in ("adj", "edge_bits"):
        out[k] = np.pad(np.asarray(state[k]), ((0, 0), (0, extra), (0, extra)))
    return out


# ------------------------------------------------------------------------------------------------
# (a) chain graph, U = 1, w_energy = 0: L equals the chain SPEC latency
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_chain_graph_matches_chain_latency_formula(seed):
    rng = np.random.default_rng(seed)
    t_n = 4
    rate_up = float(rng.uniform(2e6, 5e7))
    chain = {
        "cycles": np.exp(rng.uniform(np.log(5e7), np.log(2e9), t_n)).tolist(),
        "data_bits": np.exp(rng.uniform(np.log(4e5), np.log(4e7), t_n + 1)).tolist(),
        "f_local": float(rng.uniform(1e9, 4e9)),
        "f_edge": float(rng.integers(1, 9) * 2.5e9),
        "f_cloud": float(rng.uniform(2e10, 4e10)),
        "rate_up": rate_up,
        "rate_down": 2.0 * rate_up,
        "backhaul_rate": float(np.exp(rng.uniform(np.log(5e6), np.log(1e8)))),
        "cloud_delay": float(rng.uniform(0.02, 0.15)),
    }
    state = dag_state_from_chain(chain)
    check_state(state)
    w = {"w_latency": 1.0, "w_energy": 0.0}
    base_l, _ = all_local_baseline(state, w)
    values = all_objectives(state, w)
    for index, x in enumerate(itertools.product(range(3), repeat=t_n)):
        sched = schedule(state, np.array([x]), w)
        want = spec_latency(chain, x)
        assert sched["L"][0] == pytest.approx(want, rel=REL), x
        assert values[index] == pytest.approx(want / base_l[0], rel=REL), x
    # the label then minimizes the chain latency
    label, _ = brute_force_label(state, w)
    chain_values = [spec_latency(chain, x) for x in itertools.product(range(3), repeat=t_n)]
    assert spec_latency(chain, tuple(label[0])) == pytest.approx(min(chain_values), rel=REL)


# ------------------------------------------------------------------------------------------------
# (b) hand-computed cases
# ------------------------------------------------------------------------------------------------

# Case A: U=1, two independent sub-tasks (no edges). Ru = 1e6, Rd = 2e6, f_local = 1e8, f_edge = 1e9,
# f_cloud = 1e10, Rb = 1e7, tau = 0.1; cycles [5e8, 2e8]; in_bits [1e6, 1e5]; out_bits [2e6, 1e6].
CASE_A = _state([[5e8, 2e8]], [{}], [[1e6, 1e5]], [[2e6, 1e6]], f_local=[1e8], rate_up=[1e6],
                rate_down=[2e6], f_edge=1e9, f_cloud=1e10, backhaul_rate=1e7, cloud_delay=0.1)
W_A = {"w_latency": 1.0, "w_energy": 1.0, "kappa": 1e-24, "p_tx": 1.0, "p_rx": 0.5}


def test_hand_case_a_both_on_edge_uplink_edge_downlink_contention():
    # x = [1, 1]
    # t0: uplink [0, 1] (1e6/1e6); ready 1; edge [1, 1.5] (5e8/1e9); downlink [1.5, 2.5] (2e6/2e6)
    # t1: uplink waits: [max(0, 1) = 1, 1.1] (1e5/1e6); ready 1.1; edge waits: [max(1.1, 1.5) = 1.5, 1.7]
    #     downlink waits: [max(1.7, 2.5) = 2.5, 3.0] (1e6/2e6)
    # L = 3.0;  E = p_tx (1 + 0.1) + p_rx (1 + 0.5) = 1.1 + 0.75 = 1.85
    # L(0) = (5e8 + 2e8)/1e8 = 7;  E(0) = 1e-24 * (1e8)^2 * 7e8 = 7;  J = 3/7 + 1.85/7
    sched = schedule(CASE_A, [[1, 1]], W_A)
    assert sched["ready"][0] == pytest.approx([1.0, 1.1], rel=REL)
    assert sched["start"][0] == pytest.approx([1.0, 1.5], rel=REL)
    assert sched["finish"][0] == pytest.approx([1.5, 1.7], rel=REL)
    assert sched["out_arrival"][0] == pytest.approx([2.5, 3.0], rel=REL)
    up = [v for b, e, _, _ in sched["uplink"][0] for v in (b, e)]
    down = [v for b, e, _, _ in sched["downlink"][0] for v in (b, e)]
    assert up == pytest.approx([0.0, 1.0, 1.0, 1.1], rel=REL)
    assert down == pytest.approx([1.5, 2.5, 2.5, 3.0], rel=REL)
    assert sched["L"] == pytest.approx([3.0], rel=REL)
    assert sched["E"] == pytest.approx([1.85], rel=REL)
    assert sched["uplink_time"] == pytest.approx([1.1], rel=REL)
    assert sched["downlink_time"] == pytest.approx([1.5], rel=REL)
    j, lat, en = objective(CASE_A, [[1, 1]], W_A)
    assert j == pytest.approx(3.0 / 7 + 1.85 / 7, rel=REL)
    assert lat == pytest.approx([3.0], rel=REL) and en == pytest.approx([1.85], rel=REL)


def test_hand_case_a_cloud_and_local():
    # x = [2, 0]
    # t0 (cloud): uplink [0, 1]; backhaul 1e6/1e7 + 0.1 = 0.2 -> ready 1.2; finish 1.2 + 5e8/1e10 = 1.25;
    #     back: backhaul 2e6/1e7 + 0.1 = 0.3 -> 1.55; downlink [1.55, 2.55]
    # t1 (local): in_bits local -> local arrive at 0, no resource; [0, 2e8/1e8 = 2]; out arrives at 2
    # L = 2.55;  E = 1e-24 * 1e16 * 2e8 + 1 * 1 + 0.5 * 1 = 2 + 1 + 0.5 = 3.5
    sched = schedule(CASE_A, [[2, 0]], W_A)
    assert sched["finish"][0] == pytest.approx([1.25, 2.0], rel=REL)
    assert sched["out_arrival"][0] == pytest.approx([2.55, 2.0], rel=REL)
    assert len(sched["uplink"][0]) == 1 and len(sched["downlink"][0]) == 1
    assert sched["L"] == pytest.approx([2.55], rel=REL)
    assert sched["E"] == pytest.approx([3.5], rel=REL)


# Case B: U=1, a join 0 -> 2 <- 1. Ru = 1e6, Rd = 2e6, Rb = 1e6, tau = 0.5, f_local = 1e9, f_edge = 2e9,
# f_cloud = 4e9; cycles [1e9, 2e9, 4e9]; in_bits [1e6, 2e6, 0]; out_bits [0, 0, 1e6];
# edge_bits 0->2 = 2e6, 1->2 = 1e6.
CASE_B = _state([[1e9, 2e9, 4e9]], [{(0, 2): 2e6, (1, 2): 1e6}], [[1e6, 2e6, 0]], [[0, 0, 1e6]],
                f_local=[1e9], rate_up=[1e6], rate_down=[2e6], f_edge=2e9, f_cloud=4e9, backhaul_rate=1e6,
                cloud_delay=0.5)
W_B = {"w_latency": 1.0, "w_energy": 1.0, "kappa": 1e-27, "p_tx": 1.0, "p_rx": 2.0}


def test_hand_case_b_join_across_three_sites():
    # x = [0, 1, 2]
    # t0 (local): input local -> local, nothing moves; [0, 1]
    # t1 (edge): uplink [0, 2] (2e6/1e6); edge [2, 3]
    # t2 (cloud): from t0 (local) at 1: uplink waits [max(1, 2) = 2, 4], backhaul 2 + 0.5 -> 6.5;
    #             from t1 (edge) at 3: backhaul 1 + 0.5 -> 4.5;  ready 6.5;  [6.5, 7.5]
    #             back: backhaul 1.5 -> 9.0, downlink [9.0, 9.5]
    # L = 9.5;  E = 1e-27 * 1e18 * 1e9 + 1 * (2 + 2) + 2 * 0.5 = 1 + 4 + 1 = 6
    # L(0) = 7 (t2 ready at 3, local free at 3), E(0) = 7;  J = 9.5/7 + 6/7
    sched = schedule(CASE_B, [[0, 1, 2]], W_B)
    assert sched["ready"][0] == pytest.approx([0.0, 2.0, 6.5], rel=REL)
    assert sched["finish"][0] == pytest.approx([1.0, 3.0, 7.5], rel=REL)
    assert sched["out_arrival"][0][2] == pytest.approx(9.5, rel=REL)
    assert sched["L"] == pytest.approx([9.5], rel=REL)
    assert sched["E"] == pytest.approx([6.0], rel=REL)
    base_l, base_e = all_local_baseline(CASE_B, W_B)
    assert base_l == pytest.approx([7.0], rel=REL) and base_e == pytest.approx([7.0], rel=REL)
    assert objective(CASE_B, [[0, 1, 2]], W_B)[0] == pytest.approx(15.5 / 7, rel=REL)


# Case C: U=2, T=2, shared edge, t-major dispatch, a padding slot. User 0: 0 -> 1 (1e6 bits),
# cycles [1e9, 1e9], in [1e6, 0], out [0, 2e6], Ru 1e6, Rd 2e6, f_local 1e9. User 1: one sub-task,
# cycles [2e8, pad], in [1e6, 0], out [4e6, 0], Ru 2e6, Rd 4e6, f_local 2e9. f_edge = 1e9.
CASE_C = _state([[1e9, 1e9], [2e8, 0.0]], [{(0, 1): 1e6}, {}], [[1e6, 0], [1e6, 0]], [[0, 2e6], [4e6, 0]],
                f_local=[1e9, 2e9], rate_up=[1e6, 2e6], rate_down=[2e6, 4e6], f_edge=1e9, f_cloud=1e10,
                backhaul_rate=1e7, cloud_delay=0.1)
W_C = {"w_latency": 1.0, "w_energy": 1.0, "kappa": 1e-27, "p_tx": 1.0, "p_rx": 1.0}


@pytest.mark.parametrize("pad_site", [0, 1, 2])
def test_hand_case_c_two_users_share_the_edge_in_dispatch_order(pad_site):
    # dispatch order: (u0,t0), (u1,t0), (u0,t1); (u1,t1) is padding
    # (u0,t0): uplink0 [0, 1]; edge [1, 2]
    # (u1,t0): uplink1 [0, 0.5]; ready 0.5; the edge is idle in [0, 1) and the task (0.2 s) would fit there,
    #          but no use fills an earlier gap: edge [max(0.5, 2) = 2, 2.2]; downlink1 [2.2, 3.2] (4e6/4e6)
    # (u0,t1): input edge -> edge arrives at 2; edge [max(2, 2.2) = 2.2, 3.2]; downlink0 [3.2, 4.2] (2e6/2e6)
    # L = [4.2, 3.2];  E0 = 1 + 1 = 2, E1 = 0.5 + 1 = 1.5
    # L(0) = [2, 0.1], E(0) = [1e-27 * 1e18 * 2e9 = 2, 1e-27 * 4e18 * 2e8 = 0.8]
    # J = ((4.2/2 + 2/2) + (3.2/0.1 + 1.5/0.8)) / 2 = (3.1 + 33.875) / 2 = 18.4875
    x = [[1, 1], [1, pad_site]]
    assert dispatch_order(CASE_C) == [(0, 0), (1, 0), (0, 1)]
    sched = schedule(CASE_C, x, W_C)
    assert sched["edge"] == [(0, 0, 1.0, 2.0), (1, 0, 2.0, pytest.approx(2.2, rel=REL)),
                             (0, 1, pytest.approx(2.2, rel=REL), pytest.approx(3.2, rel=REL))]
    assert sched["finish"][1][1] is None
    assert sched["L"] == pytest.approx([4.2, 3.2], rel=REL)
    assert sched["E"] == pytest.approx([2.0, 1.5], rel=REL)
    base_l, base_e = all_local_baseline(CASE_C, W_C)
    assert base_l == pytest.approx([2.0, 0.1], rel=REL) and base_e == pytest.approx([2.0, 0.8], rel=REL)
    assert objective(CASE_C, x, W_C)[0] == pytest.approx(18.4875, rel=REL)


# Case D: moves of one sub-task's inputs are reserved in increasing predecessor order, even when a later
# one could start earlier. U=1, T=3, 0 -> 2 and 1 -> 2 (1e6 bits each); in [1e6, 1e6, 0]; out [0, 0, 1e6];
# Ru = Rd = Rb = 1e7, tau = 0.5, f_local = f_edge = f_cloud = 1e9, cycles [2e9, 1e8, 1e8].
CASE_D = _state([[2e9, 1e8, 1e8]], [{(0, 2): 1e6, (1, 2): 1e6}], [[1e6, 1e6, 0]], [[0, 0, 1e6]],
                f_local=[1e9], rate_up=[1e7], rate_down=[1e7], f_edge=1e9, f_cloud=1e9, backhaul_rate=1e7,
                cloud_delay=0.5)


def test_hand_case_d_predecessor_moves_reserved_in_increasing_i():
    # x = [2, 1, 0]
    # t0 (cloud): uplink [0, 0.1]; backhaul 0.1 + 0.5 -> ready 0.7; [0.7, 2.7]
    # t1 (edge): uplink [0.1, 0.2]; ready 0.2; edge [0.2, 0.3]
    # t2 (local): from t0 first: backhaul from 2.7 -> 3.3, downlink [3.3, 3.4];
    #             then from t1 (ready to send at 0.3, the downlink idle until 3.3, but no gap filling):
    #             downlink [max(0.3, 3.4) = 3.4, 3.5];  ready 3.5;  local [3.5, 3.6];  out local -> local: 3.6
    # L = 3.6;  E = 1e-27 * 1e18 * 1e8 + 1 * (0.1 + 0.1) + 1 * (0.1 + 0.1) = 0.5
    w = {"kappa": 1e-27, "p_tx": 1.0, "p_rx": 1.0}
    sched = schedule(CASE_D, [[2, 1, 0]], w)
    assert sched["finish"][0] == pytest.approx([2.7, 0.3, 3.6], rel=REL)
    assert sched["ready"][0][2] == pytest.approx(3.5, rel=REL)
    down = [v for b, e, _, _ in sched["downlink"][0] for v in (b, e)]
    assert down == pytest.approx([3.3, 3.4, 3.4, 3.5], rel=REL)
    assert sched["L"] == pytest.approx([3.6], rel=REL)
    assert sched["E"] == pytest.approx([0.5], rel=REL)


def test_user_without_real_subtask_has_zero_latency_energy_and_term():
    state = dict(CASE_C)
    state["cycles"] = np.array([[1e9, 1e9], [0.0, 0.0]])
    state["in_bits"] = np.array([[1e6, 0], [0, 0]])
    state["out_bits"] = np.array([[0, 2e6], [0, 0]])
    check_state(state)
    sched = schedule(state, [[1, 1], [2, 2]], W_C)
    assert sched["L"][1] == 0.0 and sched["E"][1] == 0.0
    # user 0 alone on the edge: uplink [0, 1], edge [1, 2], [2, 3], downlink [3, 4]; E = 1 + 1
    j, lat, en = objective(state, [[1, 1], [0, 0]], W_C)
    assert lat == pytest.approx([4.0, 0.0], rel=REL) and en == pytest.approx([2.0, 0.0], rel=REL)
    assert j == pytest.approx((4.0 / 2 + 2.0 / 2 + 0.0) / 2, rel=REL)


def test_zero_weight_terms_are_not_evaluated():
    # kappa = 0 makes E(0) = 0; with w_energy = 0 the energy term is 0, not nan
    w = {"w_latency": 1.0, "w_energy": 0.0, "kappa": 0.0}
    j, _, _ = objective(CASE_A, [[1, 1]], w)
    assert j == pytest.approx(3.0 / 7, rel=REL)
    j, _, _ = objective(CASE_A, [[1, 1]], {"w_latency": 0.0, "w_energy": 1.0, "kappa": 0.0})
    assert j == np.inf


# ------------------------------------------------------------------------------------------------
# (c) all-local baselines
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
def test_all_local_baseline_is_sum_of_cycles(seed):
    rng = np.random.default_rng(100 + seed)
    state = random_dag_state(rng, 3, 5, 4, padding=True, params={"edge_prob": 0.6})
    w = {"kappa": 1e-27}
    base_l, base_e = all_local_baseline(state, w)
    cycles = np.asarray(state["cycles"])
    f_local = np.asarray(state["f_local"])
    for u in range(3):
        assert base_l[u] == pytest.approx(cycles[u].sum() / f_local[u], rel=REL)
        assert base_e[u] == pytest.approx(1e-27 * f_local[u] ** 2 * cycles[u].sum(), rel=REL)
    sched = schedule(state, np.zeros((3, 5), int), w)
    assert sched["uplink_time"] == [0.0] * 3 and sched["downlink_time"] == [0.0] * 3


# ------------------------------------------------------------------------------------------------
# (d) padding does not change J
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(4))
def test_padding_slots_do_not_change_objective(seed):
    rng = np.random.default_rng(200 + seed)
    w = {"w_latency": 1.0, "w_energy": 0.7}
    state = random_dag_state(rng, 2, 3, 3, params={"edge_prob": 0.5})
    padded = _pad(state, 2)
    check_state(padded)
    for _ in range(20):
        x = rng.integers(0, 3, (2, 3))
        xp = np.concatenate([x, rng.integers(0, 3, (2, 2))], axis=1)
        j, lat, en = objective(state, x, w)
        jp, latp, enp = objective(padded, xp, w)
        assert (jp, latp, enp) == (j, lat, en)
        for k in range(len(dispatch_order(state)) + 1):
            assert partial_objective(padded, xp, w, k)[0] == partial_objective(state, x, w, k)[0]


def test_padding_label_is_zero_and_real_part_unchanged():
    rng = np.random.default_rng(7)
    w = {"w_latency": 1.0, "w_energy": 0.3}
    state = random_dag_state(rng, 2, 2, 2, params={"edge_prob": 1.0})
    padded = _pad(state, 1)
    label, j = brute_force_label(state, w)
    label_p, j_p = brute_force_label(padded, w)
    assert j_p == j
    assert np.array_equal(label_p[:, :2], label) and not label_p[:, 2:].any()


# ------------------------------------------------------------------------------------------------
# (e) exhaustive label
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(3))
def test_brute_force_agrees_with_direct_loop(seed):
    rng = np.random.default_rng(300 + seed)
    w = {"w_latency": 1.0, "w_energy": 0.5}
    state = random_dag_state(rng, 2, 2, 3, params={"edge_prob": 0.7})
    best_x, best_j, values = None, np.inf, []
    for flat in itertools.product(range(3), repeat=4):
        x = np.array(flat).reshape(2, 2)  # user-major: x[0,0], x[0,1], x[1,0], x[1,1]
        j = objective(state, x, w)[0]
        values.append(j)
        if j < best_j:
            best_x, best_j = x, j
    label, j = brute_force_label(state, w)
    assert np.array_equal(label, best_x) and j == best_j
    assert label.dtype == np.int8 and label.shape == (2, 2)
    assert np.array_equal(all_objectives(state, w), np.array(values))
    for i in (0, 5, 80):
        assert placement_index(placement_from_index(i, 2, 2)) == i
    assert np.array_equal(placement_from_index(5, 2, 2), [[0, 0], [1, 2]])


# Tie: sub-task 0 must run locally (its input takes 1000 s to upload) and takes 10 s there; sub-task 1
# is tiny.
# On the edge or in the cloud it is done long before 10 s and, both ways, moves the same bits over the same
# links, so latency (10, exactly t0's finish) and energy are identical: J(0,1) == J(0,2) exactly. Locally it
# waits behind sub-task 0 and ends at 10.001. The label is the lexicographically smaller (0, 1).
TIE = _state([[1e10, 1e6]], [{}], [[1e9, 1e3]], [[1e3, 1e3]], f_local=[1e9], rate_up=[1e6],
             rate_down=[2e6], f_edge=2e10, f_cloud=4e10, backhaul_rate=1e8, cloud_delay=0.05)


@pytest.mark.parametrize("w_energy", [0.0, 1.0])
def test_exact_tie_goes_to_lexicographically_smallest(w_energy):
    w = {"w_latency": 1.0, "w_energy": w_energy}
    values = all_objectives(TIE, w)
    assert values[1] == values[2]
    assert values[0] > values[1]
    assert values.min() == values[1]
    label, j = brute_force_label(TIE, w)
    assert label.tolist() == [[0, 1]] and j == values[1]


def test_tie_two_users_label_is_smallest_of_argmin_set():
    two = {k: (np.concatenate([v, v]) if np.ndim(v) >= 1 else v) for k, v in TIE.items()}
    w = {"w_latency": 1.0, "w_energy": 1.0}
    values = all_objectives(two, w)
    argmins = np.flatnonzero(values == values.min())
    assert len(argmins) == 4  # x[0,1], x[1,1] in {1, 2} each, the edge has room for both
    label, _ = brute_force_label(two, w)
    assert placement_index(label) == argmins[0]
    assert label.tolist() == [[0, 1], [0, 1]]


# ------------------------------------------------------------------------------------------------
# partial schedules
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(4))
def test_partial_schedule_is_prefix_of_full_schedule(seed):
    rng = np.random.default_rng(400 + seed)
    w = {"w_latency": 1.0, "w_energy": 0.5}
    state = random_dag_state(rng, 3, 4, 2, padding=True, params={"edge_prob": 0.5})
    order = dispatch_order(state)
    for _ in range(5):
        x = rng.integers(0, 3, (3, 4))
        full = schedule(state, x, w)
        for k in range(len(order) + 1):
            part = schedule(state, x, w, dispatched=k)
            for u, t in order[:k]:
                assert part["finish"][u][t] == full["finish"][u][t]
                assert part["out_arrival"][u][t] == full["out_arrival"][u][t]
            for u, t in order[k:]:
                assert part["finish"][u][t] is None
        assert partial_objective(state, x, w, len(order)) == objective(state, x, w)
        assert partial_objective(state, x, w, 0)[0] == 0.0


# ------------------------------------------------------------------------------------------------
# (f) greedy, local search, sampler
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(4))
def test_greedy_and_local_search(seed):
    rng = np.random.default_rng(500 + seed)
    w = {"w_latency": 1.0, "w_energy": 0.5 * seed}
    state = random_dag_state(rng, 2, 3, 3, padding=seed % 2 == 1, params={"edge_prob": 0.5})
    check_state(state)
    real = is_real(state)
    g = greedy(state, w)
    assert g.shape == (2, 3) and g.dtype == np.int8 and set(np.unique(g)) <= {0, 1, 2}
    assert not g[~real].any()
    # the greedy's first decision: the site minimizing J over the first sub-task alone
    (u, t), *_ = dispatch_order(state)
    firsts = []
    for site in range(3):
        x = np.zeros((2, 3), int)
        x[u, t] = site
        firsts.append(partial_objective(state, x, w, 1)[0])
    assert g[u, t] == int(np.argmin(firsts))
    ls = local_search(state, w, g)
    assert ls.shape == (2, 3) and ls.dtype == np.int8 and not ls[~real].any()
    j_g, j_ls = objective(state, g, w)[0], objective(state, ls, w)[0]
    label, j_opt = brute_force_label(state, w)
    assert j_opt <= j_ls <= j_g
    # a local minimum: no single change of a real sub-task lowers J
    for u, t in zip(*np.nonzero(real), strict=True):
        for site in range(3):
            x = ls.copy()
            x[u, t] = site
            assert objective(state, x, w)[0] >= j_ls
    # from the optimum, local search stays there
    assert np.array_equal(local_search(state, w, label), label)


def test_greedy_on_single_subtask_is_optimal():
    w = {"w_latency": 1.0, "w_energy": 0.0}
    state = _state([[1e9]], [{}], [[1e6]], [[1e6]], f_local=[1e9], rate_up=[1e7], rate_down=[2e7],
                   f_edge=1e10, f_cloud=4e10, backhaul_rate=1e8, cloud_delay=0.05)
    assert np.array_equal(greedy(state, w), brute_force_label(state, w)[0])


@pytest.mark.parametrize("seed", range(10))
def test_check_state_accepts_random_states(seed):
    rng = np.random.default_rng(600 + seed)
    state = random_dag_state(rng, 1 + seed % 3, 1 + seed, 1 + seed % 4, padding=seed % 2 == 0,
                             min_tasks=seed % 2, dtype=np.float32 if seed % 3 == 0 else np.float64)
    check_state(state, edge_core_hz=2.5e9, subcarrier_bandwidth=1e6, downlink_factor=2.0)


def test_check_state_rejects_broken_states():
    rng = np.random.default_rng(1)
    good = random_dag_state(rng, 2, 4, 2, params={"edge_prob": 1.0})
    check_state(good)
    breakers = {
        "backward edge": lambda s: s["adj"].__setitem__((0, 2, 1), True),
        "edge bits without edge": lambda s: s["edge_bits"].__setitem__((0, 0, 0), 1.0),
        "in_bits on a sub-task with predecessor": lambda s: s["in_bits"].__setitem__((0, 3), 1.0),
        "missing out_bits": lambda s: s["out_bits"].__setitem__((1, 3), 0.0),
        "padding before a real slot": lambda s: s["cycles"].__setitem__((0, 1), 0.0),
        "no free sub-carrier": lambda s: s["subcarrier_free"].__setitem__((1, slice(None)), False),
        "wrong shape": lambda s: s.__setitem__("f_local", np.ones(3)),
    }
    for name, breaker in breakers.items():
        bad = {k: np.array(v, copy=True) for k, v in good.items()}
        breaker(bad)
        with pytest.raises(AssertionError):
            check_state(bad)
            pytest.fail(f"check_state accepted: {name}")
    with pytest.raises(AssertionError):
        check_state(good, edge_core_hz=1.0)


def test_random_states_make_every_site_optimal_somewhere():
    rng = np.random.default_rng(9)
    counts = np.zeros(3, int)
    for _ in range(30):
        state = random_dag_state(rng, 1, 3, 4)
        label, _ = brute_force_label(state, {"w_latency": 1.0, "w_energy": 0.0})
        counts += np.bincount(label.reshape(-1), minlength=3)
    assert (counts > 0).all(), counts
