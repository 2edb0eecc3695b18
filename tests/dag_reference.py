"""Slow, obvious reference of the SPEC's scenario `dag` (task graphs, several users, energy).

Written straight from the text of SPEC.md ("Scenario `dag`"), in plain Python floats (float64)
with numpy only for building and checking arrays, so the fast JAX code can be tested against it.
It deliberately imports no JAX and was written without looking at any JAX implementation of the
scenario.

A state is a dict of numpy arrays (or nested lists) for ONE sample, with the SPEC's keys:
cycles (U,T), adj (U,T,T) bool, edge_bits (U,T,T), in_bits (U,T), out_bits (U,T), f_local (U,),
rate_up (U,), rate_down (U,), snr (U,N), subcarrier_free (U,N), edge_cores_free (), f_edge (),
f_cloud (), backhaul_rate (), cloud_delay (). A placement x is a (U,T) array of ints in {0,1,2}
(0 local, 1 edge, 2 cloud). Weights are a dict with keys w_latency, w_energy, kappa, p_tx, p_rx
(missing keys take the SPEC's `dag` defaults, `DAG_WEIGHT_DEFAULTS`).

Readings of the SPEC text fixed here (the fast code is held to them):
- A slot is real iff cycles[u,t] > 0; padding slots (cycles == 0) are skipped by the schedule:
  no finish time, no resource, no energy, whatever their site.
- Dispatch order: t outer, u inner: (t=0,u=0), (t=0,u=1), ..., (t=1,u=0), ...; steps 1-3 of a
  sub-task are all reserved before the next one is dispatched. Within step 1 the in_bits move is
  reserved first, then one move per predecessor in increasing i.
- Every resource keeps one `free_at` (per user: local processor, uplink, downlink; shared: the
  edge processor); a use begins at max(the time it could begin, free_at) and sets free_at to its
  end; no use ever fills an earlier idle gap. Cloud processors and the backhaul are uncontended.
- A move of D bits from a to b starting at t0: if D == 0 or a == b it arrives at t0 and uses
  nothing; otherwise hop by hop: uplink if a is local, then backhaul (D / backhaul_rate +
  cloud_delay) if a or b is the cloud, then downlink if b is local.
- L_u = the latest of u's finish times and of u's step-3 arrivals (0 if u has no real sub-task).
- E_u = kappa * f_local[u]^2 * (sum of cycles of u's real sub-tasks placed local)
        + p_tx * (sum over u's uplink uses of D / rate_up[u])
        + p_rx * (sum over u's downlink uses of D / rate_down[u]);
  a "duration of a transmission" is D / rate, waiting for the link is not transmitting.
- J = (sum over users u = 0..U-1 of [w_latency * L_u(x) / L_u(0) + w_energy * E_u(x) / E_u(0)]) / U.
  Division conventions (the SPEC leaves them open): a term whose weight is 0 contributes exactly 0
  (it is not evaluated, so kappa = 0 with w_energy = 0 is fine); 0 / 0 = 0 (a user with no real
  sub-task contributes 0 but still counts in the mean's U); a positive number / 0 = inf.
- Partial schedules (the greedy): only the first k real sub-tasks in dispatch order are reserved.
  Because reservations are made in dispatch order and never fill gaps, this is exactly the prefix
  of the full schedule. L_u of a partial schedule is the latest finish / step-3 arrival of u's
  dispatched sub-tasks (0 if none), E_u the energy of u's dispatched sub-tasks (their local cycles
  and the transmissions reserved for them); both are normalized by the FULL all-local L_u(0), E_u(0)
  and J is still the mean over all U users.
- Ties: the label is the first minimum of J over placements in lexicographic order of x flattened
  user-major; the greedy's ties go to the lowest label; local search takes the first best move. All
  comparisons are exact float64 comparisons.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

LOCAL, EDGE, CLOUD = 0, 1, 2

DAG_WEIGHT_DEFAULTS = {"w_latency": 1.0, "w_energy": 0.0, "kappa": 1.0e-27, "p_tx": 1.258, "p_rx": 1.181}

# Magnitudes for `random_dag_state` (test data, not the SPEC's calibrated defaults).
DAG_TEST_PARAMS = {
    "cycles_range": (1.0e8, 2.0e9),  # log-uniform
    "edge_bits_range": (1.0e5, 1.0e7),  # log-uniform
    "io_bits_range": (1.0e5, 1.0e7),  # log-uniform
    "f_local_range": (1.0e9, 4.0e9),  # uniform
    "edge_cores": 8,  # edge_cores_free uniform integer in [1, edge_cores]
    "edge_core_hz": 2.5e9,
    "f_cloud_range": (2.0e10, 4.0e10),  # uniform
    "subcarrier_bandwidth": 1.0e6,
    "subcarrier_free_prob": 0.5,
    "mean_snr_db_range": (0.0, 20.0),  # uniform, one per user
    "downlink_factor": 2.0,
    "backhaul_rate_range": (5.0e6, 1.0e8),  # log-uniform
    "cloud_delay_range": (0.02, 0.15),  # uniform
    "edge_prob": 0.4,  # probability of each edge i -> j, i < j, between real sub-tasks
}

STATE_KEYS = ("cycles", "adj", "edge_bits", "in_bits", "out_bits", "f_local", "rate_up", "rate_down",
              "snr", "subcarrier_free", "edge_cores_free", "f_edge", "f_cloud", "backhaul_rate",
              "cloud_delay")


# --------------------------------------------------------------------------------------------------
# Plain-Python views of a state and a placement
# --------------------------------------------------------------------------------------------------

def _plain(state: dict) -> dict:
    """The state as nested Python lists of floats (adj as bools), scalars as floats."""
    s = {}
    for name in ("cycles", "edge_bits", "in_bits", "out_bits", "f_local", "rate_up", "rate_down"):
        s[name] = np.asarray(state[name], dtype=np.float64).tolist()
    s["adj"] = np.asarray(state["adj"], dtype=bool).tolist()
    for name in ("f_edge", "f_cloud", "backhaul_rate", "cloud_delay"):
        s[name] = float(np.asarray(state[name], dtype=np.float64))
    s["U"] = len(s["cycles"])
    s["T"] = len(s["cycles"][0]) if s["U"] else 0
    return s


def _placement(x, n_users: int, n_tasks: int) -> list[list[int]]:
    arr = np.asarray(x)
    if arr.shape != (n_users, n_tasks):
        raise ValueError(f"placement has shape {arr.shape}, expected {(n_users, n_tasks)}")
    out = [[int(v) for v in row] for row in arr.tolist()]
    for row in out:
        for v in row:
            if v not in (LOCAL, EDGE, CLOUD):
                raise ValueError(f"placement entries must be 0, 1 or 2, got {v}")
    return out


def _weights(w: dict | None) -> dict:
    out = dict(DAG_WEIGHT_DEFAULTS)
    if w:
        unknown = set(w) - set(out)
        if unknown:
            raise ValueError(f"unknown weight keys {sorted(unknown)}")
        out.update({k: float(v) for k, v in w.items()})
    return out


def is_real(state: dict) -> np.ndarray:
    """(U,T) bool: the real sub-tasks (cycles > 0); the others are padding."""
    return np.asarray(state["cycles"], dtype=np.float64) > 0


def dispatch_order(state: dict) -> list[tuple[int, int]]:
    """The real sub-tasks (u, t) in the SPEC's dispatch order: t outer, u inner, padding skipped."""
    cycles = np.asarray(state["cycles"], dtype=np.float64)
    n_users, n_tasks = cycles.shape
    return [(u, t) for t in range(n_tasks) for u in range(n_users) if cycles[u, t] > 0]


