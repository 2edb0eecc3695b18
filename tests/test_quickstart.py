"""The main job runs end to end on a tiny setting and writes the documented report."""

import dataclasses
import json

import pytest

from offload_jax import cli, policies, quickstart, scenarios
from offload_jax.config import ConfigError, TrainConfig
from offload_jax.scenarios.dag import config as dag_config
from offload_jax.scenarios.dag import graphs


def test_quickstart_tiny_end_to_end(tmp_path, capsys):
    out = tmp_path / "qs"
    assert cli.main(["quickstart", "--out", str(out), "--tiny", "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["tasks"] == 4
    assert list(report["policies"]) == list(policies.policy_names(scenarios.make("chain")))
    for name, p in report["policies"].items():
        assert p["latency_ratio_mean"] >= 1.0 - 1e-6, name
        assert p["decision_us_p50"] > 0, name
    assert abs(report["policies"]["optimal_dp"]["latency_ratio_mean"] - 1.0) < 1e-6
    assert abs(report["policies"]["optimal_enumerate"]["latency_ratio_mean"] - 1.0) < 1e-6
    # Even briefly trained, the student must beat the placements that ignore the state.
    fixed = min(report["policies"][n]["latency_ratio_mean"] for n in ("local", "edge", "cloud", "random"))
    assert report["policies"]["student_kd"]["latency_ratio_mean"] < fixed
    dataset_dir = out / report["dataset"]
    manifest = json.loads((dataset_dir / "manifest.json").read_text())
    assert manifest["format"] == "offload-jax-dataset/1" and manifest["tasks"] == 4
    for png in ("latency_ratio.png", "decision_latency.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| student_kd |" in (out / "report.md").read_text()
    assert "| student_kd |" in capsys.readouterr().out


@pytest.mark.slow  # compiles every dag policy, the exact search included (~2.5 min on 2 cores)
def test_quickstart_dag_tiny_end_to_end(tmp_path, capsys):
    out = tmp_path / "qs"
    assert cli.main(["quickstart", "--scenario", "dag", "--out", str(out), "--tiny", "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert (report["scenario"], report["users"], report["tasks"]) == ("dag", 2, 3)
    scenario = scenarios.make("dag", {"users": 2, "tasks": 3})
    assert list(report["policies"]) == list(policies.policy_names(scenario))
    for name, p in report["policies"].items():
        assert p["objective_ratio_mean"] >= 1.0 - 1e-6 and p["decision_us_p50"] > 0, name
    assert report["policies"]["optimal"]["objective_ratio_mean"] == 1.0
    assert report["policies"]["optimal"]["objective_ratio_sem"] == 0.0
    assert report["policies"]["local"]["objective_ratio_sem"] > 0.0
    assert report["policies"]["optimal"]["timed_as"].startswith("host driver")
    hybrid, one_round, student = (report["policies"][n]["objective_ratio_mean"]
                                  for n in ("student_kd_ls", "student_kd_ls1", "student_kd"))
    assert hybrid <= one_round <= student and report["timing_settings"]["states"] == 1
    fixed = min(report["policies"][n]["objective_ratio_mean"] for n in ("local", "edge", "cloud", "random"))
    assert report["policies"]["student_kd"]["objective_ratio_mean"] < fixed
    for name, run in report["runs"].items():
        assert run["path"] == f"runs/{name}" and (out / run["path"] / "run.json").exists()
    manifest = json.loads((out / report["dataset"] / "manifest.json").read_text())
    assert manifest["format"] == "offload-jax-dataset/2" and manifest["scenario"] == "dag"
    assert manifest["system"]["topology"] == "layered"  # evaluated on layered graphs ...
    train = json.loads((out / report["train_dataset"] / "manifest.json").read_text())
    assert train["system"]["topology"] == "file"  # ... trained on the synthetic mixture
    student = json.loads((out / "runs" / "student_kd" / "run.json").read_text())
    assert student["identity"]["train"]["targets"] == "teacher_ls"
    scored = student["identity"]["train"]["objective_states"]
    assert scored == quickstart.TINY_DAG.student_objective_states > 0
    for name in ("teacher", "student_kd", "student_ce"):  # the preset's learning rate, not TrainConfig's
        got = json.loads((out / "runs" / name / "run.json").read_text())["identity"]["train"]["learning_rate"]
        assert got == quickstart.TINY_DAG.learning_rate != TrainConfig().learning_rate
    for png in ("objective_ratio.png", "decision_latency.png", "quality_vs_time.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| student_kd |" in (out / "report.md").read_text() and (out / "student_kd.npz").exists()
    assert "| optimal | 1.0000 +- 0.0000 | 1.0000 |" in (out / "report.md").read_text()


def test_dag_quickstart_trains_on_synthetic_graphs_and_evaluates_on_the_system(tmp_path):
    qcfg = dataclasses.replace(quickstart.TINY_DAG, train_graphs=20, seed=3).validate()
    train = qcfg.train_system(tmp_path)
    assert train.cfg.topology == "file" and qcfg.system().cfg.topology == "layered"
    assert (train.cfg.users, train.cfg.tasks) == (qcfg.users, qcfg.tasks)
    assert dag_config.read_topology_file(train.cfg.topology_file) == graphs.mixture(3, 20, qcfg.tasks)
    assert train.cfg.topology_file_sha256 == dag_config.file_sha256(train.cfg.topology_file)
    assert dataclasses.replace(qcfg, train_graphs=0).train_system(tmp_path).cfg.topology == "layered"
    with pytest.raises(ConfigError, match="train_graphs is a dag key"):
        dataclasses.replace(quickstart.TINY, train_graphs=5).validate()
    with pytest.raises(ConfigError, match="train_graphs must be an integer >= 0"):
        dataclasses.replace(qcfg, train_graphs=-1).validate()
    with pytest.raises(ConfigError, match=r"train_tree_share must be in \[0, 1\], got 2"):
        dataclasses.replace(qcfg, train_tree_share=2).validate()
    treed = dataclasses.replace(qcfg, train_tree_share=0.5).train_system(tmp_path / "treed")
    assert dag_config.read_topology_file(treed.cfg.topology_file) == graphs.mixture(3, 20, qcfg.tasks,
                                                                                  tree_share=0.5)
    full = dataclasses.replace(qcfg, train_full_share=1.0).train_system(tmp_path / "full")
    assert {g.tasks for g in dag_config.read_topology_file(full.cfg.topology_file)} == {qcfg.tasks}
    assert "full_share=1.0" in json.loads(open(full.cfg.topology_file).read())["generator"]
    with pytest.raises(ConfigError, match=r"train_full_share must be in \[0, 1\], got -0.5"):
        dataclasses.replace(qcfg, train_full_share=-0.5).validate()
    ordered = dataclasses.replace(qcfg, train_ordered_share=0.5).train_system(tmp_path / "ordered")
    assert dag_config.read_topology_file(ordered.cfg.topology_file) == graphs.mixture(3, 20, qcfg.tasks,
                                                                                    ordered_share=0.5)
    assert "ordered_share=0.5" in json.loads(open(ordered.cfg.topology_file).read())["generator"]
    with pytest.raises(ConfigError, match=r"train_ordered_share must be in \[0, 1\], got 1.5"):
        dataclasses.replace(qcfg, train_ordered_share=1.5).validate()
    with pytest.raises(ConfigError, match=r"timing_states \(2000\) must be <= timing_batch \(1024\)"):
        dataclasses.replace(qcfg, timing_states=2000).validate()
    with pytest.raises(ConfigError, match="timing_states must be an integer >= 1"):
        dataclasses.replace(qcfg, timing_states=0).validate()
    with pytest.raises(ConfigError, match="timing_rounds must be an integer >= 1"):
        dataclasses.replace(qcfg, timing_rounds=0).validate()
    assert quickstart.DAG.student_targets == qcfg.student_targets == "teacher_ls"
    with pytest.raises(ConfigError, match=r"student_targets must be one of \['labels', 'teacher', "
                                          r"'teacher_ls'\], got 'optimal'"):
        dataclasses.replace(qcfg, student_targets="optimal").validate()
    with pytest.raises(ConfigError, match="student_targets 'teacher_ls' needs the dag scenario's local "
                                          "search, got scenario 'chain'"):
        dataclasses.replace(quickstart.TINY, student_targets="teacher_ls").validate()
    with pytest.raises(ConfigError, match=r"student_objective_states must be an integer in "
                                          r"\[0, batch_size=256\], got 300"):
        dataclasses.replace(qcfg, student_objective_states=300).validate()
    with pytest.raises(ConfigError, match="learning_rate must be a finite number > 0, got 0.0"):
        dataclasses.replace(qcfg, learning_rate=0.0).validate()
