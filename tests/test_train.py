"""Training runs: overfitting, exact resume after SIGKILL, refusals, NaN handling, the run API, the CLI."""

import dataclasses
import functools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import four_cpu_devices_env
from flax import nnx

from offload_jax import config, features, fit, models, policies, runs, scenarios, splits, train
from offload_jax.scenarios.chain import cost, solvers, system

CFG = config.SystemConfig(tasks=4, subcarriers=3)
SMALL = config.ModelConfig(hidden=(64, 64), activation="gelu", norm="layer")
# One training configuration for (nearly) every test: runs that differ only in seed, loss weights or
# eval_every share one compiled program (train.make_train is cached), and compiling dominates here.
RUN_CFG = config.TrainConfig(steps=400, batch_size=64, learning_rate=1e-2, weight_decay=0.0, eval_every=200,
                             seed=3)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _make(key, cfg, n):
    states = system.sample(key, cfg, n)
    return (states, *solvers.solve_dp(cost.stage_costs(states)))


@functools.cache  # compiling the sampler and the DP takes seconds: one shape per system, cached
def _labelled(cfg=CFG, seed=0):
    return _make(jax.random.key(seed), cfg, 640)


def _head(n, cfg=CFG, seed=0):
    return jax.tree.map(lambda v: v[:n], _labelled(cfg, seed))


def _data(cfg=CFG, holdout=128, seed=0):
    states, label, latency = _labelled(cfg, seed)
    return splits.prepare(states, label, latency, cfg, holdout=holdout)


def _ones(cfg, n):
    """States of the right shapes for `cfg` (enough where a test must be refused before any use)."""
    return system.SystemState(**{k: np.ones((n, *shape), dtype)
                                 for k, (shape, dtype) in system.state_shapes(cfg).items()})


def _model(seed, model_cfg=SMALL):
    # jitted init: creating an NNX module eagerly dispatches (and compiles) op by op
    params = jax.jit(models.init_params, static_argnums=(1, 2))(jax.random.key(seed), model_cfg, CFG)
    return models.model_from_params(params, model_cfg, CFG)


def _student(seed):
    """A SMALL model from the shared training program's (already compiled) init."""
    trainer = train.make_train(RUN_CFG, SMALL, CFG, 512)
    return models.model_from_params(trainer.jitted["init"](jax.random.key(seed)).params, SMALL, CFG)


def _flat(params):
    return np.concatenate([np.asarray(p).ravel() for p in jax.tree.leaves(params)])


def _saved_params(run_dir):
    return _flat(models.params_of(runs.load_run(run_dir).model))


def test_small_network_overfits_tiny_dataset_and_run_api_round_trip(tmp_path):
    meta = _fit(tmp_path / "t")
    assert meta["finished"] and meta["step"] == 400 and meta["metrics"]["train_accuracy"] > 0.99
    run = runs.load_run(tmp_path / "t")
    assert run.meta["kind"] == "student" and run.meta["step"] == 400 and run.model_cfg == SMALL
    assert run.meta["params"] == models.count_params(run.model) and run.system == CFG
    states, label, _ = _head(512)  # the training split
    logits = np.asarray(runs.predict_logits(run, states))
    assert np.mean(np.argmax(logits, axis=-1) == np.asarray(label)) > 0.99
    want = jax.jit(lambda s: run.model(features.features(s, run.stats)))(states)
    np.testing.assert_allclose(logits, np.asarray(want), atol=1e-5)

    # save_run / load_run round trip of a model, with extra meta.
    meta = {"kind": "student", "step": 5, "note": "x"}
    runs.save_run(tmp_path / "r", run.model, run.stats, SMALL, CFG, meta)
    again = runs.load_run(tmp_path / "r")
    assert again.meta["kind"] == "student" and again.meta["step"] == 5 and again.meta["note"] == "x"
    np.testing.assert_array_equal(np.asarray(runs.predict_logits(again, states)), logits)
    with pytest.raises(runs.RunError, match="tasks=4"):
        runs.predict_logits(run, _ones(config.SystemConfig(tasks=5, subcarriers=3), 3))
    with pytest.raises(runs.RunError, match="does not exist"):
        runs.load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(runs.RunError, match="no checkpoint"):
        runs.load_run(tmp_path / "empty")
    for f in (tmp_path / "r" / "checkpoints" / "5" / "config").iterdir():
        f.write_text("{garbage")
    with pytest.raises(runs.RunError, match="corrupt"):
        runs.load_run(tmp_path / "r")


def _fit(out, **kw):
    kw = {"chunk_steps": 50, "checkpoint_every_s": 1e9, **kw}  # default: one checkpoint, at the end
    return fit.fit(out, _data(), SMALL, RUN_CFG, kind="student", progress=False, **kw)


class _Killed(Exception):
    pass