def sample(batch: dict, i: int) -> dict:
    """State i of a batch (a dict of arrays with a leading sample axis), as numpy arrays."""
    return {name: np.asarray(value)[i] for name, value in batch.items() if name in STATE_KEYS}


# --------------------------------------------------------------------------------------------------
# The schedule
# --------------------------------------------------------------------------------------------------

def schedule(state: dict, x, w: dict | None = None, *, dispatched: int | None = None) -> dict:
    """The SPEC's fixed-priority list schedule of placement x (U,T) for one state.

    `w` supplies kappa, p_tx, p_rx for the energy (SPEC defaults when omitted). With `dispatched`
    = k only the first k real sub-tasks in dispatch order are reserved (a prefix of the full
    schedule, see the module docstring); None means all of them.

    Returns a dict with (lists indexed [u] or [u][t]; None for padding or undispatched slots):
      L, E                       per-user latency and device energy (floats; 0 for a user with none)
      finish, start, ready       per sub-task times
      out_arrival                arrival at the device of the step-3 move (finish if none is needed)
      local_cycles               per user, cycles of dispatched real sub-tasks placed local
      uplink_time, downlink_time per user, sum of the durations D / rate of its link transmissions
      uplink, downlink           per user, list of (begin, end, bits, (u, t)) in reservation order
      edge                       list of (u, t, start, finish) on the shared edge processor
      local                      per user, list of (t, start, finish) on its processor
      order                      the dispatched (u, t) in dispatch order
      free_at                    final free_at of every contended resource
    """
    s = _plain(state)
    w = _weights(w)
    n_users, n_tasks = s["U"], s["T"]
    x = _placement(x, n_users, n_tasks)
    order = dispatch_order(state)
    if dispatched is not None:
        if not 0 <= dispatched <= len(order):
            raise ValueError(f"dispatched={dispatched} outside [0, {len(order)}]")
        order = order[:dispatched]

    def speed(u: int, site: int) -> float:
        return (s["f_local"][u], s["f_edge"], s["f_cloud"])[site]

    # free_at of every contended resource, 0 at the start.
    free_local = [0.0] * n_users
    free_up = [0.0] * n_users
    free_down = [0.0] * n_users
    free_edge = 0.0

    uplink = [[] for _ in range(n_users)]
    downlink = [[] for _ in range(n_users)]
    edge_log = []
    local_log = [[] for _ in range(n_users)]
    uplink_time = [0.0] * n_users
    downlink_time = [0.0] * n_users

    def move(u: int, bits: float, a: int, b: int, t0: float, owner: tuple[int, int]) -> float:
        """Move `bits` of user u from site a to site b starting at t0; returns the arrival time."""
        if bits == 0 or a == b:
            return t0
        arrival = t0
        if a == LOCAL:  # the uplink
            begin = max(arrival, free_up[u])
            duration = bits / s["rate_up"][u]
            end = begin + duration
            free_up[u] = end
            uplink[u].append((begin, end, bits, owner))
            uplink_time[u] += duration
            arrival = end
        if a == CLOUD or b == CLOUD:  # the backhaul, no contention
            arrival = arrival + (bits / s["backhaul_rate"] + s["cloud_delay"])
        if b == LOCAL:  # the downlink
            begin = max(arrival, free_down[u])
            duration = bits / s["rate_down"][u]
            end = begin + duration
            free_down[u] = end
            downlink[u].append((begin, end, bits, owner))
            downlink_time[u] += duration
            arrival = end
        return arrival

    finish = [[None] * n_tasks for _ in range(n_users)]
    start = [[None] * n_tasks for _ in range(n_users)]
    ready = [[None] * n_tasks for _ in range(n_users)]
    out_arrival = [[None] * n_tasks for _ in range(n_users)]
    local_cycles = [0.0] * n_users

    for u, t in order:
        site = x[u][t]
        # Step 1: inputs.
        arrivals = []
        if s["in_bits"][u][t] > 0:
            arrivals.append(move(u, s["in_bits"][u][t], LOCAL, site, 0.0, (u, t)))
        for i in range(n_tasks):
            if not s["adj"][u][i][t]:
                continue
            if i >= t:
                raise ValueError(f"adj[{u},{i},{t}] is set but only i < j is allowed")
            if finish[u][i] is None:
                raise ValueError(f"sub-task ({u},{t}) needs ({u},{i}), which has not been scheduled")
            arrivals.append(move(u, s["edge_bits"][u][i][t], x[u][i], site, finish[u][i], (u, t)))
        ready[u][t] = max(arrivals) if arrivals else 0.0
        # Step 2: compute.
        if site == LOCAL:
            start[u][t] = max(ready[u][t], free_local[u])
        elif site == EDGE:
            start[u][t] = max(ready[u][t], free_edge)
        else:
            start[u][t] = ready[u][t]
        finish[u][t] = start[u][t] + s["cycles"][u][t] / speed(u, site)
        if site == LOCAL:
            free_local[u] = finish[u][t]
            local_log[u].append((t, start[u][t], finish[u][t]))
            local_cycles[u] += s["cycles"][u][t]
        elif site == EDGE:
            free_edge = finish[u][t]
            edge_log.append((u, t, start[u][t], finish[u][t]))
        # Step 3: the result back to the device.
        if s["out_bits"][u][t] > 0:
            out_arrival[u][t] = move(u, s["out_bits"][u][t], site, LOCAL, finish[u][t], (u, t))
        else:
            out_arrival[u][t] = finish[u][t]

    latency = []
    energy = []
    for u in range(n_users):
        times = [finish[u][t] for t in range(n_tasks) if finish[u][t] is not None]
        times += [out_arrival[u][t] for t in range(n_tasks) if out_arrival[u][t] is not None]
        latency.append(max(times) if times else 0.0)
        energy.append(w["kappa"] * s["f_local"][u] ** 2 * local_cycles[u]
                      + w["p_tx"] * uplink_time[u]
                      + w["p_rx"] * downlink_time[u])

    return {
        "L": latency,
        "E": energy,
        "finish": finish,
        "start": start,
        "ready": ready,
        "out_arrival": out_arrival,
        "local_cycles": local_cycles,
        "uplink_time": uplink_time,
        "downlink_time": downlink_time,
        "uplink": uplink,
        "downlink": downlink,
        "edge": edge_log,
        "local": local_log,
        "order": order,
        "free_at": {"local": free_local, "uplink": free_up, "downlink": free_down, "edge": free_edge},
    }


