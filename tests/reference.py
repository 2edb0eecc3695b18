"""Slow, obvious reference implementations that the tests hold the fast code to.

Written straight from the text of SPEC.md, in Python/numpy and float64 where the
point is the formula, and in float32 with the SPEC's order of additions where the
point is the exact label the solvers must return. Deliberately no JAX here.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

SPEC_DEFAULTS = {
    "tasks": 10,
    "cycles_range": [5.0e7, 2.0e9],
    "data_bits_range": [4.0e5, 4.0e7],
    "f_local_range": [1.0e9, 4.0e9],
    "edge_cores": 8,
    "edge_core_hz": 2.5e9,
    "f_cloud_range": [2.0e10, 4.0e10],
    "subcarriers": 8,
    "subcarrier_bandwidth": 1.0e6,
    "subcarrier_free_prob": 0.5,
    "mean_snr_db_range": [0.0, 20.0],
    "downlink_factor": 2.0,
    "backhaul_rate_range": [5.0e6, 1.0e8],
    "cloud_delay_range": [0.02, 0.15],
}


def one_state(arrays: dict, i: int) -> dict:
    """State i of a batch of numpy arrays, as Python floats / lists of floats."""
    out = {}
    for name, value in arrays.items():
        v = np.asarray(value)[i]
        out[name] = v.tolist() if v.ndim else v.item()
    return out


def spec_k_f(s: dict) -> tuple[list[list[float]], list[list[float]]]:
    """The SPEC's K and F tables, as written there."""
    ru, rd, rb, tau = s["rate_up"], s["rate_down"], s["backhaul_rate"], s["cloud_delay"]
    k = [[0.0, 1 / ru, 1 / ru + 1 / rb],
         [1 / rd, 0.0, 1 / rb],
         [1 / rb + 1 / rd, 1 / rb, 0.0]]
    f = [[0.0, 0.0, tau],
         [0.0, 0.0, tau],
         [tau, tau, 0.0]]
    return k, f


def spec_latency(s: dict, x) -> float:
    """Latency of placement x for one state `s` (see `one_state`): the SPEC formula, scalar float64."""
    k, f = spec_k_f(s)
    speed = (s["f_local"], s["f_edge"], s["f_cloud"])
    bits, cycles = s["data_bits"], s["cycles"]
    t_len = len(cycles)

    def move(d, a, b):
        return d * k[a][b] + f[a][b]

    total = move(bits[0], 0, x[0])
    for t in range(t_len):
        total += cycles[t] / speed[x[t]]
    for t in range(1, t_len):
        total += move(bits[t], x[t - 1], x[t])
    return total + move(bits[t_len], x[t_len - 1], 0)


def spec_rates(snr: np.ndarray, free: np.ndarray, bandwidth: float, downlink_factor: float):
    """(rate_up, rate_down) in float64 from the SPEC text; sub-carriers on the last axis."""
    snr = np.asarray(snr, np.float64)
    up = np.sum(np.where(free, bandwidth * np.log2(1.0 + snr), 0.0), axis=-1)
    return up, downlink_factor * up


def all_placements(t_len: int) -> np.ndarray:
    """(3^T, T) every placement, in lexicographic order."""
    return np.array(list(itertools.product(range(3), repeat=t_len)), dtype=np.int64).reshape(-1, t_len)


def brute_force_labels(first: np.ndarray, step: np.ndarray, last: np.ndarray):
    """Label and latency of each state by trying all 3^T placements of its float32 stage costs.

    Sums are float32, added in the SPEC's order (first, step 0, ..., step T-2, last), so the
    minimum is the one the solvers must find; the first minimum in lexicographic order wins.
    Returns (labels (n, T) int8, latency (n,) float32).
    """
    first, step, last = (np.asarray(a, np.float32) for a in (first, step, last))
    n, t_len = first.shape[0], step.shape[1] + 1
    xs = all_placements(t_len)
    labels = np.zeros((n, t_len), np.int8)
    best = np.zeros(n, np.float32)
    for i in range(n):
        total = first[i][xs[:, 0]]
        for t in range(1, t_len):
            total = total + step[i, t - 1][xs[:, t - 1], xs[:, t]]
        total = total + last[i][xs[:, -1]]
        j = int(np.argmin(total))  # first minimum = lexicographically smallest
        labels[i], best[i] = xs[j], total[j]
    return labels, best


def spec_latencies_all(s: dict) -> np.ndarray:
    """(3^T,) float64 SPEC latency of every placement (lexicographic order) of one state."""
    k, f = (np.array(m, np.float64) for m in spec_k_f(s))
    speed = np.array([s["f_local"], s["f_edge"], s["f_cloud"]], np.float64)
    bits, cycles = np.array(s["data_bits"], np.float64), np.array(s["cycles"], np.float64)
    xs = all_placements(len(cycles))
    total = bits[0] * k[0, xs[:, 0]] + f[0, xs[:, 0]]
    total = total + np.sum(cycles[None, :] / speed[xs], axis=1)
    for t in range(1, len(cycles)):
        total = total + bits[t] * k[xs[:, t - 1], xs[:, t]] + f[xs[:, t - 1], xs[:, t]]
    return total + bits[-1] * k[xs[:, -1], 0] + f[xs[:, -1], 0]


def brute_force_expectation(s: dict, probs: np.ndarray) -> float:
    """E[latency] when sub-task t runs on site s w.p. probs[t, s], independently: sum over all 3^T."""
    t_len = probs.shape[0]
    total = 0.0
    for x in itertools.product(range(3), repeat=t_len):
        p = math.prod(float(probs[t, x[t]]) for t in range(t_len))
        total += p * spec_latency(s, x)
    return total