def test_interrupted_run_resumes_to_the_same_params(tmp_path, monkeypatch):
    _fit(tmp_path / "whole")
    # Die right after the checkpoint of step 25 (anything after it is lost, as with SIGKILL).
    real_save = runs.save_checkpoint

    def save_then_die(mgr, step, *args, **kwargs):
        real_save(mgr, step, *args, **kwargs)
        if step == 25:
            raise _Killed

    monkeypatch.setattr(runs, "save_checkpoint", save_then_die)
    with pytest.raises(_Killed):
        _fit(tmp_path / "killed", checkpoint_every_s=0.0, chunk_steps=5)
    monkeypatch.undo()
    logs = []
    meta = _fit(tmp_path / "killed", log=logs.append, chunk_steps=7)  # chunking does not matter
    assert any("resuming from step 25" in m for m in logs), logs
    assert meta["step"] == 400 and meta["finished"]
    np.testing.assert_array_equal(_saved_params(tmp_path / "killed"), _saved_params(tmp_path / "whole"))
    whole = json.loads((tmp_path / "whole" / "run.json").read_text())["history"]
    assert [h["step"] for h in meta["history"]] == [200, 400]
    assert [h["latency_ratio_mean"] for h in meta["history"]] == [h["latency_ratio_mean"] for h in whole]
    # A finished run does nothing when rerun.
    before = sorted(os.listdir(tmp_path / "whole" / "checkpoints"))
    logs = []
    _fit(tmp_path / "whole", log=logs.append)
    assert any("nothing to do" in m for m in logs)
    assert sorted(os.listdir(tmp_path / "whole" / "checkpoints")) == before


def _without_wall_clock(meta):
    return {k: v for k, v in meta.items() if k not in runs.WALL_CLOCK_KEYS}


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory):
    """An uninterrupted run (do not modify)."""
    out = tmp_path_factory.mktemp("whole") / "run"
    _fit(out)
    return out


@pytest.mark.parametrize("kill_at", [200, 400])
def test_a_kill_between_checkpoint_and_run_json_loses_nothing(whole_run, tmp_path, monkeypatch, kill_at):
    """Killed after checkpoint `kill_at` was saved and before its run.json was written (an evaluation
    step; 400 is the last), the rerun's run.json equals the uninterrupted one's but its wall-clock fields."""
    real_save = runs.save_checkpoint

    def save_then_die(mgr, step, *args, **kwargs):
        real_save(mgr, step, *args, **kwargs)
        if step == kill_at:
            raise _Killed

    monkeypatch.setattr(runs, "save_checkpoint", save_then_die)
    with pytest.raises(_Killed):
        _fit(tmp_path / "k", checkpoint_every_s=0.0)  # a checkpoint every chunk of 50 steps
    monkeypatch.undo()
    stale = json.loads((tmp_path / "k" / "run.json").read_text())
    assert stale["step"] == kill_at - 50
    meta = _fit(tmp_path / "k")
    want = _without_wall_clock(json.loads((whole_run / "run.json").read_text()))
    assert [h["step"] for h in want["history"]] == [200, 400]
    assert _without_wall_clock(meta) == want
    assert _without_wall_clock(json.loads((tmp_path / "k" / "run.json").read_text())) == want
    np.testing.assert_array_equal(_saved_params(tmp_path / "k"), _saved_params(whole_run))


_CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    import test_train as t
    from offload_jax import runs
    real_save = runs.save_checkpoint
    def slow_save(*args, **kwargs):  # give the parent time to kill us between two checkpoints
        real_save(*args, **kwargs)
        time.sleep(0.3)
    runs.save_checkpoint = slow_save
    t._fit({out!r}, checkpoint_every_s=0.0, chunk_steps=5)
