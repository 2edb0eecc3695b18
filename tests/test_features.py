"""Features: the recipe-based `raw_features` against an obvious one built on `cost.stage_costs`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from offload_jax import config, features
from offload_jax.scenarios.chain import system
from offload_jax.scenarios.chain.cost import stage_costs


def reference_raw_features(state: system.SystemState) -> np.ndarray:
    """The features written out field by field, with the stage costs of `cost.stage_costs`."""
    n = state.cycles.shape[0]
    costs = stage_costs(state)
    scalars = jnp.stack([state.f_local, state.f_edge, state.f_cloud, state.rate_up,
                         state.rate_down, state.backhaul_rate], axis=-1)
    eps = features.COST_EPS
    parts = [jnp.log(state.cycles), jnp.log(state.data_bits), jnp.log(scalars), state.cloud_delay[:, None],
             jnp.log1p(state.snr), state.subcarrier_free.astype(jnp.float32),
             jnp.log(costs.first + eps), jnp.log(costs.step.reshape(n, -1) + eps), jnp.log(costs.last + eps)]
    return np.asarray(jnp.concatenate(parts, axis=-1), np.float64)


@pytest.mark.parametrize("tasks,subcarriers", [(10, 8), (1, 1), (4, 3)])
def test_raw_features_equal_reference(tasks, subcarriers):
    cfg = config.SystemConfig(tasks=tasks, subcarriers=subcarriers).validate()
    states = system.sample(jax.random.key(tasks), cfg, 2000)
    got = np.asarray(jax.jit(features.raw_features)(states))
    assert got.shape == (2000, features.num_features(cfg))
    assert got.dtype == np.float32 and np.isfinite(got).all()
    np.testing.assert_allclose(got, reference_raw_features(states), rtol=2e-5, atol=2e-5)


def test_raw_features_react_to_every_field():
    """Each SPEC field moves some feature (nothing in the packed state is ignored)."""
    cfg = config.SystemConfig(tasks=3, subcarriers=2).validate()
    state = system.sample(jax.random.key(0), cfg, 1)
    base = np.asarray(features.raw_features(state))
    for name in state._fields:
        value = getattr(state, name)
        if name == "edge_cores_free":  # enters through f_edge, which is a field of its own
            continue
        bumped = ~value if value.dtype == jnp.bool_ else (value * 2 + 1).astype(value.dtype)
        moved = np.asarray(features.raw_features(state._replace(**{name: bumped})))
        assert not np.allclose(moved, base), name


@pytest.mark.parametrize("tasks,subcarriers", [(10, 8), (1, 1), (4, 3)])
def test_first_features_are_the_same_bits_whichever_way_computed(tasks, subcarriers):
    """The fields' features (one kernel of slices) equal the recipe's first columns to the bit."""
    cfg = config.SystemConfig(tasks=tasks, subcarriers=subcarriers).validate()
    states = system.sample(jax.random.key(tasks + 100), cfg, 2000)
    full = np.asarray(jax.jit(features.raw_features)(states))
    n_fields = features.num_fields(cfg)
    assert features.num_inputs("fields", cfg) == n_fields
    assert features.num_inputs("all", cfg) == full.shape[1]
    for count in (1, n_fields, n_fields + 1, full.shape[1]):
        got = np.asarray(jax.jit(features.raw_features, static_argnums=1)(states, count))
        np.testing.assert_array_equal(got, full[:, :count])
    with pytest.raises(ValueError, match=r"count must be in \[1, "):
        features.raw_features(states, full.shape[1] + 1)
    with pytest.raises(ValueError, match="inputs must be one of"):
        features.num_inputs("raw", cfg)