# --------------------------------------------------------------------------------------------------
# Objective
# --------------------------------------------------------------------------------------------------

def _ratio_term(weight: float, num: float, den: float) -> float:
    """weight * num / den with the conventions of the module docstring."""
    if weight == 0:
        return 0.0
    if den > 0:
        return weight * (num / den)
    if num == 0:
        return 0.0
    return math.inf


def all_local_baseline(state: dict, w: dict | None = None) -> tuple[list[float], list[float]]:
    """(L_u(0), E_u(0)) per user: every sub-task local."""
    n_users, n_tasks = np.asarray(state["cycles"]).shape
    sched = schedule(state, np.zeros((n_users, n_tasks), np.int64), w)
    return sched["L"], sched["E"]


def _j_from(latency, energy, base_l, base_e, w) -> float:
    terms = [_ratio_term(w["w_latency"], latency[u], base_l[u])
             + _ratio_term(w["w_energy"], energy[u], base_e[u])
             for u in range(len(latency))]
    total = 0.0
    for term in terms:
        total += term
    return total / len(terms)


def objective(state: dict, x, w: dict | None = None) -> tuple[float, list[float], list[float]]:
    """(J, L, E) of placement x: J = mean_u [w_latency L_u(x)/L_u(0) + w_energy E_u(x)/E_u(0)]."""
    w = _weights(w)
    base_l, base_e = all_local_baseline(state, w)
    sched = schedule(state, x, w)
    return _j_from(sched["L"], sched["E"], base_l, base_e, w), sched["L"], sched["E"]