""")


@pytest.mark.slow
def test_sigkilled_process_resumes_to_the_same_params(tmp_path):
    _fit(tmp_path / "whole")
    err = tmp_path / "child.err"
    with err.open("w") as stderr:
        code = _CHILD.format(tests=str(Path(__file__).parent), out=str(tmp_path / "killed"))
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.time() + 300
    try:
        while time.time() < deadline and child.poll() is None:
            step = runs.latest_step(tmp_path / "killed") if (tmp_path / "killed").exists() else None
            if step is not None and step >= 10:
                break
            time.sleep(0.05)
        if child.poll() is not None:  # say why, rather than fail to kill it
            pytest.fail(f"the child exited (rc {child.returncode}) before it was killed: "
                        f"{err.read_text()[-2000:]}")
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    killed_at = runs.latest_step(tmp_path / "killed")
    assert killed_at is not None and 10 <= killed_at < 400, killed_at
    logs = []
    meta = _fit(tmp_path / "killed", log=logs.append)
    assert any(f"resuming from step {killed_at}" in m for m in logs), logs
    assert meta["step"] == 400
    np.testing.assert_array_equal(_saved_params(tmp_path / "killed"), _saved_params(tmp_path / "whole"))


def test_mismatched_checkpoint_is_refused(tmp_path):
    _fit(tmp_path / "r")
    # Another T: refused, naming T (refused from the system alone, before any array is used).
    other = dataclasses.replace(_data(), scenario=scenarios.of(config.SystemConfig(tasks=5, subcarriers=3)))
    with pytest.raises(runs.RunError, match="tasks=4.*tasks=5"):
        fit.fit(tmp_path / "r", other, SMALL, RUN_CFG, kind="student", progress=False)
    # Other settings or other data: refused.
    with pytest.raises(runs.RunError, match="other settings"):
        fit.fit(tmp_path / "r", _data(), SMALL, dataclasses.replace(RUN_CFG, steps=401), kind="student",
                  progress=False)
    with pytest.raises(runs.RunError, match="other data"):
        fit.fit(tmp_path / "r", _data(seed=1), SMALL, RUN_CFG, kind="student", progress=False)
    # A teacher for another T is refused too.
    with pytest.raises(runs.RunError, match="teacher run"):
        fit.fit(tmp_path / "d", other, SMALL, dataclasses.replace(RUN_CFG, alpha=0.5), kind="distill",
                  teacher=runs.load_run(tmp_path / "r"), teacher_dir=str(tmp_path / "r"), progress=False)


def test_init_from_starts_at_the_runs_parameters_and_is_part_of_the_run(whole_run, tmp_path, monkeypatch):
    init = runs.load_run(whole_run)
    started = {}

    def first_state(run_dir, mgr, trainer, state, *args, **kwargs):
        started.update(params=state.params, opt_state=state.opt_state,
                       fresh=trainer.optimizer.init(state.params))
        raise _Killed

    with monkeypatch.context() as m:
        m.setattr(fit, "_loop", first_state)
        with pytest.raises(_Killed):
            _fit(tmp_path / "warm", init=init, init_dir=str(whole_run))
    np.testing.assert_array_equal(_flat(started["params"]), _saved_params(whole_run))
    same = jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)),
                              started["opt_state"], started["fresh"])
    assert all(jax.tree.leaves(same))  # a fresh optimizer (no moments, step 0 of the schedule)

    meta = _fit(tmp_path / "warm", init=init, init_dir=str(whole_run))
    assert meta["finished"] and meta["init"] == {"dir": str(whole_run), "kind": "student", "step": 400}
    assert meta["identity"]["init"] == runs.teacher_identity(init)
    assert not np.array_equal(_saved_params(tmp_path / "warm"), _saved_params(whole_run))  # it trained on
    with pytest.raises(runs.RunError, match="init"):  # the same directory without the warm start
        _fit(tmp_path / "warm")

    # Another network, or parameters fitted to other feature statistics: refused before any step.
    other_cfg = dataclasses.replace(SMALL, hidden=(32,))
    other = runs.LoadedRun(model=_model(0, other_cfg), stats=init.stats, model_cfg=other_cfg, system=CFG,
                           meta={})
    with pytest.raises(config.ConfigError, match=r"init run 'o'.*hidden: existing \[?\(?32"):
        _fit(tmp_path / "x", init=other, init_dir="o")
    shifted = features.FeatureStats(mean=init.stats.mean + 0.3, std=init.stats.std)
    with pytest.raises(config.ConfigError, match="init run 's'.*other feature statistics"):
        _fit(tmp_path / "x", init=dataclasses.replace(init, stats=shifted), init_dir="s")
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    data = _data()
    trainer = train.make_train(RUN_CFG, SMALL, CFG, int(data.train.x.shape[0]))
    perm = np.asarray(trainer.epoch_perm(jax.random.key(RUN_CFG.seed), 0))
    bad_row = int(perm[4 * 64])  # first used by step 4
    poisoned = dataclasses.replace(data, train=data.train._replace(x=data.train.x.at[bad_row].set(jnp.nan)))
    with pytest.raises(fit.TrainingError, match=r"loss became nan between steps 4 and 5.*step 4"):
        fit.fit(tmp_path / "r", poisoned, SMALL, RUN_CFG, kind="student", progress=False, chunk_steps=1,
                  checkpoint_every_s=0.0)
    assert runs.latest_step(tmp_path / "r") == 4
    assert np.all(np.isfinite(_saved_params(tmp_path / "r")))


def test_teacher_inputs_follow_the_teacher_stats():
    data = _data()
    shifted = features.FeatureStats(mean=data.stats.mean + 0.3, std=data.stats.std * 1.7)
    teacher = runs.LoadedRun(model=_student(0), stats=shifted, model_cfg=SMALL, system=CFG, meta={})
    _, scale, shift = train.teacher_consts(teacher, data.stats)
    raw = jax.jit(features.raw_features)(_head(512)[0])
    np.testing.assert_allclose(np.asarray(features.normalize(raw, data.stats) * scale + shift),
                               np.asarray(features.normalize(raw, shifted)), atol=1e-4)


def test_cli_rerun_of_finished_run_and_errors(tmp_path, capsys):
    from offload_jax import cli, dataset

    _fit(tmp_path / "r")
    flags = ["--data", str(tmp_path / "no-data"), "--out", str(tmp_path / "r"), "--model", "student",
             "--steps", "400", "--no-progress"]
    with pytest.raises(SystemExit) as exc:  # a finished run does not make any --data acceptable
        cli.main(["train", *flags])
    assert exc.value.code == 2 and "no-data" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["distill", *flags[:2], "--out", str(tmp_path / "x"), "--teacher", str(tmp_path / "nope")])
    assert exc.value.code == 2 and "no-data" in capsys.readouterr().err  # the data is checked first
    dataset.generate(tmp_path / "data", CFG, 64, seed=0, progress=False)
    with pytest.raises(SystemExit) as exc:
        cli.main(["distill", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "x"),
                  "--teacher", str(tmp_path / "nope"), "--no-progress"])
    assert exc.value.code == 2 and "nope" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "x"),
                  "--init-from", str(tmp_path / "nope"), "--no-progress"])
    assert exc.value.code == 2 and "nope" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["distill", *flags[:2], "--out", str(tmp_path / "x"), "--teacher", str(tmp_path / "r"),
                  "--alpha", "1.5"])
    assert exc.value.code == 2 and "alpha must be in [0, 1]" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_train_distill_rerun(tmp_path, capsys):
    from offload_jax import cli, dataset

    dataset.generate(tmp_path / "data", CFG, 400, seed=0, progress=False)
    common = ["--data", str(tmp_path / "data"), "--steps", "20", "--batch-size", "32", "--hidden", "16",
              "--no-progress", "--eval-every", "0"]
    assert cli.main(["train", *common, "--model", "teacher", "--out", str(tmp_path / "t")]) == 0
    assert cli.main(["train", *common, "--model", "teacher", "--out", str(tmp_path / "t")]) == 0
    assert "nothing to do" in capsys.readouterr().err
    assert cli.main(["distill", *common, "--teacher", str(tmp_path / "t"), "--out", str(tmp_path / "s"),
                     "--alpha", "0.3", "--temperature", "3", "--latency-weight", "0.5"]) == 0
    meta = json.loads((tmp_path / "s" / "run.json").read_text())
    assert meta["kind"] == "distill" and meta["train"]["alpha"] == 0.3 and meta["teacher"]["params"] > 0
    meta = json.loads((tmp_path / "t" / "run.json").read_text())
    assert meta["kind"] == "teacher" and meta["finished"] and meta["model"]["hidden"] == [16]
    # A warm start from the finished teacher, for more steps (the same network: --hidden 16).
    assert cli.main(["train", *common, "--model", "teacher", "--init-from", str(tmp_path / "t"),
                     "--out", str(tmp_path / "t2")]) == 0
    meta = json.loads((tmp_path / "t2" / "run.json").read_text())
    assert meta["finished"] and meta["init"]["dir"] == str(tmp_path / "t") and meta["init"]["step"] == 20
    with pytest.raises(SystemExit) as exc:  # another network than the run it starts from
        cli.main(["train", *common, "--hidden", "8", "--model", "teacher", "--init-from", str(tmp_path / "t"),
                  "--out", str(tmp_path / "t3")])
    assert exc.value.code == 2 and "another network" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["distill", *common, "--teacher", str(tmp_path / "missing"), "--out", str(tmp_path / "x")])
    assert exc.value.code == 2 and "missing" in capsys.readouterr().err


def test_run_saved_on_other_devices_loads_here(tmp_path):
    """A run saved where its arrays lived on another device (a GPU, or device 3 of 4) loads on this one."""
    out = tmp_path / "elsewhere"
    script = textwrap.dedent(f"""
        import jax, numpy as np
        from offload_jax import config, features, models, runs
        assert jax.device_count() == 4, jax.devices()
        cfg = config.SystemConfig(tasks=4, subcarriers=3)
        model_cfg = config.ModelConfig(hidden=(8,), activation="relu", norm="none")
        params = jax.device_put(models.init_params(jax.random.key(7), model_cfg, cfg), jax.devices()[3])
        model = models.model_from_params(params, model_cfg, cfg)
        f = features.num_features(cfg)
        stats = features.FeatureStats(*jax.device_put((np.zeros(f, np.float32), np.ones(f, np.float32)),
                                                    jax.devices()[3]))
        runs.save_run({str(out)!r}, model, stats, model_cfg, cfg, {{"kind": "student", "step": 1}})
    """)
    env = four_cpu_devices_env()
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    run = runs.load_run(out)
    model_cfg = config.ModelConfig(hidden=(8,), activation="relu", norm="none")
    want = models.init_params(jax.random.key(7), model_cfg, CFG)
    np.testing.assert_array_equal(_flat(models.params_of(run.model)), _flat(want))
    assert all(leaf.devices() == {jax.devices()[0]} for leaf in jax.tree.leaves(models.params_of(run.model)))


def test_fields_student_trains_on_the_first_features_and_decides_from_them(tmp_path):
    """inputs="fields": the model reads the first features only, in training and in every policy."""
    model_cfg = dataclasses.replace(SMALL, hidden=(32,), activation="relu", norm="none", inputs="fields")
    data = _data()
    cfg = dataclasses.replace(RUN_CFG, steps=60, eval_every=0)
    meta = fit.fit(tmp_path / "f", data, model_cfg, cfg, kind="student", progress=False)
    run = runs.load_run(tmp_path / "f")
    n_in = features.num_fields(CFG)
    assert run.model_cfg.inputs == "fields" and models.input_count(run.model) == n_in
    states = _head(256)[0]
    logits = np.asarray(runs.predict_logits(run, states))
    want = jax.jit(lambda s: run.model(features.features(s, run.stats)[..., :n_in]))(states)
    np.testing.assert_allclose(logits, np.asarray(want), atol=1e-5)
    decided = np.asarray(policies.model_policy(run.model, run.stats).fn(None, states))
    np.testing.assert_array_equal(decided, np.argmax(logits, axis=-1))
    # The held-out metrics of the run are those of the same decisions.
    assert 0.0 < meta["metrics"]["accuracy"] <= 1.0
    with pytest.raises(ValueError, match="reads 3.* says"):
        runs.save_run(tmp_path / "bad", models.PlacementMLP(3, (CFG.tasks,), model_cfg, rngs=nnx.Rngs(0)),
                       run.stats, model_cfg, CFG, {"kind": "student"})


def test_kd_uses_the_teachers_logits_on_the_training_split():
    data = _data()
    teacher = runs.LoadedRun(model=_student(0), stats=data.stats, model_cfg=SMALL, system=CFG, meta={})
    got = np.asarray(train.teacher_logits(teacher, data.stats, data.train.x, batch=100))
    want = jax.jit(lambda x: teacher.model(x))(data.train.x)
    np.testing.assert_allclose(got, np.asarray(want), atol=1e-5)


def test_finished_distill_run_skips_the_teachers_pass(tmp_path, monkeypatch):
    data = _data()
    teacher = runs.LoadedRun(model=_student(0), stats=data.stats, model_cfg=SMALL, system=CFG,
                              meta={"kind": "teacher"})
    cfg = dataclasses.replace(RUN_CFG, steps=20, alpha=0.5, eval_every=0)
    fit.fit(tmp_path / "d", data, SMALL, cfg, kind="distill", teacher=teacher, progress=False)

    def fail(*args, **kwargs):
        raise AssertionError("teacher_logits computed for a finished run")

    monkeypatch.setattr(train, "teacher_logits", fail)
    meta = fit.fit(tmp_path / "d", data, SMALL, cfg, kind="distill", teacher=teacher, progress=False)
    assert meta["step"] == 20


def test_single_change_regret_matches_the_reference_schedule_on_task_graphs():
    """dag, two users, padded real job graphs: each regret is J(label with one decision moved) / J(label)
    - 1 by the float64 reference schedule (tests/dag_reference.py), for its exact labels; 0 at the
    label's site and on padding slots."""
    import dag_reference as ref

    dag = scenarios.make("dag", {"tasks": 3, "users": 2, "subcarriers": 2, "topology": "file",
                                 "topology_file": "/work/shared/data/alibaba_dags.json", "w_energy": 0.5})
    states = dag.sample(jax.random.key(7), dag.params, jnp.arange(4, dtype=jnp.uint32))
    arrays = [{k: np.asarray(v)[i] for k, v in states._asdict().items()} for i in range(4)]
    w = {**ref.DAG_WEIGHT_DEFAULTS, "w_energy": 0.5}
    best = [ref.brute_force_label(d, w) for d in arrays]
    label = np.stack([b[0] for b in best]).astype(np.int8)
    split = splits.Split(x=None, label=jnp.asarray(label), mask=None, state=states,
                         optimal=jnp.asarray([b[1] for b in best], jnp.float32))
    regret = np.asarray(train.single_change_regret(dag, dag.params, split, batch=3))
    assert regret.shape == (4, 2, 3, 3)
    for i, d in enumerate(arrays):
        for u, t, s in np.ndindex(2, 3, 3):
            moved = label[i].copy()
            moved[u, t] = s
            want = ref.objective(d, moved, w)[0] / best[i][1] - 1.0
            assert want >= -1e-9 and regret[i, u, t, s] == pytest.approx(want, abs=2e-5), (i, u, t, s)
    padding = np.stack([d["cycles"] == 0 for d in arrays])
    assert padding.any() and np.all(regret[padding] == 0)


