"""The vmapped sweep equals separate training runs; its table and plot are written; members saved as runs."""

import csv
import dataclasses
import json

import jax
import numpy as np
import pytest
from test_train import CFG, SMALL, _data, _flat, _saved_params, _student

from offload_jax import cli, config, fit, runs, sweep

BASE = config.TrainConfig(steps=30, batch_size=64, learning_rate=5e-3, eval_every=0)


def test_sweep_equals_separate_runs(tmp_path):
    data = _data()
    # An untrained teacher is enough: its logits only have to be used the same way in both programs.
    runs.save_run(tmp_path / "teacher", _student(7), data.stats, SMALL, CFG, {"kind": "teacher"})
    teacher = runs.load_run(tmp_path / "teacher")
    points = sweep.grid([0, 1], [2.0], [0.5], ["ce", "latency"])
    rows, params, timing = sweep.run_sweep(data, SMALL, BASE, points, teacher=teacher, latency_weight=0.7)
    assert len(rows) == 4 and timing["members"] == 4
    assert [(r["seed"], r["loss"], r["latency_weight"]) for r in rows] == [
        (0, "ce", 0.0), (0, "latency", 0.7), (1, "ce", 0.0), (1, "latency", 0.7)]
    assert len({r["latency_ratio_mean"] for r in rows}) == 4  # members differ

    # Every member saved as the run directory `fit` would have written for its command.
    members = sweep.member_runs(tmp_path / "out" / "runs", data, SMALL, BASE, points, teacher=teacher,
                                latency_weight=0.7)
    saved = sweep.save_runs(members, data, SMALL, params, rows, teacher=teacher,
                            teacher_dir=str(tmp_path / "teacher"))
    assert [d.name for d in saved] == ["seed0_temp2_alpha0.5_ce", "seed0_temp2_alpha0.5_latency",
                                       "seed1_temp2_alpha0.5_ce", "seed1_temp2_alpha0.5_latency"]

    for i in (1, 3):  # seeds 0 and 1 (with the latency term: the two runs share one compilation)
        cfg = sweep.point_config(BASE, points[i], latency_weight=0.7)
        meta = fit.fit(tmp_path / f"run{i}", data, SMALL, cfg, kind="distill", teacher=teacher,
                         teacher_dir=str(tmp_path / "teacher"), progress=False)
        member = _flat(jax.tree.map(lambda p, i=i: p[i], params))
        np.testing.assert_allclose(member, _saved_params(tmp_path / f"run{i}"), rtol=1e-4, atol=1e-5)
        for k in sweep.METRIC_COLUMNS:
            np.testing.assert_allclose(rows[i][k], meta["metrics"][k], rtol=1e-4, atol=2e-3)
        # the saved member: the same parameters; `fit` with its command finds it finished
        np.testing.assert_array_equal(_saved_params(saved[i]), member)
        logged = []
        again = fit.fit(saved[i], data, SMALL, cfg, kind="distill", teacher=teacher,
                        teacher_dir=str(tmp_path / "teacher"), progress=False, log=logged.append)
        assert logged == [f"{saved[i]}: finished at step 30; nothing to do"]
        assert again["finished"] and again["sweep"]["member"] == saved[i].name
        assert again["metrics"]["objective_ratio_mean"] == rows[i]["objective_ratio_mean"]
        assert {k: again[k] for k in ("kind", "identity", "steps", "teacher", "train")} == {
            k: meta[k] for k in ("kind", "identity", "steps", "teacher", "train")}
    # a rerun finds every member finished: the table comes back from their records, nothing to train
    again = sweep.member_runs(tmp_path / "out" / "runs", data, SMALL, BASE, points, teacher=teacher,
                              latency_weight=0.7)
    assert sweep.finished_rows(again) == rows
    assert sweep.finished_rows(again[:1] + members[1:]) is None  # members[1:] were checked before saving
    # another command on the same directories is refused before any training
    with pytest.raises(runs.RunError, match="other settings.*steps"):
        sweep.member_runs(tmp_path / "out" / "runs", data, SMALL, dataclasses.replace(BASE, steps=31), points,
                          teacher=teacher, latency_weight=0.7)

    paths = sweep.write_results(tmp_path / "out", rows, {"timing": timing})
    with open(paths["csv"]) as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 4
    assert float(table[3]["latency_ratio_mean"]) == pytest.approx(rows[3]["latency_ratio_mean"])
    assert "| seed | temperature | alpha | loss |" in paths["md"].read_text()
    assert json.loads(paths["json"].read_text())["grouped"][1]["seeds"] == 2
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_grid_validation():
    with pytest.raises(config.ConfigError, match="--losses"):
        sweep.grid([0], [1.0], [1.0], ["ce", "hinge"])
    with pytest.raises(config.ConfigError, match="--alphas"):
        sweep.grid([0], [1.0], [1.5], ["ce"])
    with pytest.raises(config.ConfigError, match="--temperatures"):
        sweep.grid([0], [0.0], [1.0], ["ce"])
    # alpha 1 (no KD term) does not depend on the temperature: once per seed and loss, at the first one
    points = sweep.grid([0, 1, 2], [1.0, 4.0], [0.5, 1.0], ["ce", "latency"])
    assert len(points) == 3 * 2 * 2 + 3 * 2 and len(set(points)) == len(points)
    assert {p.temperature for p in points if p.alpha == 1.0} == {1.0}
    assert [p.temperature for p in sweep.grid([0], [4.0, 1.0], [1.0], ["ce"])] == [4.0]
    with pytest.raises(config.ConfigError, match="need a teacher"):
        sweep.run_sweep(_data(), SMALL, BASE, sweep.grid([0], [1.0], [0.5], ["ce"]), teacher=None)