def partial_objective(state: dict, x, w: dict | None, dispatched: int,
                      baseline: tuple[list[float], list[float]] | None = None
                      ) -> tuple[float, list[float], list[float]]:
    """(J, L, E) over only the first `dispatched` real sub-tasks in dispatch order.

    The schedule is reserved for those sub-tasks only (their sites from x; the other entries of x
    are ignored). L_u is the latest finish time / step-3 arrival at the device of u's dispatched
    sub-tasks (0 if none of u's has been dispatched) and E_u the energy of u's dispatched sub-tasks
    (their local cycles and the uplink/downlink transmissions reserved for them). Both are divided
    by the FULL all-local L_u(0), E_u(0), and J is the mean over all U users (users without a
    dispatched sub-task contribute 0).

    Why: the SPEC's greedy takes "J computed over the sub-tasks dispatched so far (their latencies
    and energies, normalized by the full all-local L_u(0), E_u(0))". The SPEC's L_u is "the latest
    of all finish[u,t] and of all arrivals at the device from step 3", so restricted to the
    dispatched sub-tasks it is the latest of theirs. Since uses are reserved in dispatch order and
    "none fills an earlier idle gap", later dispatches never move earlier reservations: the
    partial schedule is exactly the prefix of every full schedule that extends it.

    `baseline` = all_local_baseline(state, w) may be passed to save recomputing it.
    """
    w = _weights(w)
    base_l, base_e = baseline if baseline is not None else all_local_baseline(state, w)
    sched = schedule(state, x, w, dispatched=dispatched)
    return _j_from(sched["L"], sched["E"], base_l, base_e, w), sched["L"], sched["E"]


# --------------------------------------------------------------------------------------------------
# Exhaustive label, greedy, local search
# --------------------------------------------------------------------------------------------------