def test_regret_weight_trains_and_keys_the_run_only_when_set(tmp_path):
    """A run with the regret term records its weight in its identity (another weight is another
    command); at the default 0 the identity has no such key, as runs made before the term existed."""
    cfg = dataclasses.replace(RUN_CFG, steps=20, eval_every=0, regret_weight=0.5)
    meta = fit.fit(tmp_path / "r", _data(), SMALL, cfg, kind="student", progress=False)
    assert meta["finished"] and np.isfinite(meta["metrics"]["objective_ratio_mean"])
    assert meta["identity"]["train"]["regret_weight"] == 0.5
    plain = runs.run_identity("student", SMALL, dataclasses.replace(cfg, regret_weight=0.0), teacher=None,
                              data=None)
    assert "regret_weight" not in plain["train"]
    with pytest.raises(runs.RunError, match="regret_weight: existing 0.5, requested 0.25"):
        fit.fit(tmp_path / "r", _data(), SMALL, dataclasses.replace(cfg, regret_weight=0.25), kind="student",
                progress=False)
    with pytest.raises(config.ConfigError, match="regret_weight must be a finite number >= 0"):
        dataclasses.replace(cfg, regret_weight=-1.0).validate()


def test_a_network_that_decodes_in_steps_trains_and_decides_as_evaluated(tmp_path):
    """decode_steps > 1: the run trains on labels with random decisions given (the loss counts the
    others), its held-out metrics come from decoding in steps, and its policy decides the same."""
    model_cfg = dataclasses.replace(SMALL, decode_steps=2)
    cfg = dataclasses.replace(RUN_CFG, eval_every=0)
    data = _data()
    meta = fit.fit(tmp_path / "s", data, model_cfg, cfg, kind="student", progress=False)
    assert meta["finished"] and meta["metrics"]["train_accuracy"] > 0.9
    assert meta["identity"]["model"]["decode_steps"] == 2
    run = runs.load_run(tmp_path / "s")
    assert run.model_cfg == model_cfg and models.decode_steps(run.model) == 2
    states, label, latency = jax.tree.map(lambda v: v[-128:], _labelled())  # the held-out split
    pred = np.asarray(jax.jit(policies.model_policy(run.model, run.stats).fn)(None, states))
    value = scenarios.of(CFG).objective(None, states, jnp.asarray(pred)).value
    ratio = np.asarray(value) / np.asarray(latency)
    assert float(np.mean(ratio)) == pytest.approx(meta["metrics"]["objective_ratio_mean"], rel=1e-5)
    assert np.mean(pred == np.asarray(label)) == pytest.approx(meta["metrics"]["accuracy"], abs=1e-6)
    # Given the label's sites on all decisions but one, the network names the last one well.
    model = run.model
    x = jax.jit(lambda s: features.features(s, run.stats))(states)
    given = jax.nn.one_hot(label, 3) * (jnp.arange(CFG.tasks) != 1)[None, :, None]
    hit = np.argmax(np.asarray(model(x, given))[:, 1], -1) == np.asarray(label)[:, 1]
    assert hit.mean() > 0.9


