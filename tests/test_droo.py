"""DROO baseline: quantization by hand, decision vs a slow reference, online training, persistence."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from offload_jax import cli, config, droo, metrics, policies, scenarios
from offload_jax.config import ConfigError
from offload_jax.scenarios.chain import cost, solvers, system

# Same system, pool and batch size N as tests/test_policies.py (compiled programs are reused).
CFG = config.SystemConfig(tasks=4, subcarriers=3)
N = 256
# The student's architecture (the CLI default) with a small memory, so a few thousand states train it.
SMALL = droo.DROOConfig(memory_size=256, batch_size=32, train_every=10, learning_rate=3e-3)
TRAIN = 3000  # training states: 300 chunks


@functools.cache
def _pool():
    states = jax.jit(system.sample, static_argnums=(1, 2))(jax.random.key(0), CFG, 4096)
    return jax.tree.map(np.asarray, states)


def _states(start, n=N):
    return jax.tree.map(lambda v: v[start:start + n], _pool())


def test_quantize_hand_made():
    probs = jnp.asarray([
        [0.7, 0.2, 0.1],  # best 0, runner-up 1, margin 0.5
        [0.1, 0.45, 0.45],  # best 1 (tie -> lower label), runner-up 2, margin 0
        [0.2, 0.3, 0.5],  # best 2, runner-up 1, margin 0.2
        [0.05, 0.9, 0.05],  # best 1, runner-up 0 (tie -> lower label), margin 0.85
    ], jnp.float32)
    # Flip order by increasing margin: sub-task 1, 2, 0, (3 never with K = T = 4).
    expected = [[0, 1, 2, 1], [0, 2, 2, 1], [0, 1, 1, 1], [1, 1, 2, 1]]
    np.testing.assert_array_equal(droo.quantize(probs, 4, "single"), expected)
    np.testing.assert_array_equal(droo.quantize(probs, 2, "single"), expected[:2])
    np.testing.assert_array_equal(droo.quantize(probs, 1, "single"), expected[:1])
    # Equal margins: the lower sub-task index flips first.
    even = jnp.asarray([[0.6, 0.3, 0.1], [0.1, 0.3, 0.6]], jnp.float32)
    np.testing.assert_array_equal(droo.quantize(even, 2, "single"), [[0, 2], [1, 2]])
    # "nested": candidate k flips the k-1 least confident sub-tasks together (1, then 1 and 2, ...).
    nested = [[0, 1, 2, 1], [0, 2, 2, 1], [0, 2, 1, 1], [1, 2, 1, 1]]
    np.testing.assert_array_equal(droo.quantize(probs, 4, "nested"), nested)
    np.testing.assert_array_equal(droo.quantize(probs, 2, "nested"), nested[:2])
    assert droo.quantize(probs[None], 3).shape == (1, 3, 4)
    with pytest.raises(ValueError, match="num_candidates"):
        droo.quantize(probs, 5)
    with pytest.raises(ValueError, match="quantizer"):
        droo.quantize(probs, 2, "best")


def test_candidate_one_is_argmax_and_the_rest_flip_one_subtask():
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(200, 6, 3)), jnp.float32)
    cands = np.asarray(jax.jit(droo.quantize, static_argnums=(1, 2))(jax.nn.softmax(logits), 6, "single"))
    np.testing.assert_array_equal(cands[:, 0], np.argmax(np.asarray(logits), axis=-1))
    diff = cands[:, 1:] != cands[:, :1]
    assert np.all(diff.sum(-1) == 1)  # each later candidate differs from candidate 1 in one sub-task
    assert np.all(diff.sum(1) <= 1)  # and no sub-task flips twice
    nested = np.asarray(jax.jit(droo.quantize, static_argnums=(1, 2))(jax.nn.softmax(logits), 6, "nested"))
    # nested candidate k = candidate 1 with the flips of single candidates 2..k applied together
    expected = cands[:, :1].repeat(6, axis=1)
    for k in range(1, 6):
        expected[:, k] = np.where(diff[:, k - 1], cands[:, k], expected[:, k - 1])
    np.testing.assert_array_equal(nested, expected)


def test_decide_picks_the_cheapest_candidate():
    states = _states(TRAIN + N)
    costs = jax.jit(cost.stage_costs)(states)
    logits = jnp.asarray(np.random.default_rng(2).normal(scale=2.0, size=(N, CFG.tasks, 3)), jnp.float32)
    score = lambda x: cost.path_latency(costs, x)  # noqa: E731
    best, best_lat = jax.jit(lambda z: droo.decide(z, score, CFG.tasks))(logits)
    cands = np.asarray(jax.jit(droo.quantize, static_argnums=1)(jax.nn.softmax(logits), CFG.tasks))
    first, step, last = (np.asarray(a) for a in costs)
    for i in range(N):  # slow reference: score each candidate in float32 (SPEC order), first min wins
        lat = []
        for c in cands[i]:
            total = first[i, c[0]]
            for t in range(1, CFG.tasks):
                total = total + step[i, t - 1, c[t - 1], c[t]]
            lat.append(total + last[i, c[-1]])
        k = int(np.argmin(lat))
        np.testing.assert_array_equal(best[i], cands[i, k])
        np.testing.assert_allclose(best_lat[i], lat[k], rtol=1e-6)
        assert best_lat[i] <= lat[0] * (1 + 1e-6)  # never worse than candidate 1
        assert np.all(lat[k] <= np.asarray(lat))
    np.testing.assert_allclose(jax.jit(cost.path_latency)(costs, best), best_lat)


@functools.cache
def _trained(segment_chunks=500):
    return droo.train_droo(jax.random.key(11), _states(0, TRAIN), CFG, SMALL, segment_chunks=segment_chunks,
                           progress=False)


@jax.jit
def _ratio_of(states, pred):
    costs = cost.stage_costs(states)
    label, optimal = solvers.solve_dp(costs)
    return metrics.summary(costs, pred, label, optimal)["latency_ratio_mean"]


def _ratio(pol, states):
    return float(_ratio_of(states, jax.jit(pol.fn)(jax.random.key(0), states)))


@functools.cache
def _trained_policy():
    model, stats, _ = _trained()
    pol = policies.droo_policy(model, stats, scenarios.of(CFG), CFG.tasks)
    return pol, np.asarray(jax.jit(pol.fn)(None, _states(TRAIN)))


def test_droo_trained_briefly_beats_random_and_its_untrained_self():
    model, stats, info = _trained()
    assert info["train_states"] == TRAIN and info["loss"].shape == (TRAIN // 10,)
    test = _states(TRAIN)
    trained = float(_ratio_of(test, _trained_policy()[1]))
    # The DNN train_droo started from (same key split, same jitted initializer).
    graphdef, params = droo._init(jax.random.split(jax.random.key(11))[0], CFG, SMALL.model)
    untrained_policy = policies.droo_policy(nnx.merge(graphdef, params), stats, scenarios.of(CFG), CFG.tasks)
    untrained = _ratio(untrained_policy, test)
    rand = _ratio(policies.make_policy("random", scenario=scenarios.of(CFG)), test)
    print(f"mean latency ratio: trained {trained:.3f}, untrained {untrained:.3f}, random {rand:.3f}")
    assert trained < rand, (trained, rand)
    assert trained < untrained, (trained, untrained)
    assert info["loss"][-30:].mean() < info["loss"][:30].mean()


@pytest.mark.slow  # one more compile of the online loop (a new segment shape)
def test_training_is_deterministic_and_independent_of_segments():
    model_a, stats_a, info_a = _trained()
    model_b, stats_b, info_b = _trained(segment_chunks=150)
    np.testing.assert_array_equal(stats_a.mean, stats_b.mean)
    for a, b in zip(jax.tree.leaves(model_a), jax.tree.leaves(model_b), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(info_a["loss"], info_b["loss"], rtol=1e-4, atol=1e-5)


def test_partial_chunk_is_dropped_and_bad_configs_refused():
    longer = _states(0, TRAIN + 5)  # 300 chunks and 5 states
    model, _, info = droo.train_droo(jax.random.key(11), longer, CFG, SMALL, progress=False)
    assert info["train_states"] == TRAIN
    for a, b in zip(jax.tree.leaves(model), jax.tree.leaves(_trained()[0]), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ConfigError, match="at least train_every"):
        droo.train_droo(jax.random.key(0), _states(0, 5), CFG, SMALL, progress=False)
    with pytest.raises(ConfigError, match="candidates"):
        droo.DROOConfig(candidates=5).validate(decisions=4)
    with pytest.raises(ConfigError, match="memory_size"):
        droo.DROOConfig(memory_size=5, train_every=10).validate()
    with pytest.raises(ConfigError, match="unknown droo key"):
        droo.DROOConfig.from_dict({"lr": 1.0})
    assert droo.DROOConfig.from_dict(SMALL.to_dict()) == SMALL


def test_save_load_and_policy_from_run(tmp_path):
    from offload_jax import runs as run_dirs

    model, stats, info = _trained()
    droo.save_droo(tmp_path / "d", model, stats, CFG, SMALL, {"train_states": info["train_states"]})
    run = run_dirs.load_run(tmp_path / "d")
    assert run.meta["kind"] == "droo" and droo.config_of(run.meta) == SMALL
    from_run = policies.make_policy("droo", scenario=scenarios.of(CFG), runs={"droo": run})
    direct, direct_pred = _trained_policy()
    np.testing.assert_array_equal(jax.jit(from_run.fn)(None, _states(TRAIN)), direct_pred)
    assert from_run.params == direct.params > 0


def test_train_droo_cli(tmp_path, capsys):
    from offload_jax import dataset

    # Flags as SMALL and TRAIN states, batches of N: the compiled programs are reused.
    dataset.generate(tmp_path / "ds", CFG, 13 * N, seed=0, solver="enumerate", batch_size=N, progress=False)
    out = tmp_path / "runs" / "droo"
    argv = ["train-droo", "--data", str(tmp_path / "ds"), "--out", str(out), "--seed", "1",
            "--memory-size", "256", "--batch-size", "32", "--train-every", "10", "--lr", "3e-3",
            "--holdout", str(13 * N - TRAIN)]
    assert cli.main(argv) == 0
    meta = json.loads((out / "run.json").read_text())
    assert meta["kind"] == "droo" and meta["train_states"] == TRAIN
    assert droo.config_of(meta) == SMALL
    stamp = os.stat(out / "run.json").st_mtime_ns
    assert cli.main(argv) == 0  # a finished run is left as is
    assert os.stat(out / "run.json").st_mtime_ns == stamp
    with pytest.raises(SystemExit) as exc:
        cli.main(["train-droo", "--data", str(tmp_path / "ds"), "--out", str(tmp_path / "x"),
                  "--states", "5000"])
    assert exc.value.code == 2
    assert "--states must be in [1, 3162]" in capsys.readouterr().err  # default holdout 3328 // 20