@pytest.mark.slow  # its own dataset, sweep and training compiles (~30 s); the default run is near 10 min
def test_sweep_on_a_dag_dataset_equals_a_separate_run(tmp_path, capsys):
    from offload_jax import dataset
    from offload_jax.scenarios.dag.config import DagConfig

    data_dir = tmp_path / "dag"
    dataset.generate(data_dir, DagConfig(tasks=3, users=1), 700, 5, "enumerate", progress=False)
    args = ["sweep", "--data", str(data_dir), "--out", str(tmp_path / "out"), "--seeds", "0,1",
            "--temperatures", "1", "--alphas", "1", "--losses", "ce,latency", "--steps", "40",
            "--batch-size", "64", "--holdout", "100", "--hidden", "32", "--activation", "relu",
            "--norm", "none", "--latency-weight", "0.5", "--save-runs"]
    assert cli.main(args) == 0
    rows = json.loads((tmp_path / "out" / "sweep.json").read_text())["rows"]
    assert len(rows) == 4 and all("latency_ratio_mean" not in r for r in rows)  # the dag's J is not latency
    assert all(r["objective_ratio_mean"] >= 1.0 - 1e-6 for r in rows)
    assert "J / J*" in (tmp_path / "out" / "sweep.md").read_text()
    # member 3 (seed 1, with the sampled objective term) is the run `train` makes alone
    alone = tmp_path / "alone"
    same = [a for a in args[5:] if a not in ("--seeds", "0,1", "--temperatures", "1", "--alphas", "1",
                                              "--losses", "ce,latency", "--save-runs")]
    assert cli.main(["train", "--data", str(data_dir), "--out", str(alone), "--seed", "1", "--model",
                     "student", "--no-progress", "--eval-every", "0", *same]) == 0
    metrics = json.loads((alone / "run.json").read_text())["metrics"]
    assert rows[3]["objective_ratio_mean"] == pytest.approx(metrics["objective_ratio_mean"], rel=1e-4,
                                                            abs=2e-3)
    # the saved member 3 is that command's finished run: `train` into it has nothing to do, and
    # evaluate and export take it like any run
    member = tmp_path / "out" / "runs" / "seed1_temp1_alpha1_latency"
    assert rows[3]["run"] == "runs/seed1_temp1_alpha1_latency"
    capsys.readouterr()
    assert cli.main(["train", "--data", str(data_dir), "--out", str(member), "--seed", "1", "--model",
                     "student", "--no-progress", "--eval-every", "0", *same]) == 0
    assert "already finished (40 steps); nothing to do" in capsys.readouterr().err
    report = tmp_path / "eval.json"
    assert cli.main(["evaluate", "--data", str(data_dir), "--runs", str(member), "--json", str(report)]) == 0
    assert json.loads(report.read_text())["runs"][member.name]["objective_ratio_mean"] >= 1.0 - 1e-6
    assert cli.main(["export", "--run", str(member), "--out", str(tmp_path / "member.npz")]) == 0
    # the same sweep again: every member finished, the table rebuilt from the runs without training
    capsys.readouterr()
    assert cli.main(args) == 0
    assert "finished before" in capsys.readouterr().err
    again = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert again["rows"] == rows and again["info"]["timing"]["reused_runs"]