def test_given_decisions_random_or_the_most_confident_share():
    """partials "random": a subset of the real decisions; "confident": per state, the real decisions
    given are a top set of the first pass's confidence (none left out is more confident, ties to the
    lower index) and their count is floor(share * real decisions) for a share uniform in [0, 1): every
    count from 0 to the real decisions - 1 occurs. The slow reference sorts each row."""
    n, d = 400, 6
    key = jax.random.key(7)
    real = jnp.arange(d)[None, None, :] < jax.random.randint(jax.random.key(1), (n, 1, 1), 1, d + 1)
    logits = jnp.round(jax.random.normal(jax.random.key(2), (n, 1, d, 3)), 1)  # rounded: ties occur
    random = np.asarray(train.given_decisions(key, real, "random"))
    assert not (random & ~np.asarray(real)).any() and 0.3 < random.sum() / np.asarray(real).sum() < 0.7
    known = np.asarray(train.given_decisions(key, real, "confident", logits))
    sure = np.max(np.asarray(jax.nn.softmax(logits, -1)), -1)
    counts = set()
    for row_real, row_known, row_sure in zip(np.asarray(real)[:, 0], known[:, 0], sure[:, 0], strict=True):
        m = int(row_known.sum())
        order = sorted(np.flatnonzero(row_real), key=lambda j: (-row_sure[j], j))
        assert set(np.flatnonzero(row_known)) == set(order[:m])
        assert m < row_real.sum()
        counts.add((int(row_real.sum()), m))
    assert {(r, m) for r in range(1, d + 1) for m in range(r)} <= counts
    with pytest.raises(ValueError, match="partials must be 'random', or 'confident' with first_logits"):
        train.given_decisions(key, real, "confident")