def placement_from_index(index: int, n_users: int, n_tasks: int) -> np.ndarray:
    """The index-th placement (U,T) int8 in lexicographic order of x flattened user-major."""
    digits = []
    for _ in range(n_users * n_tasks):
        index, d = divmod(index, 3)
        digits.append(d)
    return np.array(digits[::-1], dtype=np.int8).reshape(n_users, n_tasks)


def placement_index(x) -> int:
    """Inverse of `placement_from_index`: base-3 number of x flattened user-major."""
    index = 0
    for d in np.asarray(x).reshape(-1).tolist():
        index = 3 * index + int(d)
    return index


def all_objectives(state: dict, w: dict | None = None) -> np.ndarray:
    """(3^(U*T),) float64 J of every placement, in lexicographic order of x flattened user-major."""
    w = _weights(w)
    n_users, n_tasks = np.asarray(state["cycles"]).shape
    base_l, base_e = all_local_baseline(state, w)
    out = []
    for flat in itertools.product(range(3), repeat=n_users * n_tasks):
        x = np.array(flat, dtype=np.int64).reshape(n_users, n_tasks)
        sched = schedule(state, x, w)
        out.append(_j_from(sched["L"], sched["E"], base_l, base_e, w))
    return np.array(out, dtype=np.float64)


def brute_force_label(state: dict, w: dict | None = None) -> tuple[np.ndarray, float]:
    """(label (U,T) int8, J(label)): the first minimum of J over all 3^(U*T) placements."""
    n_users, n_tasks = np.asarray(state["cycles"]).shape
    values = all_objectives(state, w)
    best = 0
    for i in range(1, len(values)):
        if values[i] < values[best]:  # strict: the lexicographically smallest minimum wins
            best = i
    return placement_from_index(best, n_users, n_tasks), float(values[best])


def greedy(state: dict, w: dict | None = None) -> np.ndarray:
    """The SPEC's greedy: in dispatch order, each real sub-task takes the site minimizing the
    partial J over the sub-tasks dispatched so far (itself included); ties to the lowest label;
    padding slots get 0. Returns (U,T) int8."""
    w = _weights(w)
    n_users, n_tasks = np.asarray(state["cycles"]).shape
    baseline = all_local_baseline(state, w)
    x = np.zeros((n_users, n_tasks), dtype=np.int64)
    for k, (u, t) in enumerate(dispatch_order(state)):
        values = []
        for site in (LOCAL, EDGE, CLOUD):
            x[u, t] = site
            values.append(partial_objective(state, x, w, k + 1, baseline)[0])
        best = 0
        for site in (EDGE, CLOUD):
            if values[site] < values[best]:
                best = site
        x[u, t] = best
    return x.astype(np.int8)


def local_search(state: dict, w: dict | None, x0, rounds: int | None = None) -> np.ndarray:
    """Steepest descent over single sub-task site changes, from x0.

    Each round evaluates every change of one real sub-task to another site, in the order
    (position in x flattened user-major, then new site ascending), and applies the one with the
    lowest J if that J is strictly below the current J (the first such change among equals);
    stops when no change lowers J, or after `rounds` rounds when given. Padding slots are set to 0
    and never changed. Returns (U,T) int8.
    """
    w = _weights(w)
    n_users, n_tasks = np.asarray(state["cycles"]).shape
    real = is_real(state)
    x = np.array(_placement(x0, n_users, n_tasks), dtype=np.int64)
    x[~real] = 0
    base_l, base_e = all_local_baseline(state, w)

    def j_of(p):
        sched = schedule(state, p, w)
        return _j_from(sched["L"], sched["E"], base_l, base_e, w)

    current = j_of(x)
    done = 0
    while rounds is None or done < rounds:
        done += 1
        best_j, best_move = current, None
        for pos in range(n_users * n_tasks):
            u, t = divmod(pos, n_tasks)
            if not real[u, t]:
                continue
            old = int(x[u, t])
            for site in (LOCAL, EDGE, CLOUD):
                if site == old:
                    continue
                x[u, t] = site
                value = j_of(x)
                x[u, t] = old
                if value < best_j:
                    best_j, best_move = value, (u, t, site)
        if best_move is None:
            return x.astype(np.int8)
        u, t, site = best_move
        x[u, t] = site
        current = best_j
    return x.astype(np.int8)


# --------------------------------------------------------------------------------------------------
# Test states
# --------------------------------------------------------------------------------------------------

