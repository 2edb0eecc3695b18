"""`models.SlotNetwork` against a slow reference written from its docstring, slot by slot."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from offload_jax import config, decoding, features, models, scenarios
from offload_jax.export_runtime import (
    DAG_SHARED_FEATURES,
    DAG_SLOT_FEATURES,
    DAG_USER_FEATURES,
    dag_feature_layout,
)


def _reference(model, x: np.ndarray, partial: np.ndarray | None, users: int, tasks: int) -> np.ndarray:
    """One state's logits (U, T, 3) in float64 loops: tokens read from the feature layout, each round's
    W [h, mean over predecessors, mean over successors, mean over every slot (, mean over the slots
    dispatched before it, in the SPEC's order (t, u))] + b per slot."""
    layout = dag_feature_layout(users, tasks)
    ks, ku, kg = len(DAG_SLOT_FEATURES), len(DAG_USER_FEATURES), len(DAG_SHARED_FEATURES)
    slot_feats = x[slice(*layout["slots"])].reshape(users, tasks, ks)
    user_feats = x[slice(*layout["users"])].reshape(users, ku)
    shared = x[slice(*layout["shared"])]
    assert shared.size == kg
    upper = x[slice(*layout["adjacency"])].reshape(users, -1)
    edges = {}  # (u, i, j) -> weight as read (0/1 with raw statistics)
    for u in range(users):
        for e, (i, j) in enumerate(zip(*np.triu_indices(tasks, 1), strict=True)):
            edges[u, i, j] = upper[u, e]
    embed_k = np.asarray(model.embed.kernel[...], np.float64)
    embed_b = np.asarray(model.embed.bias[...], np.float64)
    slot_e = np.asarray(model.slot_embedding[...], np.float64)
    user_e = np.asarray(model.user_embedding[...], np.float64)
    act = {"relu": lambda v: np.maximum(v, 0.0), "gelu": lambda v: np.asarray(jax.nn.gelu(v))}[ACT]
    def mean(pairs, width):  # weighted by the edges as read
        if not pairs:
            return np.zeros(width)
        return sum(w * v for w, v in pairs) / max(sum(w for w, _ in pairs), 1.0)

    h = {}
    for u in range(users):
        for t in range(tasks):
            token = np.concatenate([slot_feats[u, t], user_feats[u], shared])
            pre = token @ embed_k + embed_b + slot_e[t] + user_e[u]
            if partial is not None and model.given is not None:
                pre = pre + partial[u, t] @ np.asarray(model.given.kernel[...], np.float64)
            h[u, t] = act(pre)
    for layer in model.rounds:
        kernel, bias = np.asarray(layer.kernel[...], np.float64), np.asarray(layer.bias[...], np.float64)
        every = np.mean([h[k] for k in h], axis=0)
        new = {}
        for u in range(users):
            for t in range(tasks):
                preds = [(edges[u, i, t], h[u, i]) for i in range(t)]
                succs = [(edges[u, t, j], h[u, j]) for j in range(t + 1, tasks)]
                width = h[u, t].size
                m = [h[u, t], mean(preds, width), mean(succs, width), every]
                if model.earlier_mean:
                    m.append(mean([(1.0, h[v, s]) for (v, s) in h if (s, v) < (t, u)], width))
                m = np.concatenate(m)
                new[u, t] = h[u, t] + act(m @ kernel + bias)
        h = new
    ro_k = np.asarray(model.readout.kernel[...], np.float64)
    ro_b = np.asarray(model.readout.bias[...], np.float64)
    return np.array([[h[u, t] @ ro_k + ro_b for t in range(tasks)] for u in range(users)])


ACT = "relu"


@pytest.mark.parametrize(("users", "tasks", "steps", "earlier"),
                         [(1, 6, 5, False), (2, 4, 3, False), (3, 3, 1, False), (1, 6, 4, True),
                          (2, 4, 3, True)])
def test_slot_network_equals_the_slot_by_slot_reference(users, tasks, steps, earlier):
    scenario = scenarios.make("dag", {"tasks": tasks, "users": users})
    cfg = config.ModelConfig(arch="slots", graph_width=8, graph_layers=2, activation=ACT, norm="none",
                             decode_steps=steps, earlier_mean=earlier)
    model = models.build(cfg, scenario.cfg, rngs=nnx.Rngs(3))
    states = scenario.sample(jax.random.key(2), scenario.params, jnp.arange(64, dtype=jnp.uint32))
    raw = features.raw_features(states)
    stats = features.compute_stats(raw, features.raw_columns(scenario.cfg))
    x = np.asarray(features.features(states, stats))
    rng = np.random.default_rng(1)
    partial = (np.eye(3)[rng.integers(0, 3, (64, users, tasks))] * (rng.random((64, users, tasks, 1)) < 0.5)
               if steps > 1 else None)
    got = np.asarray(models.call(model, jnp.asarray(x), None if partial is None else jnp.asarray(partial)))
    for i in range(0, 64, 9):
        given = None if partial is None else partial[i]
        want = _reference(model, x[i].astype(np.float64), given, users, tasks)
        np.testing.assert_allclose(got[i], want, rtol=2e-4, atol=2e-4)
    assert got.shape == (64, users, tasks, 3)


def test_slot_network_parameters_are_shared_by_the_slots():
    """Its size grows with T only by the slot embedding's rows."""
    def size(tasks):
        cfg = config.ModelConfig(arch="slots", norm="none", graph_width=8, graph_layers=2, decode_steps=3)
        system = scenarios.make("dag", {"tasks": tasks}).cfg
        return models.count_params(models.build(cfg, system, rngs=nnx.Rngs(0)))
    assert size(12) - size(6) == 6 * 8
    with pytest.raises(config.ConfigError, match="graph_layers"):
        config.ModelConfig(arch="slots", norm="none", graph_layers=0).validate()
    with pytest.raises(config.ConfigError, match="norm must be 'none' for arch 'slots'"):
        config.ModelConfig(arch="slots", norm="layer").validate()
    with pytest.raises(config.ConfigError, match="earlier_mean is a setting of arch 'slots'"):
        config.ModelConfig(arch="mlp", earlier_mean=True).validate()
    with pytest.raises(config.ConfigError, match="earlier_mean must be true or false"):
        config.ModelConfig(arch="slots", norm="none", earlier_mean=1).validate()
    plain = config.ModelConfig(arch="slots", norm="none", graph_width=8, graph_layers=2)
    assert "earlier_mean" not in plain.to_dict()  # runs saved before it read back as they were
    with_it = dataclasses.replace(plain, earlier_mean=True)
    assert config.ModelConfig.from_dict(with_it.to_dict()) == with_it


def test_default_dag_student_has_at_most_5_percent_of_the_teachers_parameters():
    """The issue's size rule for the scenario's default networks, at the quickstart's T = 10 and with
    three users of six sub-tasks (the slot embeddings grow with the slots, the rest does not)."""
    for sizes in ({"tasks": 10}, {"tasks": 6, "users": 3}):
        system = scenarios.make("dag", sizes).cfg
        teacher, student = (models.count_params(models.build(config.DEFAULT_MODELS["dag", role], system,
                                                             rngs=nnx.Rngs(0)))
                            for role in ("teacher", "student"))
        assert student <= 0.05 * teacher, (sizes, student, teacher)


@pytest.mark.parametrize("role, shape, want", [
    ("student", (1, 10), 5), ("student", (1, 14), 5), ("student", (3, 6), 9), ("student", (2, 5), 10),
    ("student", (1, 3), 3), ("teacher", (1, 10), 5), ("teacher", (1, 8), 4), ("teacher", (3, 6), 9),
    ("teacher", (2, 5), 10)])
def test_default_passes_keep_what_a_pass_fixes_for_one_user(role, shape, want):
    """config.default_model: a pass fixes ceil(T / the default's passes) decisions (student and teacher 5)
    whatever U is, so the passes grow with the users; one-pass defaults (the chain's) stay one pass."""
    assert config.default_model("dag", role, shape).decode_steps == want
    assert config.default_model("chain", role, (shape[-1],)).decode_steps == 1
    with pytest.raises(config.ConfigError, match="role one of \\['student', 'teacher'\\]"):
        config.default_model("dag", "droo", shape)


def test_a_pass_with_nothing_left_to_fix_changes_no_decision():
    """Why one user's default may take fewer passes than the count given (teacher at T = 8: 4, not 5):
    at 2 decisions a pass the fifth has nothing left, so 4 and 5 passes give the same placements."""
    key = jax.random.key(0)
    w = jax.random.normal(key, (8 * 3, 8 * 3))
    bias = jax.random.normal(jax.random.key(1), (64, 8 * 3))

    def logits_of(partial):  # (64, 1, 8, 3): any function of the decisions given will do
        return (bias + jnp.tanh(partial.reshape(64, -1) @ w)).reshape(64, 1, 8, 3)

    real = jnp.arange(8)[None, None, :] < jax.random.randint(key, (64, 1, 1), 2, 9)
    assert decoding.per_step(8, 5) == decoding.per_step(8, 4) == 2
    np.testing.assert_array_equal(decoding.decide(logits_of, real, 5), decoding.decide(logits_of, real, 4))
    assert not np.array_equal(decoding.decide(logits_of, real, 4), decoding.decide(logits_of, real, 1))


def test_cli_trains_the_default_dag_student_with_overrides_and_exports_it(tmp_path):
    """`offload-jax train --model student` on dag data builds the scenario's default student (a slots
    network deciding in 4 passes at T = 4; with users, tests/test_evaluate.py's defaults test) with
    --graph-width / --graph-layers applied; its numpy export decides as the JAX policy does."""
    from offload_jax import cli, dataset, export, export_runtime, policies, runs

    cfg = scenarios.make("dag", {"tasks": 4}).cfg
    dataset.generate(tmp_path / "data", cfg, 300, seed=0, solver="enumerate", progress=False)  # fast compile
    argv = ["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "s"), "--model", "student",
            "--steps", "20", "--batch-size", "32", "--graph-width", "8", "--graph-layers", "1",
            "--no-progress", "--eval-every", "0"]
    assert cli.main(argv) == 0
    run = runs.load_run(tmp_path / "s")
    m = run.model_cfg
    assert (m.arch, m.graph_width, m.graph_layers, m.decode_steps) == ("slots", 8, 1, 4)
    assert isinstance(run.model, models.SlotNetwork) and len(run.model.rounds) == 1
    ds = dataset.load(tmp_path / "data", max_states=100)
    want = np.asarray(jax.jit(policies.model_policy(run.model, run.stats).fn)(None, ds.states))
    student = export_runtime.load(export.export_run(tmp_path / "s", tmp_path / "s.npz"))
    packed = np.asarray(ds.scenario.pack(ds.states))
    differ = np.any((student(packed) != want).reshape(len(want), -1), axis=1)
    assert differ.sum() <= 1, differ.sum()