def test_confident_partials_train_and_key_the_run_only_when_set(tmp_path):
    """A conditional network trained with partials "confident" differs from the random one, records
    the setting in its identity (the default is left out, as runs made before it existed); a bad value
    is refused naming the field and the choices."""
    model_cfg = dataclasses.replace(SMALL, decode_steps=2)
    cfg = dataclasses.replace(RUN_CFG, steps=20, eval_every=0, partials="confident")
    meta = fit.fit(tmp_path / "c", _data(), model_cfg, cfg, kind="student", progress=False)
    assert meta["finished"] and np.isfinite(meta["metrics"]["objective_ratio_mean"])
    assert meta["identity"]["train"]["partials"] == "confident"
    fit.fit(tmp_path / "r", _data(), model_cfg, dataclasses.replace(cfg, partials="random"), kind="student",
            progress=False)
    assert "partials" not in json.loads((tmp_path / "r" / "run.json").read_text())["identity"]["train"]
    a, b = (jax.tree.leaves(runs.load_run(tmp_path / name).model) for name in ("c", "r"))
    assert not all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    with pytest.raises(config.ConfigError, match=r"partials must be one of \['random', 'confident'\]"):
        dataclasses.replace(cfg, partials="best").validate()
    with pytest.raises(config.ConfigError, match="partials 'confident' .* needs decode_steps > 1, got "
                                                 "decode_steps 1"):
        fit.fit(tmp_path / "one", _data(), SMALL, cfg, kind="student", progress=False)
    assert not (tmp_path / "one").exists()  # refused before anything is written