def random_dag_state(rng: np.random.Generator, n_users: int, n_tasks: int, n_subcarriers: int, *,
                     padding: bool = False, min_tasks: int = 1, params: dict | None = None,
                     dtype=np.float64) -> dict:
    """A random valid dag state for tests.

    Per user: n real sub-tasks (n = n_tasks, or with `padding` uniform in [min_tasks, n_tasks]; the
    last slots are padding), each edge i -> j (i < j < n) present with probability edge_prob,
    cycles log-uniform, edge_bits log-uniform exactly where adj, in_bits (out_bits) log-uniform
    exactly for real sub-tasks without predecessor (successor). The rest as in the chain model:
    rate_up = sum_n free_n * subcarrier_bandwidth * log2(1 + snr_n), rate_down = downlink_factor *
    rate_up, f_edge = edge_cores_free * edge_core_hz. `params` overrides `DAG_TEST_PARAMS`.
    Float arrays have `dtype` (float64 by default; float32 to feed float32 code the same values).
    """
    p = dict(DAG_TEST_PARAMS)
    if params:
        unknown = set(params) - set(p)
        if unknown:
            raise ValueError(f"unknown params {sorted(unknown)}")
        p.update(params)
    if not 0 <= min_tasks <= n_tasks:
        raise ValueError("min_tasks must be in [0, n_tasks]")

    def log_uniform(lo_hi, size=None):
        lo, hi = lo_hi
        return np.exp(rng.uniform(np.log(lo), np.log(hi), size))

    u_n, t_n = n_users, n_tasks
    cycles = np.zeros((u_n, t_n))
    adj = np.zeros((u_n, t_n, t_n), dtype=bool)
    edge_bits = np.zeros((u_n, t_n, t_n))
    in_bits = np.zeros((u_n, t_n))
    out_bits = np.zeros((u_n, t_n))
    for u in range(u_n):
        n_real = int(rng.integers(min_tasks, t_n + 1)) if padding else t_n
        cycles[u, :n_real] = log_uniform(p["cycles_range"], n_real)
        for j in range(n_real):
            for i in range(j):
                if rng.random() < p["edge_prob"]:
                    adj[u, i, j] = True
                    edge_bits[u, i, j] = log_uniform(p["edge_bits_range"])
        for t in range(n_real):
            if not adj[u, :, t].any():
                in_bits[u, t] = log_uniform(p["io_bits_range"])
            if not adj[u, t, :].any():
                out_bits[u, t] = log_uniform(p["io_bits_range"])

    f_local = rng.uniform(*p["f_local_range"], u_n)
    mean_snr_db = rng.uniform(*p["mean_snr_db_range"], u_n)
    snr = 10.0 ** (mean_snr_db[:, None] / 10.0) * rng.exponential(1.0, (u_n, n_subcarriers))
    free = rng.random((u_n, n_subcarriers)) < p["subcarrier_free_prob"]
    for u in range(u_n):
        if not free[u].any():
            free[u, rng.integers(n_subcarriers)] = True
    snr = snr.astype(dtype)
    rate_up = np.sum(np.where(free, p["subcarrier_bandwidth"] * np.log2(1.0 + snr.astype(np.float64)), 0.0),
                     axis=1)
    rate_down = p["downlink_factor"] * rate_up
    cores = int(rng.integers(1, p["edge_cores"] + 1))
    return {
        "cycles": cycles.astype(dtype),
        "adj": adj,
        "edge_bits": edge_bits.astype(dtype),
        "in_bits": in_bits.astype(dtype),
        "out_bits": out_bits.astype(dtype),
        "f_local": f_local.astype(dtype),
        "rate_up": rate_up.astype(dtype),
        "rate_down": rate_down.astype(dtype),
        "snr": snr,
        "subcarrier_free": free,
        "edge_cores_free": np.int32(cores),
        "f_edge": np.asarray(cores * p["edge_core_hz"], dtype=dtype),
        "f_cloud": np.asarray(rng.uniform(*p["f_cloud_range"]), dtype=dtype),
        "backhaul_rate": np.asarray(log_uniform(p["backhaul_rate_range"]), dtype=dtype),
        "cloud_delay": np.asarray(rng.uniform(*p["cloud_delay_range"]), dtype=dtype),
    }


