"""Losses against slow numpy references (loops over samples and sub-tasks)."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from offload_jax import config, losses, scenarios
from offload_jax.scenarios.chain import cost, solvers, system


def _softmax(v):
    e = [math.exp(x - max(v)) for x in v]
    return [x / sum(e) for x in e]


def _ref_ce(logits, labels):
    n, t, _ = logits.shape
    total = 0.0
    for i in range(n):
        for j in range(t):
            total -= math.log(_softmax(list(logits[i, j]))[labels[i, j]])
    return total / (n * t)


def _ref_kl(student, teacher, temp):
    n, t, s = student.shape
    total = 0.0
    for i in range(n):
        for j in range(t):
            p = _softmax([x / temp for x in teacher[i, j]])
            q = _softmax([x / temp for x in student[i, j]])
            total += sum(p[k] * (math.log(p[k]) - math.log(q[k])) for k in range(s) if p[k] > 0)
    return total / (n * t)


def _ref_expected_latency(state_np, probs):
    """Brute force: sum over all 3^T placements of P(x) * latency(x), latency by the SPEC formula."""
    t_len = probs.shape[0]
    f = [state_np["f_local"], state_np["f_edge"], state_np["f_cloud"]]
    ru, rd, rb, tau = (state_np[k] for k in ("rate_up", "rate_down", "backhaul_rate", "cloud_delay"))
    k_mat = [[0, 1 / ru, 1 / ru + 1 / rb], [1 / rd, 0, 1 / rb], [1 / rb + 1 / rd, 1 / rb, 0]]
    f_mat = [[0, 0, tau], [0, 0, tau], [tau, tau, 0]]
    bits, cyc = state_np["data_bits"], state_np["cycles"]

    def move(d, a, b):
        return d * k_mat[a][b] + f_mat[a][b]

    total = 0.0
    for x in itertools.product(range(3), repeat=t_len):
        lat = move(bits[0], 0, x[0]) + sum(cyc[t] / f[x[t]] for t in range(t_len))
        lat += sum(move(bits[t], x[t - 1], x[t]) for t in range(1, t_len)) + move(bits[t_len], x[-1], 0)
        total += math.prod(probs[t, x[t]] for t in range(t_len)) * lat
    return total


CFG = config.SystemConfig(tasks=4, subcarriers=3)


@jax.jit
def _labelled(key):
    """5 states of CFG, their stage costs, optimal labels and latency (one compilation for the file)."""
    states = system.sample(key, CFG, 5)
    costs = cost.stage_costs(states)
    return (states, costs, *solvers.solve_dp(costs))


def _logits(seed, n, t, scale=3.0):
    return np.asarray(jax.random.normal(jax.random.key(seed), (n, t, 3)) * scale, np.float64)


def test_cross_entropy_matches_reference():
    logits = _logits(0, 7, 5)
    labels = np.asarray(jax.random.randint(jax.random.key(1), (7, 5), 0, 3), np.int8)
    got = float(losses.cross_entropy(jnp.asarray(logits, jnp.float32), jnp.asarray(labels)))
    np.testing.assert_allclose(got, _ref_ce(logits, labels), rtol=1e-5)


@pytest.mark.parametrize("temp", [0.5, 1.0, 4.0, 20.0])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_distillation_loss_matches_reference(alpha, temp):
    student, teacher = _logits(2, 6, 4), _logits(3, 6, 4, scale=8.0)
    labels = np.asarray(jax.random.randint(jax.random.key(4), (6, 4), 0, 3), np.int8)
    got = float(losses.distillation_loss(jnp.asarray(student, jnp.float32), jnp.asarray(teacher, jnp.float32),
                                         jnp.asarray(labels), alpha, temp))
    want = alpha * _ref_ce(student, labels) + (1 - alpha) * temp**2 * _ref_kl(student, teacher, temp)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)


def test_alpha_one_is_cross_entropy_and_kd_of_teacher_itself_is_zero():
    student, teacher = _logits(5, 9, 3), _logits(6, 9, 3)
    labels = jnp.asarray(jax.random.randint(jax.random.key(7), (9, 3), 0, 3), jnp.int8)
    s, t = jnp.asarray(student, jnp.float32), jnp.asarray(teacher, jnp.float32)
    assert float(losses.distillation_loss(s, t, labels, 1.0, 4.0)) == float(losses.cross_entropy(s, labels))
    assert abs(float(losses.kd_divergence(t, t, 3.0))) < 1e-6
    # The KD term carries no gradient into the teacher.
    g = jax.grad(lambda tt: losses.distillation_loss(s, tt, labels, 0.5, 2.0))(t)
    assert float(jnp.abs(g).max()) == 0.0


def test_latency_loss_matches_brute_force_expectation():
    states, costs, labels, optimal = _labelled(jax.random.key(8))
    logits = jnp.asarray(_logits(9, 5, 4, scale=1.5), jnp.float32)
    got = float(losses.latency_loss(logits, costs, optimal))
    probs = np.asarray(jax.nn.softmax(logits, axis=-1), np.float64)
    np_states = {k: np.asarray(v, np.float64) for k, v in system.to_numpy(states).items()}
    ratios = [_ref_expected_latency({k: v[i] for k, v in np_states.items()}, probs[i]) / float(optimal[i])
              for i in range(5)]
    np.testing.assert_allclose(got, np.mean(ratios), rtol=1e-4)
    # A one-hot distribution on the optimal labels has ratio exactly 1.
    sharp = 50.0 * jax.nn.one_hot(labels, 3)
    np.testing.assert_allclose(float(losses.latency_loss(sharp, costs, optimal)), 1.0, rtol=1e-5)


def test_total_loss_combines_terms():
    _, costs, labels, optimal = _labelled(jax.random.key(10))
    s, t = (jnp.asarray(_logits(k, 5, 4), jnp.float32) for k in (11, 12))
    w = losses.LossWeights(alpha=0.25, temperature=2.0, latency_weight=0.7)
    term = losses.latency_loss(s, costs, optimal)
    got = losses.total_loss(s, labels, w, teacher_logits=t, objective_term=term)
    want = (losses.distillation_loss(s, t, labels, 0.25, 2.0)
            + 0.7 * losses.latency_loss(s, costs, optimal))
    np.testing.assert_allclose(float(got), float(want), rtol=1e-6)
    # Without teacher and costs: plain cross-entropy, whatever alpha says.
    np.testing.assert_allclose(float(losses.total_loss(s, labels, w)), float(losses.cross_entropy(s, labels)))


def test_masked_losses_ignore_the_masked_decisions():
    _, _, labels, _ = _labelled(jax.random.key(13))
    s, t = (jnp.asarray(_logits(k, 5, 4), jnp.float32) for k in (14, 15))
    mask = jnp.asarray(np.arange(4) < 3)[None].repeat(5, axis=0)  # the last slot is padding
    np.testing.assert_allclose(float(losses.cross_entropy(s, labels, mask)),
                               _ref_ce(np.asarray(s)[:, :3], np.asarray(labels)[:, :3]), rtol=1e-5)
    np.testing.assert_allclose(float(losses.kd_divergence(s, t, 2.0, mask)),
                               _ref_kl(np.asarray(s)[:, :3], np.asarray(t)[:, :3], 2.0), rtol=1e-4)
    junk = s.at[:, 3].set(100.0)  # whatever the masked decision's logits, nothing changes
    assert float(losses.cross_entropy(junk, labels, mask)) == float(losses.cross_entropy(s, labels, mask))


def test_sampled_objective_term_estimates_the_exact_expectation_and_its_gradient():
    """On the chain, where E[latency] has a closed form: the sampled term's value is that expectation and
    its score-function gradient points where the exact gradient does."""
    states, costs, _, optimal = _labelled(jax.random.key(16))
    logits = jnp.asarray(_logits(17, 5, 4, scale=1.0), jnp.float32)
    value = lambda x: scenarios.of(CFG).objective(None, states, x).value  # noqa: E731 (x: (n, samples, T))
    exact = float(losses.latency_loss(logits, costs, optimal))
    _, sampled = losses.sampled_objective_loss(logits, jax.random.key(0), value, optimal, samples=4000)
    np.testing.assert_allclose(float(sampled), exact, rtol=0.03)
    g_exact = jax.grad(lambda z: losses.latency_loss(z, costs, optimal))(logits).ravel()
    g_sampled = jax.grad(lambda z: losses.sampled_objective_loss(z, jax.random.key(1), value, optimal,
                                                                 samples=4000)[0])(logits).ravel()
    cosine = float(g_exact @ g_sampled / (jnp.linalg.norm(g_exact) * jnp.linalg.norm(g_sampled)))
    assert cosine > 0.9, cosine
    with pytest.raises(ValueError, match="samples"):
        losses.sampled_objective_loss(logits, jax.random.key(0), value, optimal, samples=1)


def test_sampled_sites_follow_the_softmax_and_given_decisions_keep_their_site():
    logits = jnp.asarray([[0.3, -1.0, 1.2], [2.0, 0.0, -3.0], [1e4, -1e4, -1e4], [-1e4, 1e4, -1e4],
                          [-1e4, -1e4, 1e4]], jnp.float32)
    x = np.asarray(losses.sample_sites(jax.random.key(0), logits, 40_000))
    assert x.shape == (40_000, 5) and x.dtype == np.int8
    freq = np.stack([(x == s).mean(axis=0) for s in range(3)], axis=-1)
    np.testing.assert_allclose(freq[:2], np.asarray(jax.nn.softmax(logits[:2])), atol=0.01)
    np.testing.assert_array_equal(x[:, 2:], np.broadcast_to([0, 1, 2], (40_000, 3)))


def test_regret_term_is_the_expected_excess_when_one_decision_varies():
    """Chain (E[latency] in closed form): with every decision but one held on its optimal label, the
    regret term is E[latency] / latency* - 1 exactly; regrets are 0 at the label's site and >= 0."""
    from offload_jax import splits, train

    states, costs, labels, optimal = _labelled(jax.random.key(18))
    split = splits.Split(x=None, label=labels, mask=None, state=states, optimal=optimal)
    regret = np.asarray(train.single_change_regret(scenarios.of(CFG), None, split, batch=2))
    assert regret.shape == (5, 4, 3) and np.all(regret >= 0)
    np.testing.assert_array_equal(np.take_along_axis(regret, np.asarray(labels)[..., None], -1), 0.0)
    assert np.all(regret.sum(axis=-1) > 0)  # every other site costs something on these states
    held = jnp.where(jax.nn.one_hot(labels, 3) > 0, 30.0, -30.0)  # softmax: one-hot in float32
    for free in range(4):
        logits = held.at[:, free].set(jnp.asarray(_logits(19 + free, 5, 1, scale=1.0)[:, 0], jnp.float32))
        want = float(losses.latency_loss(logits, costs, optimal)) - 1.0
        np.testing.assert_allclose(float(losses.regret_loss(logits, jnp.asarray(regret))), want, rtol=1e-4)
    # total_loss adds regret_weight times it; a mask drops the masked decisions' part.
    w = losses.LossWeights(regret_weight=0.3)
    np.testing.assert_allclose(float(losses.total_loss(logits, labels, w, regret=jnp.asarray(regret))),
                               float(losses.cross_entropy(logits, labels)
                                     + 0.3 * losses.regret_loss(logits, jnp.asarray(regret))), rtol=1e-6)
    mask = jnp.asarray(np.arange(4) != free)[None].repeat(5, axis=0)
    assert float(losses.regret_loss(logits, jnp.asarray(regret), mask)) == pytest.approx(0.0, abs=1e-6)
