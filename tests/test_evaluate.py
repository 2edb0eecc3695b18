"""Evaluation: metrics per policy, batching, the `offload-jax evaluate` JSON and table."""

import json
import os

import dag_reference as ref
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from offload_jax import cli, config, evaluate, features, metrics, models, policies, runs, scenarios
from offload_jax.scenarios.base import Objective
from offload_jax.scenarios.chain import cost
from offload_jax.scenarios.dag.config import DagConfig

ALIBABA = "/work/shared/data/alibaba_dags.json"

# Same system, pool and batch size N as tests/test_policies.py (compiled programs are reused).
CFG = config.SystemConfig(tasks=4, subcarriers=3)
SCENARIO = scenarios.of(CFG)
N = 256


SMALL_MODEL = config.ModelConfig(hidden=(16,), activation="relu", norm="none")


def _model(seed=0):
    return models.PlacementMLP(features.num_features(CFG), (CFG.tasks,), SMALL_MODEL,
                               rngs=nnx.Rngs(seed))


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    from offload_jax import dataset

    out = tmp_path_factory.mktemp("eval") / "ds"
    dataset.generate(out, CFG, N, seed=3, solver="enumerate", progress=False)
    return out


def test_evaluate_policies_metrics_and_batching(dataset_dir):
    from offload_jax import dataset

    data = dataset.load(dataset_dir)
    stats = features.compute_stats(jax.jit(features.raw_features)(data.states))
    pols = {name: policies.make_policy(name, scenario=SCENARIO)
            for name in ("optimal_dp", "local", "greedy", "random")}
    student = _model()
    pols["student"] = policies.model_policy(student, stats)
    whole = evaluate.evaluate_policies(data, pols, jax.random.key(0), batch_size=N)
    opt = whole["optimal_dp"]
    # Equal up to float32 rounding of latencies recomputed in another compiled program.
    assert opt["latency_ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    assert opt["latency_ratio_of_means"] == pytest.approx(1.0, abs=1e-6)
    assert opt["accuracy"] == 1.0 and opt["exact_match"] == 1.0 and opt["params"] is None
    for r in whole.values():  # the chain's objective is its latency; it has no energy
        assert r["objective_ratio_mean"] == r["latency_ratio_mean"]
        assert "energy_ratio_mean" not in r and "energy_mean_j" not in r
    assert whole["student"]["params"] == models.count_params(student) > 0
    keys = ("accuracy", "exact_match", "latency_ratio_mean", "latency_ratio_of_means", "latency_mean_s")
    costs = jax.jit(cost.stage_costs)(data.states)
    for name in ("local", "greedy", "student"):
        pred = jax.jit(pols[name].fn)(None, data.states)
        ref = jax.jit(metrics.summary)(costs, pred, data.label, data.latency)
        for key in keys:
            np.testing.assert_allclose(whole[name][key], float(ref[key]), rtol=1e-5, err_msg=key)
        np.testing.assert_allclose(whole[name]["per_task_accuracy"], ref["per_task_accuracy"], rtol=1e-6)
        assert whole[name]["num_states"] == N
    assert whole["local"]["latency_ratio_mean"] > 1.0
    assert whole["random"]["latency_ratio_mean"] > whole["greedy"]["latency_ratio_mean"]
    # Batches are combined exactly (state-weighted means, float64 sums).
    two = {name: pols[name] for name in ("greedy", "random")}
    batched = evaluate.evaluate_policies(data, two, jax.random.key(0), batch_size=N // 2)
    for key in keys:
        np.testing.assert_allclose(batched["greedy"][key], whole["greedy"][key], rtol=1e-6, err_msg=key)
    # The random policy is drawn per batch from fold_in(key, batch): same key, same result.
    again = evaluate.evaluate_policies(data, {"random": pols["random"]}, jax.random.key(0), batch_size=N // 2)
    assert again["random"] == batched["random"]
    with pytest.raises(config.ConfigError, match="batch_size"):
        evaluate.evaluate_policies(data, pols, jax.random.key(0), batch_size=0)


def test_markdown_table():
    row = {"accuracy": 0.5, "exact_match": 0.25, "latency_ratio_mean": 1.5, "latency_ratio_of_means": 1.25}
    table = evaluate.markdown_table({"local": {**row, "params": None}, "s": {**row, "params": 12345}})
    lines = table.splitlines()
    assert lines[0].startswith("| policy | params |") and len(lines) == 4
    assert lines[2] == "| local | - | 0.5000 | 0.2500 | 1.5000 | 1.2500 |"
    assert "| s | 12,345 |" in lines[3]
    # With energy (dag), the objective and energy ratios too.
    dag_row = {**row, "objective_ratio_mean": 1.125, "energy_ratio_mean": 2.0, "params": None}
    lines = evaluate.markdown_table({"greedy": dag_row}).splitlines()
    assert lines[0] == ("| policy | params | accuracy | exact match | objective ratio (mean) "
                        "| energy ratio (mean) | latency ratio (mean) | latency ratio of means |")
    assert lines[2] == "| greedy | - | 0.5000 | 0.2500 | 1.1250 | 2.0000 | 1.5000 | 1.2500 |"


def test_evaluate_cli_json(dataset_dir, tmp_path, capsys):
    from offload_jax import dataset

    ds = dataset.load(dataset_dir)
    stats = features.compute_stats(jax.jit(features.raw_features)(ds.states))
    model = _model()
    runs.save_run(tmp_path / "runs" / "my_student", model, stats, SMALL_MODEL, CFG, {"kind": "student"})
    out = tmp_path / "out" / "eval.json"
    argv = ["evaluate", "--data", str(dataset_dir), "--runs", str(tmp_path / "runs" / "my_student"),
            "--policies", "local,greedy,optimal_dp,optimal_enumerate", "--json", str(out),
            "--batch-size", str(N // 2)]
    assert cli.main(argv) == 0
    report = json.loads(out.read_text())
    assert list(report["runs"]) == ["local", "greedy", "optimal_dp", "optimal_enumerate", "my_student"]
    for name, r in report["runs"].items():
        for key in ("accuracy", "exact_match", "latency_ratio_mean", "latency_ratio_of_means", "params"):
            assert key in r, (name, key)
    for name in ("optimal_dp", "optimal_enumerate"):
        assert report["runs"][name]["latency_ratio_mean"] == pytest.approx(1.0, abs=1e-6)
        assert report["runs"][name]["latency_ratio_of_means"] == pytest.approx(1.0, abs=1e-6)
        assert report["runs"][name]["exact_match"] == 1.0
    assert report["runs"]["my_student"]["params"] == models.count_params(model)
    assert report["runs"]["local"]["params"] is None and report["num_states"] == N
    assert os.listdir(out.parent) == ["eval.json"]  # atomic write leaves no temporary file
    table = capsys.readouterr().out
    assert "| my_student | " in table and "| optimal_dp | - | 1.0000 | 1.0000 | 1.0000 | 1.0000 |" in table


def test_evaluate_cli_errors(dataset_dir, tmp_path, capsys):
    def fails(argv, message):
        with pytest.raises(SystemExit) as exc:
            cli.main(["evaluate", "--data", str(dataset_dir), *argv])
        assert exc.value.code == 2
        assert message in capsys.readouterr().err

    fails(["--policies", "local,best"], "--policies: unknown or unsupported ['best']")
    fails([], "nothing to evaluate")
    # (a run trained for another T is refused by policies.check_run_matches: tests/test_policies.py)
    fails(["--runs", str(tmp_path / "missing")], "does not exist")
    with pytest.raises(SystemExit) as exc:
        cli.main(["evaluate", "--data", str(tmp_path / "nodata"), "--policies", "local"])
    assert exc.value.code == 2 and "nodata" in capsys.readouterr().err


def test_scores_count_only_the_decisions_that_matter():
    """metrics.scores against numpy, with padding slots (mask False), one of them padding everywhere."""
    rng = np.random.default_rng(0)
    n, users, tasks = 64, 2, 4
    mask = rng.random((n, users, tasks)) < 0.7
    mask[:, 1, 3] = False
    label = np.where(mask, rng.integers(0, 3, mask.shape), 0).astype(np.int8)
    pred = np.where(rng.random(mask.shape) < 0.6, label, rng.integers(0, 3, mask.shape)).astype(np.int8)
    value, optimal = (Objective(*(rng.uniform(1.0, 2.0, shape).astype(np.float32)
                                  for shape in ((n,), (n, users), (n, users)))) for _ in range(2))
    got = jax.jit(metrics.scores)(pred, label, mask, value, optimal)
    same = pred == label
    lat, en = value.latency.sum(1, dtype=np.float64), value.energy.sum(1, dtype=np.float64)
    with np.errstate(invalid="ignore"):  # 0 / 0 where a slot is never real
        per_task = (same & mask).sum(0) / mask.sum(0)
    ratio = value.value / optimal.value.astype(np.float64)
    want = {"objective_ratio_mean": np.mean(ratio), "objective_ratio_excess_sq": np.mean((ratio - 1) ** 2),
            "latency_ratio_mean": np.mean(lat / optimal.latency.sum(1, dtype=np.float64)),
            "energy_ratio_mean": np.mean(en / optimal.energy.sum(1, dtype=np.float64)),
            "accuracy": same[mask].mean(), "exact_match": np.mean(np.all(same | ~mask, axis=(1, 2))),
            "per_task_accuracy": per_task, "latency_s": value.latency, "energy_j": value.energy,
            "objective_ratio": ratio}
    assert set(got) == set(want)
    for key, v in want.items():
        np.testing.assert_allclose(got[key], v, rtol=1e-6, err_msg=key)  # NaN where never real
    assert np.isnan(got["per_task_accuracy"][1, 3]) and 0.0 < float(got["exact_match"]) < 1.0
    chain = jax.jit(metrics.scores)(pred[:, 0], label[:, 0], None, Objective(value.value, value.value, None),
                                    Objective(optimal.value, optimal.value, None))
    assert "energy_ratio_mean" not in chain and float(chain["accuracy"]) == np.mean(same[:, 0])


# ------------------------------------------------------------------------------------------ dag scenario

# The system and shard size of tests/test_scenarios.py's dag dataset, and its batch of 16 states for the
# baselines: the compiled labeling programs and the exact search (~25 s to compile) are shared.
DAG = DagConfig(tasks=3, users=2, subcarriers=2, w_energy=0.5)
DAG_N, DAG_SHARD, DAG_BATCH = 300, 100, 100  # a batch a shard: generate and `optimal` share a program
DAG_BASELINES = ("local", "edge", "cloud", "random", "greedy", "local_search", "optimal")
WEIGHTS = ("w_latency", "w_energy", "kappa", "p_tx", "p_rx")


@pytest.fixture(scope="module")
def dag_dir(tmp_path_factory):
    from offload_jax import dataset

    out = tmp_path_factory.mktemp("dag") / "data"
    dataset.generate(out, DAG, DAG_N, seed=11, shard_size=DAG_SHARD, progress=False)
    return out


def _decisions(policy, states, key, batch):
    """A policy's placements, batch by batch with the keys `evaluate_policies` gives them."""
    decide = policy.fn if policy.host else jax.jit(policy.fn)
    n = states.cycles.shape[0]
    return np.concatenate([np.asarray(decide(jax.random.fold_in(key, b),
                                             jax.tree.map(lambda v, s=s: v[s:s + batch], states)))
                           for b, s in enumerate(range(0, n, batch))])


def _reference_objective(ds, pred, cfg):
    """(J, latency, energy) of placements `pred` on `ds`, state by state, from the slow float64 reference
    of the SPEC schedule."""
    arrays = {k: np.asarray(v) for k, v in ds.states._asdict().items()}
    w = {k: getattr(cfg, k) for k in WEIGHTS}
    return (np.asarray(v, np.float64) for v in zip(
        *(ref.objective(ref.sample(arrays, i), pred[i], w) for i in range(len(pred))), strict=True))


def _reference_metrics(ds, pred, cfg) -> dict:
    """The metrics of placements `pred` on `ds` from the slow float64 reference of the SPEC schedule."""
    arrays = {k: np.asarray(v) for k, v in ds.states._asdict().items()}
    j, lat, en = _reference_objective(ds, pred, cfg)
    lat, en = lat.sum(1), en.sum(1)
    opt_lat, opt_en = ds.latency.sum(1, dtype=np.float64), ds.values["energy"].sum(1, dtype=np.float64)
    real, same = arrays["cycles"] > 0, pred == ds.label
    ratio = j / ds.objective
    return {"objective_ratio_mean": np.mean(ratio),
            "objective_ratio_sem": np.std(ratio, ddof=1) / np.sqrt(len(ratio)),
            "latency_ratio_mean": np.mean(lat / opt_lat),
            "energy_ratio_mean": np.mean(en / opt_en), "latency_ratio_of_means": lat.sum() / opt_lat.sum(),
            "latency_mean_s": lat.mean(), "energy_mean_j": en.mean(), "accuracy": same[real].mean(),
            "exact_match": np.mean(np.all(same | ~real, axis=(1, 2))),
            "per_task_accuracy": (same & real).sum(0) / real.sum(0)}


@pytest.fixture(scope="module")
def dag_results(dag_dir):
    from offload_jax import dataset

    ds = dataset.load(dag_dir)
    pols = {name: policies.make_policy(name, scenario=ds.scenario) for name in DAG_BASELINES}
    return ds, pols, evaluate.evaluate_policies(ds, pols, jax.random.key(0), batch_size=DAG_BATCH,
                                                paired_with="local_search")


def test_every_dag_baseline_against_the_reference(dag_results):
    ds, pols, results = dag_results
    assert list(results) == list(DAG_BASELINES) and pols["optimal"].host
    # The exact search returns the labels, whose values every program computes bit for bit.
    for key in ("objective_ratio_mean", "latency_ratio_mean", "energy_ratio_mean", "latency_ratio_of_means",
                "accuracy", "exact_match"):
        assert results["optimal"][key] == 1.0, key
    assert results["optimal"]["per_task_accuracy"] == np.ones((2, 3)).tolist()
    for name, r in results.items():
        pred = _decisions(pols[name], ds.states, jax.random.key(0), DAG_BATCH)
        for key, want in _reference_metrics(ds, pred, DAG).items():
            atol = 1e-7 if key.endswith("_sem") else 0.0  # the reference in float64: optimal ~1e-8 off 1
            np.testing.assert_allclose(r[key], want, rtol=1e-5, atol=atol, err_msg=f"{name}: {key}")
        assert r["objective_ratio_mean"] >= 1.0 and r["params"] is None and r["num_states"] == DAG_N, name
    ratio = {name: r["objective_ratio_mean"] for name, r in results.items()}
    assert ratio["optimal"] < ratio["local_search"] <= ratio["greedy"] < min(ratio["local"], ratio["random"])
    with pytest.raises(config.ConfigError, match="batch_size"):
        evaluate.evaluate_policies(ds, pols, jax.random.key(0), batch_size=0)


def test_paired_differences_are_the_reference_ratios_differences(dag_results):
    """evaluate_policies(paired_with=...) (the fixture pairs with local search): each policy's per-state
    J / J* minus local search's on the same states, gathered over batches, against the float64
    reference's ratios of the same placements (its other metrics: the test above)."""
    ds, pols, results = dag_results
    names = ("local", "random", "greedy", "local_search")
    ratio = {n: next(_reference_objective(ds, _decisions(pols[n], ds.states, jax.random.key(0), DAG_BATCH),
                                          DAG)) / ds.objective for n in names}
    for n in names:
        d = ratio[n] - ratio["local_search"]
        r = results[n]
        assert r["paired_with"] == "local_search"
        np.testing.assert_allclose(r["objective_ratio_diff_mean"], d.mean(), rtol=1e-5, atol=1e-6, err_msg=n)
        np.testing.assert_allclose(r["objective_ratio_diff_sem"], d.std(ddof=1) / np.sqrt(DAG_N), rtol=1e-4,
                                   atol=1e-7, err_msg=n)
        for key, share in (("better_share", np.mean(d < -1e-6)), ("worse_share", np.mean(d > 1e-6))):
            assert abs(r[key] - share) <= 2 / DAG_N, (n, key, r[key], share)  # float32 near-ties aside
    # local search is itself; it starts from greedy's placement and never makes it worse
    assert results["local_search"]["objective_ratio_diff_mean"] == 0.0
    assert results["local_search"]["objective_ratio_diff_sem"] == 0.0
    assert results["greedy"]["better_share"] == 0.0 < results["greedy"]["worse_share"]
    assert results["local"]["objective_ratio_diff_mean"] > 0.1 and results["local"]["worse_share"] > 0.5
    # the paired standard error is not the two means' standard errors combined
    assert results["greedy"]["objective_ratio_diff_sem"] != pytest.approx(
        np.hypot(results["greedy"]["objective_ratio_sem"], results["local_search"]["objective_ratio_sem"]))
    table = evaluate.markdown_table(results)
    assert "ratio - local_search's (+- SEM), same states |" in table.splitlines()[0]
    assert "| local_search | - |" in table and "| +0.0000 +- 0.0000 |\n| optimal" in table
    with pytest.raises(config.ConfigError,
                       match=r"\(paired_with\) must name a policy or run evaluated here, "
                             r"one of \['greedy'\]"):
        evaluate.evaluate_policies(ds, {"greedy": pols["greedy"]}, jax.random.key(0), paired_with="optimal")


def test_train_defaults_take_the_passes_of_the_datas_users(dag_dir, tmp_path):
    """`train` / `distill` without --decode-steps build the dag defaults at the data's sizes
    (`config.default_model`): two users x 3 sub-tasks, one decision a pass, 6 passes for either network
    (one user's 3 would take 3); --decode-steps sets the count."""
    def model(*extra):
        argv = ["train", "--data", str(dag_dir), "--out", str(tmp_path / "unused"), *extra]
        return cli._model_config(cli._build_parser().parse_args(argv))

    assert model("--model", "student").decode_steps == model("--model", "teacher").decode_steps == 6
    assert model("--model", "student", "--decode-steps", "2").decode_steps == 2
    assert model("--model", "teacher").graph_width == config.DAG_TEACHER_MODEL.graph_width


def test_evaluate_cli_on_dag_data(dag_dir, dag_results, tmp_path, capsys):
    out = tmp_path / "eval.json"
    argv = ["evaluate", "--data", str(dag_dir), "--policies", "all", "--json", str(out),
            "--batch-size", str(DAG_BATCH), "--paired-with", "local_search"]
    assert cli.main(argv) == 0
    report = json.loads(out.read_text())
    sizes = (report["scenario"], report["users"], report["tasks"], report["num_states"])
    assert sizes == ("dag", 2, 3, DAG_N)
    assert list(report["runs"]) == list(DAG_BASELINES)
    for name, r in report["runs"].items():
        for key in ("objective_ratio_mean", "latency_ratio_mean", "energy_ratio_mean", "accuracy",
                    "exact_match", "latency_ratio_of_means", "per_task_accuracy", "params", "num_states"):
            assert key in r, (name, key)
    assert report["runs"] == dag_results[2]  # the library's numbers (paired too), through JSON
    d = report["runs"]["optimal"]
    row = (f"| optimal | - | 1.0000 | 1.0000 | 1.0000 | 1.0000 | 1.0000 | 1.0000 | "
           f"{d['objective_ratio_diff_mean']:+.4f} +- {d['objective_ratio_diff_sem']:.4f} |")
    assert d["objective_ratio_diff_mean"] < 0 and row in capsys.readouterr().out


def test_evaluate_cli_on_dag_data_refuses_other_names_and_chain_runs(dag_dir, dataset_dir, tmp_path, capsys):
    from offload_jax import dataset

    def error(argv):
        with pytest.raises(SystemExit) as exc:
            cli.main(["evaluate", "--data", str(dag_dir), *argv])
        assert exc.value.code == 2
        return capsys.readouterr().err

    assert error(["--policies", "greedy,optimal_dp"]) == (
        "offload-jax evaluate: error: --policies: unknown or unsupported ['optimal_dp'] for scenario 'dag'; "
        "allowed: local, edge, cloud, random, greedy, local_search, optimal, student_kd_ls, student_kd_ls1\n")
    assert error(["--policies", "local", "--paired-with", "greedy"]) == (
        "offload-jax evaluate: error: --paired-with (paired_with) must name a policy or run evaluated here, "
        "one of ['local'], got 'greedy'\n")
    assert error(["--policies", "student_kd_ls"]) == (
        "offload-jax evaluate: error: --policies student_kd_ls: starts from the run named 'student_kd'; give "
        "it with --runs DIR/student_kd\n")
    chain = dataset.load(dataset_dir)
    stats = features.compute_stats(jax.jit(features.raw_features)(chain.states))
    runs.save_run(tmp_path / "chain_student", _model(), stats, SMALL_MODEL, CFG, {"kind": "student"})
    err = error(["--runs", str(tmp_path / "chain_student")])
    assert err.count("\n") == 1 and ("run has scenario=chain, tasks=4, subcarriers=3, but the data has "
                                     "scenario=dag, users=2, tasks=3, subcarriers=2") in err
    # a dag run made for another U (and T): refused, naming both sides
    other = DagConfig(tasks=4, users=1, subcarriers=2)
    idx = jnp.arange(64, dtype=jnp.uint32)
    other_states = scenarios.of(other).sample(jax.random.key(0), other.params(), idx)
    model_cfg = config.ModelConfig(hidden=(8,), activation="relu", norm="none")
    model = models.build(model_cfg, other, rngs=nnx.Rngs(0))
    stats = features.compute_stats(features.raw_features(other_states))
    runs.save_run(tmp_path / "dag_student", model, stats, model_cfg, other, {"kind": "student"})
    err = error(["--runs", str(tmp_path / "dag_student")])
    assert err.count("\n") == 1 and ("run has scenario=dag, users=1, tasks=4, subcarriers=2, but the data "
                                     "has scenario=dag, users=2, tasks=3, subcarriers=2") in err


def test_evaluate_cli_scores_the_hybrid_from_the_named_run(dag_dir, dag_results, tmp_path):
    """--runs DIR/student_kd --policies student_kd_ls: the student's placements improved by local search,
    scored as the reference scores the same placements, never worse than the student's."""
    ds = dag_results[0]
    model_cfg = config.ModelConfig(hidden=(8,), activation="relu", norm="none")
    model = models.build(model_cfg, DAG, rngs=nnx.Rngs(2))
    stats = features.compute_stats(jax.jit(features.raw_features)(ds.states))
    runs.save_run(tmp_path / "student_kd", model, stats, model_cfg, DAG, {"kind": "distill"})
    out = tmp_path / "eval.json"
    assert cli.main(["evaluate", "--data", str(dag_dir), "--runs", str(tmp_path / "student_kd"), "--policies",
                     "student_kd_ls", "--json", str(out), "--batch-size", str(DAG_BATCH)]) == 0
    report = json.loads(out.read_text())["runs"]
    assert list(report) == ["student_kd_ls", "student_kd"]
    assert report["student_kd_ls"]["objective_ratio_mean"] < report["student_kd"]["objective_ratio_mean"]
    hybrid = policies.make_policy("student_kd_ls", scenario=ds.scenario,
                                  runs={"student_kd": runs.load_run(tmp_path / "student_kd")})
    pred = _decisions(hybrid, ds.states, jax.random.key(0), DAG_BATCH)
    for key, want in _reference_metrics(ds, pred, DAG).items():
        np.testing.assert_allclose(report["student_kd_ls"][key], want, rtol=1e-5, err_msg=key)


def test_evaluate_cli_decode_steps_overrides_the_passes_of_runs_that_decide_in_steps(dag_dir, dag_results,
                                                                                     tmp_path, capsys):
    """--decode-steps 2: a network trained to decide in 3 passes is scored in 2, as the library's policy in
    2 passes scores it (and the hybrid from it starts from that policy); a one-pass network beside it keeps
    its one pass; with no run that decides in steps, or K < 1, a clear error. (One K: each is a program
    of its own to compile.)"""
    ds = dag_results[0]
    stats = features.compute_stats(jax.jit(features.raw_features)(ds.states))
    stepped_cfg = config.ModelConfig(hidden=(8,), activation="relu", norm="none", decode_steps=3)
    one_cfg = config.ModelConfig(hidden=(8,), activation="relu", norm="none")
    for name, cfg, seed in (("student_kd", stepped_cfg, 3), ("one_pass", one_cfg, 4)):
        runs.save_run(tmp_path / name, models.build(cfg, DAG, rngs=nnx.Rngs(seed)), stats, cfg, DAG,
                      {"kind": "distill"})
    loaded = {name: runs.load_run(tmp_path / name) for name in ("student_kd", "one_pass")}
    k = 2  # neither the stepped run's 3 nor the one-pass run's 1
    out = tmp_path / "eval.json"
    assert cli.main(["evaluate", "--data", str(dag_dir), "--runs", str(tmp_path / "student_kd"),
                     str(tmp_path / "one_pass"), "--policies", "student_kd_ls1", "--decode-steps", str(k),
                     "--json", str(out), "--batch-size", str(DAG_BATCH)]) == 0
    report = json.loads(out.read_text())["runs"]
    assert [report[n]["decode_steps"] for n in ("student_kd_ls1", "student_kd", "one_pass")] == [k, k, 1]
    want = {"student_kd": policies.run_policy(loaded["student_kd"], "student_kd", k),
            "one_pass": policies.run_policy(loaded["one_pass"], "one_pass"),
            "student_kd_ls1": policies.make_policy("student_kd_ls1", scenario=ds.scenario, runs=loaded,
                                                   steps=k)}
    for name, pol in want.items():
        pred = _decisions(pol, ds.states, jax.random.key(0), DAG_BATCH)
        for key, value in _reference_metrics(ds, pred, DAG).items():
            np.testing.assert_allclose(report[name][key], value, rtol=1e-5, err_msg=f"{name}: {key}")
    # the override changes the decisions: 2 passes and the trained 3 differ on these states
    two, three = (_decisions(pol, ds.states, jax.random.key(0), DAG_BATCH)
                  for pol in (want["student_kd"], policies.run_policy(loaded["student_kd"], "s")))
    assert not np.array_equal(two, three)

    def error(argv):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2
        return capsys.readouterr().err

    base = ["evaluate", "--data", str(dag_dir), "--batch-size", str(DAG_BATCH)]
    msg = error([*base, "--runs", str(tmp_path / "one_pass"), "--decode-steps", "2"])
    assert "--decode-steps 2: none of the runs decides in steps" in msg and "one_pass" in msg
    assert "--decode-steps" in error([*base, "--runs", str(tmp_path / "student_kd"), "--decode-steps", "0"])
    with pytest.raises(config.ConfigError, match="--decode-steps must be an integer >= 1"):
        evaluate.evaluate_cli(dag_dir, [str(tmp_path / "student_kd")], "", None, decode_steps=0)


@pytest.mark.slow  # its own programs (file graphs): 2-4 min of compiles on 2 shared cores
def test_dag_padding_slots_are_not_scored(tmp_path):
    """On graphs with fewer sub-tasks than slots, accuracy counts the real sub-tasks only."""
    from offload_jax import dataset

    cfg = DagConfig(tasks=4, users=2, subcarriers=3, topology="file", topology_file=ALIBABA, w_energy=0.5)
    dataset.generate(tmp_path / "d", cfg, 200, seed=1, progress=False)
    ds = dataset.load(tmp_path / "d")
    real = np.asarray(ds.states.cycles) > 0
    assert not real.all()
    pols = {name: policies.make_policy(name, scenario=ds.scenario) for name in DAG_BASELINES}
    results = evaluate.evaluate_policies(ds, pols, jax.random.key(0), batch_size=64)
    for key in ("objective_ratio_mean", "accuracy", "exact_match"):
        assert results["optimal"][key] == 1.0, key
    for name, r in results.items():
        want = _reference_metrics(ds, _decisions(pols[name], ds.states, jax.random.key(0), 64), cfg)
        for key, value in want.items():
            got = np.asarray(r[key], dtype=np.float64)  # None (never real) -> NaN
            atol = 1e-7 if key.endswith("_sem") else 0.0
            np.testing.assert_allclose(got, value, rtol=1e-5, atol=atol, err_msg=f"{name}: {key}")