def dag_state_from_chain(chain: dict) -> dict:
    """The U = 1 dag state of a chain state (the dict `reference.spec_latency` takes): edges t-1 -> t,
    in_bits[0] = data_bits[0], edge_bits[t-1, t] = data_bits[t], out_bits[T-1] = data_bits[T]."""
    cycles = np.asarray(chain["cycles"], dtype=np.float64)
    bits = np.asarray(chain["data_bits"], dtype=np.float64)
    t_n = cycles.shape[0]
    if bits.shape != (t_n + 1,):
        raise ValueError("data_bits must have T+1 entries")
    adj = np.zeros((1, t_n, t_n), dtype=bool)
    edge_bits = np.zeros((1, t_n, t_n))
    for t in range(1, t_n):
        adj[0, t - 1, t] = True
        edge_bits[0, t - 1, t] = bits[t]
    in_bits = np.zeros((1, t_n))
    out_bits = np.zeros((1, t_n))
    in_bits[0, 0] = bits[0]
    out_bits[0, t_n - 1] = bits[t_n]
    snr = np.asarray(chain.get("snr", [1.0]), dtype=np.float64).reshape(1, -1)
    free = np.asarray(chain.get("subcarrier_free", [True] * snr.shape[1]), dtype=bool).reshape(1, -1)
    return {
        "cycles": cycles[None, :],
        "adj": adj,
        "edge_bits": edge_bits,
        "in_bits": in_bits,
        "out_bits": out_bits,
        "f_local": np.array([float(chain["f_local"])]),
        "rate_up": np.array([float(chain["rate_up"])]),
        "rate_down": np.array([float(chain["rate_down"])]),
        "snr": snr,
        "subcarrier_free": free,
        "edge_cores_free": np.int32(chain.get("edge_cores_free", 1)),
        "f_edge": np.float64(chain["f_edge"]),
        "f_cloud": np.float64(chain["f_cloud"]),
        "backhaul_rate": np.float64(chain["backhaul_rate"]),
        "cloud_delay": np.float64(chain["cloud_delay"]),
    }


# --------------------------------------------------------------------------------------------------
# Invariants of a state
# --------------------------------------------------------------------------------------------------