def test_decode_steps_is_checked_and_left_out_of_records_at_its_default():
    with pytest.raises(config.ConfigError, match="decode_steps must be an integer >= 1"):
        dataclasses.replace(SMALL, decode_steps=0).validate()
    with pytest.raises(config.ConfigError, match="decode_steps must be 1 for arch 'graph'"):
        config.ModelConfig(hidden=(32,), arch="graph", heads=4, decode_steps=3).validate()
    from offload_jax import droo  # noqa: PLC0415
    with pytest.raises(config.ConfigError, match="droo model decode_steps must be 1"):
        droo.DROOConfig(model=dataclasses.replace(config.DROO_MODEL, decode_steps=2)).validate()
    assert "decode_steps" not in SMALL.to_dict()
    assert config.ModelConfig.from_dict(SMALL.to_dict()) == SMALL
    stepped = dataclasses.replace(SMALL, decode_steps=4)
    assert config.ModelConfig.from_dict(stepped.to_dict()) == stepped


def test_a_student_decoding_in_steps_distills_the_teachers_logits_with_nothing_given(tmp_path):
    """Teacher and student both decode in steps: the KD term reads the teacher's logits with nothing
    given (computed once over the split), on the decisions the student is not given."""
    stepped = dataclasses.replace(SMALL, decode_steps=2)
    data = _data()
    fit.fit(tmp_path / "t", data, stepped, dataclasses.replace(RUN_CFG, eval_every=0), kind="teacher",
            progress=False)
    teacher = runs.load_run(tmp_path / "t")
    want = jax.jit(lambda x: teacher.model(x))(data.train.x)
    np.testing.assert_allclose(np.asarray(train.teacher_logits(teacher, data.stats, data.train.x)),
                               np.asarray(want), atol=1e-5)
    cfg = dataclasses.replace(RUN_CFG, eval_every=0, alpha=0.0, temperature=1.0, seed=5)
    fit.fit(tmp_path / "s", data, stepped, cfg, kind="distill", teacher=teacher, progress=False)
    student = runs.load_run(tmp_path / "s").model
    x = data.eval.x
    agree = np.argmax(np.asarray(student(x)), -1) == np.argmax(np.asarray(teacher.model(x)), -1)
    assert agree.mean() > 0.9  # KD alone: the student's first pass follows the teacher's


