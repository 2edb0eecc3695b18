"""The state sampler: SPEC ranges, shapes and dtypes, derived rates, per-index determinism,
rough distributions, pack/unpack."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import spec_rates

from offload_jax import scenarios
from offload_jax.config import SystemConfig
from offload_jax.scenarios import sampling
from offload_jax.scenarios.chain import system

SPEC_SHAPES = {  # the SPEC's state table: per-sample shape (T, N symbolic) and dtype
    "cycles": (("T",), np.float32),
    "data_bits": (("T+1",), np.float32),
    "f_local": ((), np.float32),
    "edge_cores_free": ((), np.int32),
    "f_edge": ((), np.float32),
    "f_cloud": ((), np.float32),
    "snr": (("N",), np.float32),
    "subcarrier_free": (("N",), np.bool_),
    "rate_up": ((), np.float32),
    "rate_down": ((), np.float32),
    "backhaul_rate": ((), np.float32),
    "cloud_delay": ((), np.float32),
}


# Every (config, batch size) pair compiles the sampler once (~1 s): the tests share three.
DEFAULT = SystemConfig()
# Degenerate and wide ranges, zero delay, a fixed mean SNR of 10 dB (so snr / 10 is the fading gain).
ODD = SystemConfig(tasks=4, subcarriers=5, edge_cores=3, data_bits_range=(1.0, 1.0e9),
                   f_local_range=(5.0e8, 5.0e8), edge_core_hz=1.0e9, subcarrier_bandwidth=2.0e5,
                   subcarrier_free_prob=0.1, mean_snr_db_range=(10.0, 10.0), downlink_factor=0.5,
                   backhaul_rate_range=(1.0e6, 1.0e6), cloud_delay_range=(0.0, 0.01))
# One sub-task, one core, and a tiny free probability: nearly every state needs the fallback.
TINY = SystemConfig(tasks=1, subcarriers=4, edge_cores=1, subcarrier_free_prob=0.01)
N = 20_000


@functools.cache
def _state(cfg, n=N, seed=0):
    return system.sample(jax.random.key(seed), cfg, n)


def _np(cfg, n=N, seed=0):
    return system.to_numpy(_state(cfg, n, seed))


def _f32(bounds):
    return np.float32(bounds[0]), np.float32(bounds[1])


@pytest.mark.parametrize("cfg", [DEFAULT, ODD, TINY])
def test_fields_shapes_and_dtypes_follow_spec(cfg):
    size = {"T": cfg.tasks, "T+1": cfg.tasks + 1, "N": cfg.subcarriers}
    expected = {k: (tuple(size[d] for d in shape), np.dtype(dt)) for k, (shape, dt) in SPEC_SHAPES.items()}
    assert system.STATE_FIELDS == tuple(SPEC_SHAPES)
    assert system.state_shapes(cfg) == expected
    arrays = _np(cfg)
    assert list(arrays) == list(SPEC_SHAPES)
    for name, (shape, dtype) in expected.items():
        assert arrays[name].shape == (N, *shape), name
        assert arrays[name].dtype == dtype, name


@pytest.mark.parametrize("cfg", [DEFAULT, ODD, TINY])
def test_sampled_values_inside_spec_ranges(cfg):
    s = _np(cfg)
    for name, bounds in (("cycles", cfg.cycles_range), ("data_bits", cfg.data_bits_range),
                         ("f_local", cfg.f_local_range), ("f_cloud", cfg.f_cloud_range),
                         ("backhaul_rate", cfg.backhaul_rate_range), ("cloud_delay", cfg.cloud_delay_range)):
        lo, hi = _f32(bounds)
        assert s[name].min() >= lo and s[name].max() <= hi, name
    cores = s["edge_cores_free"]
    assert cores.min() >= 1 and cores.max() <= cfg.edge_cores
    assert set(np.unique(cores)) == set(range(1, cfg.edge_cores + 1))  # every count occurs
    np.testing.assert_array_equal(s["f_edge"], cores.astype(np.float32) * np.float32(cfg.edge_core_hz))
    assert np.all(s["subcarrier_free"].sum(axis=1) >= 1)
    if cfg.subcarrier_free_prob == 1.0:
        assert s["subcarrier_free"].all()
    assert np.all(s["snr"] > 0) and np.all(np.isfinite(s["snr"]))
    for name in ("rate_up", "rate_down"):
        assert np.all(s[name] > 0) and np.all(np.isfinite(s[name])), name


def test_derived_rates_equal_spec_formula():
    for cfg in (DEFAULT, ODD):
        s = _np(cfg)
        up, down = spec_rates(s["snr"], s["subcarrier_free"], cfg.subcarrier_bandwidth, cfg.downlink_factor)
        np.testing.assert_allclose(s["rate_up"], up, rtol=3e-6)
        np.testing.assert_allclose(s["rate_down"], down, rtol=3e-6)
    cfg = SystemConfig(subcarrier_bandwidth=2.0e5, downlink_factor=3.0)
    # `rates` on its own, on hand-picked values including a tiny snr (whose float32 log2(1 + snr) is 0).
    snr = jnp.array([[1.0, 3.0, 1e-9], [7.0, 0.5, 1e-9]], jnp.float32)
    free = jnp.array([[True, False, True], [False, False, True]])
    up, down = (np.asarray(r) for r in sampling.rates(snr, free, np.float32(cfg.subcarrier_bandwidth),
                                                      np.float32(cfg.downlink_factor)))
    ref_up, ref_down = spec_rates(np.asarray(snr), np.asarray(free), cfg.subcarrier_bandwidth, 3.0)
    np.testing.assert_allclose(up, ref_up, rtol=3e-6)
    np.testing.assert_allclose(down, ref_down, rtol=3e-6)
    assert up[1] > 0  # a lone free carrier with a tiny snr still carries data


def test_state_depends_only_on_key_and_index():
    # Reference: states 0..N-1 sampled as one batch of N. (Each call below compiles once: kept few.)
    key = jax.random.key(0)
    big = _np(DEFAULT)
    alone = system.to_numpy(system.sample(key, DEFAULT, 1))
    indices = np.array([N - 1, 3, 500, 0, 3, 12_345, 7])  # a batch of 7, out of order, with a repeat
    picked = system.to_numpy(system.sample_indices(key, DEFAULT, jnp.asarray(indices, jnp.int32)))

    def label_program(k):  # a batch of 1000 inside a larger jitted program
        s = system.sample(k, DEFAULT, 1000)
        return s, s.cycles.sum() * s.rate_up.sum()

    fused = system.to_numpy(jax.jit(label_program)(key)[0])
    for name in system.STATE_FIELDS:
        np.testing.assert_array_equal(alone[name], big[name][:1], err_msg=name)
        np.testing.assert_array_equal(picked[name], big[name][indices], err_msg=name)
        np.testing.assert_array_equal(fused[name], big[name][:1000], err_msg=name)


def test_different_keys_differ():
    a, b = _np(DEFAULT, seed=0), _np(DEFAULT, seed=1)
    for name in ("cycles", "data_bits", "f_local", "f_cloud", "snr", "backhaul_rate", "cloud_delay"):
        assert not np.any(a[name][:100] == b[name][:100]), name
    assert len(np.unique(a["f_local"][:100])) == 100  # and different indices of one key differ


def test_distributions_roughly_as_specified():
    cfg, s = DEFAULT, _np(DEFAULT)

    def log_mid(bounds):
        return 0.5 * (math.log(bounds[0]) + math.log(bounds[1]))

    def log_width(bounds):
        return math.log(bounds[1]) - math.log(bounds[0])

    for name, bounds in (("cycles", cfg.cycles_range), ("data_bits", cfg.data_bits_range),
                         ("backhaul_rate", cfg.backhaul_rate_range)):
        logs = np.log(s[name].astype(np.float64))
        assert abs(logs.mean() - log_mid(bounds)) < 0.01 * log_width(bounds), name
        assert abs(logs.std() - log_width(bounds) / math.sqrt(12)) < 0.01 * log_width(bounds), name
    for name, bounds in (("f_local", cfg.f_local_range), ("f_cloud", cfg.f_cloud_range),
                         ("cloud_delay", cfg.cloud_delay_range)):
        v = s[name].astype(np.float64)
        width = bounds[1] - bounds[0]
        assert abs(v.mean() - sum(bounds) / 2) < 0.01 * width, name
        assert abs(v.std() - width / math.sqrt(12)) < 0.01 * width, name
    # Edge cores: uniform over 1..edge_cores.
    counts = np.bincount(s["edge_cores_free"], minlength=cfg.edge_cores + 1)[1:]
    np.testing.assert_allclose(counts / N, 1 / cfg.edge_cores, atol=0.01)
    # Free sub-carriers: each with probability p, plus the fallback when none is free.
    p, carriers = cfg.subcarrier_free_prob, cfg.subcarriers
    assert abs(s["subcarrier_free"].mean() - (p + (1 - p) ** carriers / carriers)) < 0.006
    # SNR in dB: mean_snr_db uniform, so mean of 10 log10(snr) = midpoint + E[10 log10 g] (g ~ Exp(1)).
    mean_db = (10 * np.log10(s["snr"].astype(np.float64))).mean()
    assert abs(mean_db - (10.0 - 10 * EULER_GAMMA / math.log(10))) < 0.2
    # Fading alone (mean SNR fixed at 10 dB): g ~ Exp(1), so mean 1, P(g > 1) = 1/e, E[ln g] = -gamma.
    g = _np(ODD)["snr"].astype(np.float64) / 10.0
    assert abs(g.mean() - 1.0) < 0.015
    assert abs((g > 1.0).mean() - math.exp(-1)) < 0.01
    assert abs(np.log(g).mean() + EULER_GAMMA) < 0.02


EULER_GAMMA = 0.5772156649


def test_all_none_free_fallback_picks_one_carrier_uniformly():
    free = _np(TINY)["subcarrier_free"]
    count = free.sum(axis=1)
    assert count.min() == 1
    fallback = free[count == 1]
    assert len(fallback) > 0.9 * N  # (1 - p)^4 = 96% of states had none free
    np.testing.assert_allclose(fallback.mean(axis=0), 0.25, atol=0.015)


def test_pack_unpack_round_trip_is_exact():
    cfg = ODD
    state = _state(cfg, N, 0)
    scenario = scenarios.of(cfg)
    vec = scenario.pack(state)
    assert vec.shape == (N, scenario.packed_size) and vec.dtype == jnp.float32
    assert scenario.packed_size == 4 + 5 + 1 + 1 + 1 + 1 + 5 + 5 + 1 + 1 + 1 + 1
    back = scenario.unpack(vec)
    for name in system.STATE_FIELDS:
        a, b = np.asarray(getattr(state, name)), np.asarray(getattr(back, name))
        assert a.dtype == b.dtype and a.shape == b.shape, name
        np.testing.assert_array_equal(a, b, err_msg=name)
    # from_arrays (e.g. an npz shard) gives the same state; a missing field is named.
    arrays = system.to_numpy(state)
    again = system.from_arrays(arrays)
    for name in system.STATE_FIELDS:
        np.testing.assert_array_equal(np.asarray(getattr(again, name)), arrays[name])
    del arrays["snr"]
    with pytest.raises(KeyError, match="snr"):
        system.from_arrays(arrays)