def check_state(state: dict, *, edge_core_hz: float | None = None, subcarrier_bandwidth: float | None = None,
                downlink_factor: float | None = None, rtol: float = 1e-5) -> None:
    """Assert every SPEC invariant of one dag state; AssertionError with a clear message otherwise.

    Checked: all keys present with consistent shapes; values finite; adj boolean, only i < j;
    real sub-tasks (cycles > 0) form a prefix of each user's slots, padding slots (cycles == 0) have
    no edges and no data; edge_bits > 0 exactly where adj; in_bits > 0 exactly for real sub-tasks
    without predecessor, out_bits > 0 exactly for real sub-tasks without successor; no negative
    cycles or bits; speeds, rates and backhaul > 0, cloud_delay >= 0; edge_cores_free a positive
    integer; subcarrier_free boolean with at least one free sub-carrier per user; snr >= 0.
    Only when given (they are not part of the state): f_edge = edge_cores_free * edge_core_hz,
    rate_up = sum_n free_n * subcarrier_bandwidth * log2(1 + snr_n), rate_down = downlink_factor *
    rate_up, each to relative tolerance rtol. Dtypes are not checked.
    """
    missing = [k for k in STATE_KEYS if k not in state]
    assert not missing, f"state lacks keys {missing}"
    a = {k: np.asarray(state[k]) for k in STATE_KEYS}
    assert a["cycles"].ndim == 2, f"cycles must be (U,T), got shape {a['cycles'].shape}"
    u_n, t_n = a["cycles"].shape
    assert a["snr"].ndim == 2 and a["snr"].shape[0] == u_n, (
        f"snr must be (U,N)=({u_n},N), got {a['snr'].shape}")
    n_sc = a["snr"].shape[1]
    shapes = {"cycles": (u_n, t_n), "adj": (u_n, t_n, t_n), "edge_bits": (u_n, t_n, t_n),
              "in_bits": (u_n, t_n), "out_bits": (u_n, t_n), "f_local": (u_n,), "rate_up": (u_n,),
              "rate_down": (u_n,),
              "snr": (u_n, n_sc), "subcarrier_free": (u_n, n_sc), "edge_cores_free": (), "f_edge": (),
              "f_cloud": (), "backhaul_rate": (), "cloud_delay": ()}
    for k, shape in shapes.items():
        assert a[k].shape == shape, (
            f"{k} has shape {a[k].shape}, expected {shape} (U={u_n}, T={t_n}, N={n_sc})")
    for k in STATE_KEYS:
        assert np.all(np.isfinite(a[k].astype(np.float64))), f"{k} has non-finite values"
    for k in ("adj", "subcarrier_free"):
        vals = a[k].astype(np.float64)
        assert np.all((vals == 0) | (vals == 1)), f"{k} must be boolean"

    adj = a["adj"].astype(bool)
    cycles = a["cycles"].astype(np.float64)
    edge_bits = a["edge_bits"].astype(np.float64)
    in_bits = a["in_bits"].astype(np.float64)
    out_bits = a["out_bits"].astype(np.float64)
    assert np.all(cycles >= 0), "cycles must be >= 0 (0 marks padding)"
    for k, v in (("edge_bits", edge_bits), ("in_bits", in_bits), ("out_bits", out_bits)):
        assert np.all(v >= 0), f"{k} must be >= 0"
    lower = np.tril(np.ones((t_n, t_n), dtype=bool))  # i >= j
    bad = np.argwhere(adj & lower[None])
    assert bad.size == 0, f"adj[u,i,j] set with i >= j at (u,i,j) = {bad[:5].tolist()}: only i < j allowed"

    real = cycles > 0
    for u in range(u_n):
        n_real = int(real[u].sum())
        assert real[u, :n_real].all(), (
            f"user {u}: padding slots must follow the real sub-tasks, real = {real[u].astype(int).tolist()}")
        pad = ~real[u]
        assert not adj[u][pad, :].any() and not adj[u][:, pad].any(), f"user {u}: a padding slot has an edge"
        assert not in_bits[u][pad].any(), f"user {u}: a padding slot has in_bits"
        assert not out_bits[u][pad].any(), f"user {u}: a padding slot has out_bits"
        assert not edge_bits[u][pad, :].any() and not edge_bits[u][:, pad].any(), (
            f"user {u}: a padding slot has edge_bits")
    mismatch = np.argwhere((edge_bits > 0) != adj)
    assert mismatch.size == 0, (
        f"edge_bits > 0 must hold exactly where adj; differs at (u,i,j) = {mismatch[:5].tolist()}")
    has_pred = adj.any(axis=1)  # (U,T): some i -> t
    has_succ = adj.any(axis=2)  # (U,T): some t -> j
    mismatch = np.argwhere((in_bits > 0) != (real & ~has_pred))
    assert mismatch.size == 0, (
        f"in_bits > 0 must hold exactly for real sub-tasks without predecessor; differs at (u,t) = "
        f"{mismatch[:5].tolist()}")
    mismatch = np.argwhere((out_bits > 0) != (real & ~has_succ))
    assert mismatch.size == 0, (
        f"out_bits > 0 must hold exactly for real sub-tasks without successor; differs at (u,t) = "
        f"{mismatch[:5].tolist()}")

    for k in ("f_local", "rate_up", "rate_down", "f_edge", "f_cloud", "backhaul_rate"):
        assert np.all(a[k].astype(np.float64) > 0), f"{k} must be > 0, got {a[k]}"
    assert float(a["cloud_delay"]) >= 0, f"cloud_delay must be >= 0, got {a['cloud_delay']}"
    cores = float(a["edge_cores_free"])
    assert cores == int(cores) and cores >= 1, f"edge_cores_free must be a positive integer, got {cores}"
    free = a["subcarrier_free"].astype(bool)
    assert free.any(axis=1).all(), f"every user needs a free sub-carrier, free = {free.astype(int).tolist()}"
    snr = a["snr"].astype(np.float64)
    assert np.all(snr >= 0), "snr must be >= 0"

    if edge_core_hz is not None:
        want = cores * edge_core_hz
        got = float(a["f_edge"])
        assert math.isclose(got, want, rel_tol=rtol), (
            f"f_edge = {got}, expected edge_cores_free * hz = {want}")
    if subcarrier_bandwidth is not None:
        want = np.sum(np.where(free, subcarrier_bandwidth * np.log2(1.0 + snr), 0.0), axis=1)
        got = a["rate_up"].astype(np.float64)
        assert np.allclose(got, want, rtol=rtol, atol=0), (
            f"rate_up = {got.tolist()}, expected {want.tolist()}")
    if downlink_factor is not None:
        want = downlink_factor * a["rate_up"].astype(np.float64)
        got = a["rate_down"].astype(np.float64)
        assert np.allclose(got, want, rtol=rtol, atol=0), (
            f"rate_down = {got.tolist()}, expected downlink_factor * rate_up = {want.tolist()}")