def test_targets_are_the_teachers_decisions_or_their_local_search():
    """dag, two users: `targets` "teacher" is what the teacher's policy decides (in its passes, padding
    on 0), in batches of any size; "teacher_ls" is no worse than it and a local optimum: no single
    change of a real decision lowers J."""
    dag = scenarios.make("dag", {"tasks": 4, "users": 2, "subcarriers": 2})
    states = dag.sample(jax.random.key(2), dag.params, jnp.arange(40, dtype=jnp.uint32))
    objective = jax.jit(lambda s, x: dag.objective(dag.params, s, x).value)
    label = jnp.zeros((40, 2, 4), jnp.int8)  # any labels: the targets ignore them
    data = splits.prepare(states, label, objective(states, label), dag, holdout=8)
    model_cfg = config.ModelConfig(hidden=(16, 16), decode_steps=2)  # (the GNN's decoder: test_decoding)
    model = models.build(model_cfg, dag.cfg, rngs=nnx.Rngs(0))
    teacher = runs.LoadedRun(model=model, stats=data.stats, model_cfg=model_cfg, system=dag.cfg,
                             meta={"kind": "teacher"})
    own = np.asarray(policies.model_policy(model, data.stats).fn(None, data.train.state))
    got = train.targets(dataclasses.replace(RUN_CFG, targets="teacher"), dag, data.train, teacher, data.stats,
                        batch=7)  # 32 states: four whole batches and a rest
    np.testing.assert_array_equal(np.asarray(got), own)
    ls = np.asarray(train.targets(dataclasses.replace(RUN_CFG, targets="teacher_ls"), dag, data.train,
                                  teacher, data.stats, batch=32))
    # J of every placement and of each of its single changes (site s on decision d), in one call
    moves = np.repeat(np.stack([own, ls])[:, :, None], 25, axis=2).reshape(2, 32, 25, 8)
    for k in range(24):
        moves[:, :, k + 1, k // 3] = k % 3
    moves = moves.reshape(2, 32, 25, 2, 4)
    each = jax.tree.map(lambda v: jnp.tile(jnp.repeat(v, 25, axis=0), (2,) + (1,) * (v.ndim - 1)),
                        data.train.state)  # state i for row (a, i, k)
    value = np.asarray(objective(each, jnp.asarray(moves.reshape(-1, 2, 4))))
    value = value.reshape(2, 32, 25)
    real = np.asarray(data.train.state.cycles > 0).reshape(32, 8)
    movable = np.concatenate([np.ones((32, 1), bool), np.repeat(real, 3, axis=1)], axis=1)
    assert np.all(value[1, :, 0] <= value[0, :, 0]) and np.any(value[1, :, 0] < value[0, :, 0])
    assert np.all(np.where(movable, value[1], np.inf) >= value[1, :, :1])  # a local optimum
    assert train.targets(RUN_CFG, dag, data.train, None, data.stats) is data.train.label
    with pytest.raises(config.ConfigError, match="targets 'teacher' need a teacher"):
        train.targets(dataclasses.replace(RUN_CFG, targets="teacher"), dag, data.train, None, data.stats)
    with pytest.raises(config.ConfigError, match="targets must be one of"):
        dataclasses.replace(RUN_CFG, targets="optimal").validate()


def test_a_student_imitates_the_teachers_decisions_with_targets_teacher(tmp_path):
    """The CE term reads the targets: a student trained on labels alone (alpha 1) with targets
    "teacher" decides as a (random, untrained) teacher does, not as the labels; the run's identity
    records the targets (and has no such key at the default, as runs made before they existed).
    The chain has no local search: "teacher_ls" is refused there, and any targets but the labels
    without a teacher."""
    data = _data()
    teacher_model = _model(11)
    teacher = runs.LoadedRun(model=teacher_model, stats=data.stats, model_cfg=SMALL, system=CFG,
                             meta={"kind": "teacher"})
    cfg = dataclasses.replace(RUN_CFG, eval_every=0, targets="teacher")
    meta = fit.fit(tmp_path / "s", data, SMALL, cfg, kind="distill", teacher=teacher, progress=False)
    assert meta["identity"]["train"]["targets"] == "teacher"
    assert "targets" not in runs.run_identity("student", SMALL, RUN_CFG, teacher=None, data=None)["train"]
    student = runs.load_run(tmp_path / "s").model
    x = data.train.x  # what it was fit to (a random teacher is no function to generalize)
    follows = np.argmax(np.asarray(student(x)), -1) == np.argmax(np.asarray(teacher_model(x)), -1)
    labels = np.argmax(np.asarray(student(x)), -1) == np.asarray(data.train.label)
    assert follows.mean() > 0.9 and labels.mean() < follows.mean() - 0.2
    with pytest.raises(config.ConfigError, match="targets 'teacher_ls' need a local search, which scenario "
                                                 "'chain' has not"):
        train.targets(dataclasses.replace(cfg, targets="teacher_ls"), data.scenario, data.train, teacher,
                      data.stats)
    with pytest.raises(config.ConfigError, match="targets 'teacher' need a teacher; without one: 'labels'"):
        fit.fit(tmp_path / "t", data, SMALL, cfg, kind="student", progress=False)


@pytest.mark.slow  # three small training programs (~15-20 s); the tiny dag quickstart uses the option too
def test_objective_states_scores_a_part_of_each_batch():
    """dag: `objective_states` = the batch size trains the very parameters of the default (every state
    scored); fewer states change the run (the term is a sample of the batch's), and the value is keyed
    in the run's identity only when set; more than the batch is refused, naming both."""
    dag = scenarios.make("dag", {"tasks": 3, "users": 1, "subcarriers": 2})
    states = dag.sample(jax.random.key(4), dag.params, jnp.arange(48, dtype=jnp.uint32))
    objective = jax.jit(lambda s, x: dag.objective(dag.params, s, x).value)
    label = jnp.ones((48, 1, 3), jnp.int8)
    data = splits.prepare(states, label, objective(states, label), dag, holdout=8)
    model_cfg = config.ModelConfig(hidden=(16,))
    base = config.TrainConfig(steps=6, batch_size=8, eval_every=0, latency_weight=1.0)
    consts = train.make_consts(base, data, None)

    def params_after(objective_states):
        cfg = dataclasses.replace(base, objective_states=objective_states)
        trainer = train.make_train(cfg, model_cfg, dag, 40, use_latency=True)
        rng = jax.random.key(0)
        start = trainer.jitted["init"](rng)
        state, _ = trainer.jitted["run"](start, rng, train.loss_weights(cfg), consts, 0, 6)
        return jax.tree.leaves(state.params)

    every, full, part = params_after(0), params_after(8), params_after(3)
    assert all(np.array_equal(a, b) for a, b in zip(every, full, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(every, part, strict=True))
    def identity(cfg):
        return runs.run_identity("student", model_cfg, cfg, teacher=None, data=None)["train"]

    assert identity(dataclasses.replace(base, objective_states=3))["objective_states"] == 3
    assert "objective_states" not in identity(base)
    with pytest.raises(config.ConfigError, match=r"objective_states \(9\) must be <= batch_size \(8\)"):
        dataclasses.replace(base, objective_states=9).validate()
    with pytest.raises(config.ConfigError, match="objective_states must be an integer >= 0"):
        dataclasses.replace(base, objective_states=-1).validate()
