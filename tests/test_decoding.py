"""Iterative decoding (`decoding.decide`) against a plain Python statement of its rule."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from offload_jax import decoding


def _softmax_max(row):
    top = max(row)
    return 1.0 / sum(math.exp(v - top) for v in row)


def _reference(a, b, real, steps):
    """decide for the conditional network logits = a + given @ b, one state at a time, in float64."""
    n, d, _ = a.shape
    take = math.ceil(d / steps)
    out = np.zeros((n, d), np.int8)
    for i in range(n):
        known = [not r for r in real[i]]
        sites = [0] * d
        for step in range(steps):
            given = np.zeros(3 * d)
            for j in range(d):
                if known[j] and real[i, j]:
                    given[3 * j + sites[j]] = 1.0
            logits = a[i] + (given @ b).reshape(d, 3)
            pick = [int(np.argmax(logits[j])) for j in range(d)]  # first maximum
            open_ = [j for j in range(d) if not known[j]]
            if step == steps - 1 or len(open_) <= take:
                fixed = open_
            else:  # the `take` most confident, equal ones by lower index
                fixed = sorted(open_, key=lambda j: (-_softmax_max(logits[j]), j))[:take]
            for j in fixed:
                sites[j], known[j] = pick[j], True
        out[i] = sites
    return out


@pytest.mark.parametrize("steps", [1, 2, 3, 6, 10])
def test_decide_follows_the_rule(steps):
    rng = np.random.default_rng(steps)
    n, shape = 40, (2, 3)
    d = 6
    a = rng.normal(size=(n, d, 3)).astype(np.float32)
    b = rng.normal(size=(3 * d, 3 * d)).astype(np.float32) * 2.0
    real = rng.random((n, d)) < 0.8
    real[0] = True  # no padding
    real[1] = False  # all padding

    def logits_of(partial):  # (n, 2, 3, 3) -> (n, 2, 3, 3)
        return (a + (partial.reshape(n, -1) @ b).reshape(n, d, 3)).reshape(n, *shape, 3)

    decide = jax.jit(lambda r: decoding.decide(logits_of, r, steps))
    got = np.asarray(decide(jnp.asarray(real.reshape(n, *shape))))
    assert got.dtype == np.int8 and got.shape == (n, *shape)
    want = _reference(a.astype(np.float64), b.astype(np.float64), real, steps)
    np.testing.assert_array_equal(got.reshape(n, d), want)
    assert np.all(got.reshape(n, d)[~real] == 0)
    if steps == 1:  # one pass, nothing given: the argmax of the features' logits
        np.testing.assert_array_equal(got.reshape(n, d), np.where(real, a.argmax(-1), 0))


def test_later_passes_see_the_earlier_decisions():
    """A network whose second decision copies the first (once given) decides them alike in two passes,
    and independently in one."""
    a = jnp.asarray([[[5.0, 0.0, 0.0], [0.0, 0.0, 0.1]]])  # decision 0: sure of site 0; 1: unsure

    def logits_of(partial):
        copy = jnp.zeros_like(partial).at[:, 1].set(10.0 * partial[:, 0])
        return a + copy

    real = jnp.ones((1, 2), bool)
    assert decoding.decide(logits_of, real, 1).tolist() == [[0, 2]]
    assert decoding.decide(logits_of, real, 2).tolist() == [[0, 0]]
    with pytest.raises(ValueError, match="steps must be >= 1"):
        decoding.decide(logits_of, real, 0)


@pytest.mark.parametrize("arch", ["gnn", "mlp", "slots"])
def test_decoder_equals_calling_the_model(arch):
    """`models.decoder` (a GraphMLP's message passing once for all passes) gives the model's own logits
    for any partial placement, and a policy deciding in steps through it matches `decide` on `call`."""
    from flax import nnx

    from offload_jax import config, features, models, policies, scenarios

    scenario = scenarios.make("dag", {"tasks": 4, "users": 2})
    cfg = config.ModelConfig(hidden=(16, 16), activation="gelu", norm="none" if arch == "slots" else "layer",
                             arch=arch, graph_width=8, graph_layers=2, decode_steps=3)
    model = models.build(cfg, scenario.cfg, rngs=nnx.Rngs(0))
    states = scenario.sample(jax.random.key(1), scenario.params, jnp.arange(6, dtype=jnp.uint32))
    stats = features.compute_stats(features.raw_features(states))
    x = features.features(states, stats, models.input_count(model))
    rng = np.random.default_rng(0)
    sites = jnp.asarray(rng.integers(0, 3, (6, 2, 4)), jnp.int8)
    partial = decoding.partial_placement(sites, jnp.asarray(rng.random((6, 2, 4)) < 0.5))
    logits_of = models.decoder(model, x)
    np.testing.assert_allclose(logits_of(partial), models.call(model, x, partial), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits_of(None), model(x), rtol=1e-5, atol=1e-5)
    real = states.cycles > 0
    want = decoding.decide(lambda p: models.call(model, x, p), real, 3)
    got = policies.model_policy(model, stats).fn(jax.random.key(0), states)
    np.testing.assert_array_equal(got, want)


def test_most_confident_is_top_k_with_ties_to_the_lower_index():
    """The rank rule picks the set jax.lax.top_k returns, on rows full of ties (few distinct values,
    the -1 of decisions already known among them) and on distinct values; and a plain sort agrees."""
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.choice([-1.0, 0.25, 0.5, 0.75, 1.0], size=(300, 10)),
                           rng.random((100, 10))]).astype(np.float32)
    for take in (1, 3, 4, 9, 10):
        got = np.asarray(decoding.most_confident(jnp.asarray(rows), take))
        idx = np.asarray(jax.lax.top_k(jnp.asarray(rows), take)[1])
        want = np.zeros_like(got)
        np.put_along_axis(want, idx, True, axis=1)
        np.testing.assert_array_equal(got, want)
        for row, chosen in zip(rows[:50], got[:50], strict=True):  # stable sort by -value: lower index first
            assert set(np.flatnonzero(chosen)) == set(sorted(range(10), key=lambda j: (-row[j], j))[:take])


def test_most_confident_takes_a_count_per_row():
    """take (n, 1): each row its own count, the same set as that row alone with an int take."""
    rng = np.random.default_rng(1)
    rows = rng.choice([-1.0, 0.4, 0.6, 0.9], size=(200, 7)).astype(np.float32)
    take = rng.integers(0, 8, (200, 1)).astype(np.int32)
    got = np.asarray(decoding.most_confident(jnp.asarray(rows), jnp.asarray(take)))
    for row, k, chosen in zip(rows, take[:, 0], got, strict=True):
        want = np.asarray(decoding.most_confident(jnp.asarray(row[None]), int(k)))[0]
        np.testing.assert_array_equal(chosen, want)
        assert chosen.sum() == k


def test_confidence_is_the_largest_softmax_probability():
    logits = jax.random.normal(jax.random.key(0), (50, 4, 3)) * 3
    np.testing.assert_allclose(decoding.confidence(logits), jnp.max(jax.nn.softmax(logits, -1), -1),
                               rtol=1e-6)
