"""The experiment scripts on tiny settings, checked against direct recomputation.

The end-to-end run of compare_policies.py trains a whole quickstart, so it is marked slow; its
sweep core (pinned datasets, every policy scored) is tested fast here.
"""

import json

import jax
import numpy as np
import pytest
from conftest import import_script
from flax import nnx

from offload_jax import config, dataset, evaluate, features, fit, models, policies, runs, scenarios, splits
from offload_jax.scenarios.chain import cost

CFG = config.SystemConfig(tasks=3, subcarriers=3)
PNG = b"\x89PNG\r\n\x1a\n"


def _script(name: str):
    """experiments/NAME.py as a module."""
    return import_script("experiments", name)


@pytest.fixture(scope="module")
def scripts():
    """The two scripts as modules."""
    return _script("compare_policies"), _script("distill_ablation")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny dataset, a held-out dataset and a briefly trained small teacher."""
    root = tmp_path_factory.mktemp("exp")
    dataset.generate(root / "train", CFG, 1200, seed=0, progress=False)
    dataset.generate(root / "val", CFG, 300, seed=1, progress=False)
    data = splits.load_data(root / "train", holdout=100)
    teacher_cfg = config.ModelConfig(hidden=(32, 32), activation="gelu", norm="layer")
    fit.fit(root / "teacher", data, teacher_cfg, config.TrainConfig(steps=40, batch_size=64, eval_every=0),
              kind="teacher", progress=False, log=lambda msg: None)
    return root


@pytest.mark.slow  # ~2-3 min of compiles on 2 cores: keeps the default run under its budget
def test_distill_ablation_tiny(scripts, tiny_run, tmp_path):
    _, ablation = scripts
    out = tmp_path / "ablation"
    argv = ["--tiny", "--teacher", str(tiny_run / "teacher"), "--data", str(tiny_run / "train"),
            "--val-data", str(tiny_run / "val"), "--out", str(out), "--widths", "8,16"]
    assert ablation.main(argv) == 0
    report = json.loads((out / "distill_ablation.json").read_text())
    budget = ablation.TINY_BUDGET
    per_width = len(budget.seeds) * (len(budget.temperatures) * len(budget.alphas) + 1)
    assert len(report["rows"]) == 2 * per_width
    assert report["num_eval"] == 300 and report["num_train"] == 1200
    for w in (8, 16):
        model_cfg = ablation.student_model(w)
        in_features = features.num_inputs(model_cfg.inputs, CFG)
        ref_model = models.PlacementMLP(in_features, (CFG.tasks,), model_cfg, rngs=nnx.Rngs(0))
        assert {r["params"] for r in report["rows"] if r["width"] == w} == {models.count_params(ref_model)}
    # Groups are the mean and sample std of the rows; labels-only rows have alpha 1.
    for g in report["groups"]:
        vals = [r["latency_ratio_mean"] for r in report["rows"]
                if (r["width"], r["temperature"], r["alpha"]) == (g["width"], g["temperature"], g["alpha"])]
        assert len(vals) == g["seeds"] == len(budget.seeds)
        assert g["latency_ratio_mean"] == pytest.approx(np.mean(vals), rel=1e-12)
        assert g["latency_ratio_mean_std"] == pytest.approx(np.std(vals, ddof=1), rel=1e-9)
        assert g["latency_ratio_mean"] >= 1.0 - 1e-6
    assert sum(g["alpha"] == 1.0 for g in report["groups"]) == 2
    for v in report["verdicts"]:
        ce = next(g for g in report["groups"] if g["width"] == v["width"] and g["alpha"] == 1.0)
        assert v["reference_gain"] == pytest.approx(ce["latency_ratio_mean"]
                                                    - v["reference"]["latency_ratio_mean"])
        assert v["kd_helps"] == (v["reference_gain"] > 2 * v["gain_se"])
    # The teacher's reference number equals an independent evaluation of the teacher as a policy.
    teacher = runs.load_run(tiny_run / "teacher")
    ref = evaluate.evaluate_policies(dataset.load(tiny_run / "val"), {"t": policies.run_policy(teacher, "t")},
                                     jax.random.key(0))["t"]
    assert report["teacher"]["metrics"]["latency_ratio_mean"] == pytest.approx(ref["latency_ratio_mean"],
                                                                              rel=1e-5)
    for name in report["plots"]:
        assert (out / name).read_bytes()[:8] == PNG
    assert len(report["plots"]) == 3
    md = (out / "distill_ablation.md").read_text()
    assert "| 8 |" in md and report["summary"] in md


@pytest.mark.slow  # needs the tiny teacher run of the test above
def test_distill_ablation_refuses_bad_flags(scripts, tiny_run, tmp_path, capsys):
    _, ablation = scripts
    base = ["--teacher", str(tiny_run / "teacher"), "--data", str(tiny_run / "train"), "--out", str(tmp_path)]
    for flags, words in ((["--seeds", "0"], "--seeds"), (["--alphas", "0.5,1.5"], "--alphas"),
                         (["--widths", "8,x"], "--widths"), (["--temperatures", "0"], "--temperatures")):
        with pytest.raises(SystemExit) as exc:
            ablation.main(base + ["--tiny", *flags])
        assert exc.value.code == 2
        assert words in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ablation.main(["--teacher", str(tmp_path / "nothing"), "--data", str(tiny_run / "train"),
                       "--out", str(tmp_path), "--tiny"])
    assert "nothing" in capsys.readouterr().err


def test_pinned_sweep_scores_every_policy(scripts, tmp_path):
    compare, _ = scripts
    names = ("local", "greedy", "optimal_dp", "optimal_enumerate")
    pols = {n: policies.make_policy(n, scenario=scenarios.of(CFG)) for n in names}
    sweep = compare.pinned_sweep(pols, CFG, "backhaul_rate_range", (5e6, 1e8), tmp_path, "bh",
                                 num_states=200, enumerate_states=40, seed0=7)
    assert sweep["x"] == [5e6, 1e8] and sweep["enumerate_states"] == 40
    for i, x in enumerate(sweep["x"]):
        ds = dataset.load(sweep["datasets"][i])
        assert ds.manifest["system"]["backhaul_rate_range"] == [x, x]
        assert ds.manifest["seed"] == 7 + i and ds.label.shape == (200, CFG.tasks)
        np.testing.assert_allclose(ds.states.backhaul_rate, x, rtol=1e-6)
        # Reference: each policy's latency from the SPEC cost model, over the dataset's optimal latency.
        for name in ("local", "greedy"):
            pred = jax.jit(pols[name].fn)(None, ds.states)
            ratio = np.asarray(jax.jit(cost.latency)(ds.states, pred)) / np.asarray(ds.latency)
            assert sweep["latency_ratio_mean"][name][i] == pytest.approx(float(ratio.mean()), rel=1e-5)
        assert sweep["latency_ratio_mean"]["optimal_dp"][i] == pytest.approx(1.0, abs=1e-6)
        assert sweep["latency_ratio_mean"]["optimal_enumerate"][i] == pytest.approx(1.0, abs=1e-6)
        assert sweep["optimal_latency_mean_s"][i] == pytest.approx(float(np.mean(ds.latency)), rel=1e-6)


@pytest.mark.slow
def test_compare_policies_tiny_end_to_end(scripts, tmp_path):
    compare, _ = scripts
    out = tmp_path / "cmp"
    assert compare.main(["--out", str(out), "--tiny", "--no-progress"]) == 0
    report = json.loads((out / "compare_policies.json").read_text())
    base = json.loads((out / "base" / "report.json").read_text())
    assert report["default"]["policies"] == base["policies"]  # (a) and (c) come from the base as is
    tasks = report["sweeps"]["tasks"]
    assert tasks["x"] == [4] and tasks["runs"] == ["base"]  # the tiny T sweep is the base itself
    assert not (out / "T4").exists()
    for tag, key in (("snr", "mean_snr_db_range"), ("backhaul", "backhaul_rate_range")):
        sweep = report["sweeps"][tag]
        assert sweep["key"] == key
        assert list(sweep["latency_ratio_mean"]) == list(policies.policy_names(scenarios.of(CFG)))
        for name, ratios in sweep["latency_ratio_mean"].items():
            assert len(ratios) == len(sweep["x"]) and min(ratios) >= 1.0 - 1e-6, name
        np.testing.assert_allclose(sweep["latency_ratio_mean"]["optimal_dp"], 1.0, atol=1e-6)
    for name in report["plots"]:
        assert (out / name).read_bytes()[:8] == PNG
    assert "| student_kd |" in (out / "compare_policies.md").read_text()


def test_student_ls_report_takes_each_number_from_its_source(tmp_path):
    """experiments/student_ls.py --part report: the hybrid's quality from its evaluate JSONs, the other
    policies' from dag_learning.json, decision times from the timing JSONs (synthetic inputs)."""
    student_ls = _script("student_ls")
    learning, out = tmp_path / "dag_learning", tmp_path / "out"
    learning.mkdir()
    out.mkdir()
    base = {n: {"objective_ratio": 1.5 + i / 10, "decision_us_p50": 100.0 * (i + 1)}
            for i, n in enumerate(("greedy", "local_search", "optimal", "teacher", "student_kd"))}
    doc = {"plane": {s: base for s in student_ls.PLANE if s != "U2xT5"}, "users": base,
           "families": dict.fromkeys(student_ls.FAMILIES, base),
           "generalization": {"quickstart_to_file": base}}
    (learning / "dag_learning.json").write_text(json.dumps(doc))
    for k, case in enumerate([*student_ls.PLANE, *(f"family_{f}" for f in student_ls.FAMILIES), "alibaba"]):
        runs_json = {"student_kd_ls": {"objective_ratio_mean": 1.01 + k / 1000},
                     "student_kd_ls1": {"objective_ratio_mean": 1.1 + k / 1000},
                     "student_kd": {"objective_ratio_mean": 1.2}}
        (out / f"quality_{case}.json").write_text(json.dumps({"runs": runs_json}))
    timing = {"settings": {"states": 100}, "load_avg_1min": [0.1, 0.2], "device": "cpu",
              "policies": {n: {"p50_us": 10.0 * (i + 1), "p99_us": 50.0}
                           for i, n in enumerate(student_ls.TIMED)}}
    (out / "timing_T14.json").write_text(json.dumps(timing))
    report = student_ls.part_report(out, learning)
    t14, t8 = report["plane"]["T14"], report["plane"]["T8"]
    assert t14["student_kd_ls"] == {"objective_ratio": 1.01 + 3 / 1000, "decision_us_p50": 40.0,
                                    "decision_us_p99": 50.0}
    assert t14["student_kd_ls1"] == {"objective_ratio": 1.1 + 3 / 1000, "decision_us_p50": 50.0,
                                     "decision_us_p99": 50.0}
    assert t14["greedy"]["objective_ratio"] == 1.5 and t14["student_kd"]["objective_ratio"] == 1.2
    assert t14["optimal"] == {"objective_ratio": 1.7, "decision_us_p50_one_state": 300.0}
    assert "decision_us_p50" not in t8["student_kd_ls"] and t8["_timing"] is None
    assert report["unseen"]["alibaba"]["student_kd_ls"] == 1.01 + 10 / 1000
    assert report["unseen"]["family_chain"]["local_search"] == 1.6
    md = (out / "student_ls.md").read_text()
    assert "| T14 | 1.500 (10) | 1.600 (20) | 1.200 (30) | 1.013 (40) | 1.103 (50) | 1.700 (300) |" in md
    assert (out / "student_ls.png").read_bytes().startswith(PNG)


def test_long_run_summary_reads_each_seed_once_and_refuses_disagreeing_repeats(tmp_path):
    """experiments/long_run_summary.py: a sweep trained at two temperatures with alpha 1 holds each
    seed's student twice; it is counted once, and two different students under one seed are refused."""
    summary_script = _script("long_run_summary")
    info = {"teacher": "/t", "num_train": 300, "train": {"steps": 8, "targets": "teacher_ls",
                                                          "objective_states": 4},
            "timing": {"run_s": 1.0, "members": 4}}
    rows = [{"seed": s, "temperature": t, "objective_ratio_mean": r}
            for s, r in ((0, 1.10), (1, 1.12)) for t in (1.0, 4.0)]
    (tmp_path / "sweep_slots_kd.json").write_text(json.dumps({"info": info, "rows": rows}))
    ce_info = {**info, "teacher": None, "train": {"steps": 8}}  # labels: no targets key (its default)
    ce_rows = [{"seed": s, "temperature": 2.0, "objective_ratio_mean": r} for s, r in ((0, 1.2), (1, 1.3))]
    (tmp_path / "sweep_slots_ce.json").write_text(json.dumps({"info": ce_info, "rows": ce_rows}))
    teacher = {"runs": {"teacher_slots": {"objective_ratio_mean": 1.05, "params": 1000}}}
    (tmp_path / "teacher_slots_eval.json").write_text(json.dumps(teacher))
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"policies": {"greedy": {"objective_ratio_mean": 1.4},
                                               "local_search": {"objective_ratio_mean": 1.2}}}))
    assert summary_script.main(["--dir", str(tmp_path), "--report", str(report)]) == 0
    summary = json.loads((tmp_path / "students.json").read_text())
    kd = summary["students"]["teacher_ls + objective term, teacher 1"]
    assert kd["seeds"] == {"0": 1.10, "1": 1.12} and kd["mean"] == pytest.approx(1.11)
    assert kd["std"] == pytest.approx(0.01) and kd["targets"] == "teacher_ls"
    assert summary["students"]["labels (CE)"]["targets"] == "labels"
    assert summary["teachers"]["teacher_slots"]["objective_ratio_mean"] == 1.05
    md = (tmp_path / "students.md").read_text()
    assert "| labels (CE) | labels | - | 1.2500 +- 0.0500 | 1.2000 / 1.3000 |" in md
    assert "local search 1.200, greedy 1.400" in md
    assert (tmp_path / "students.png").read_bytes().startswith(PNG)
    rows[1]["objective_ratio_mean"] = 1.11  # seed 0 at temperature 4: another student
    (tmp_path / "sweep_slots_kd.json").write_text(json.dumps({"info": info, "rows": rows}))
    with pytest.raises(SystemExit) as exc:
        summary_script.main(["--dir", str(tmp_path), "--report", str(report)])
    assert exc.value.code == 2


def test_classic_graphs_are_valid_topologies(tmp_path):
    """experiments/dag_learning.py's CLASSICS: each graph is what its comment says (Gaussian elimination
    of a 4 x 4 matrix has (m^2 + m - 2) / 2 = 9 tasks; in_tree_10 is out_tree_10 reversed), and the
    scenario reads them from a topology file into exactly their adjacency (padded to T = 10)."""
    dag_learning = _script("dag_learning")
    classics = dag_learning.CLASSICS
    assert classics["gaussian_elimination_m4"][0] == (4 * 4 + 4 - 2) // 2
    out_tree, in_tree = classics["out_tree_10"][1], classics["in_tree_10"][1]
    assert sorted(9 - j for j, _ in in_tree) == list(range(1, 10)) and len(in_tree) == len(out_tree)
    want = {}
    for name, (tasks, edges) in classics.items():
        assert all(0 <= i < j < tasks for i, j in edges) and len(set(edges)) == len(edges), name
        assert {v for e in edges for v in e} == set(range(tasks)), name  # no isolated sub-task
        adj = np.zeros((10, 10), bool)
        adj[tuple(np.array(edges).T)] = True
        want[name] = adj
    path = tmp_path / "classics.json"
    path.write_text(json.dumps({"format": "offload-jax-topologies/1", "graphs": [
        {"name": n, "tasks": t, "edges": [list(e) for e in edges]} for n, (t, edges) in classics.items()]}))
    dag = scenarios.make("dag", {"tasks": 10, "topology": "file", "topology_file": str(path)})
    states = dag.sample(jax.random.key(0), dag.params, jax.numpy.arange(96, dtype=jax.numpy.uint32))
    seen = set()
    for adj, cycles in zip(np.asarray(states.adj[:, 0]), np.asarray(states.cycles[:, 0]), strict=True):
        name = next(n for n, a in want.items() if np.array_equal(a, adj))
        assert np.count_nonzero(cycles) == classics[name][0]  # real sub-tasks, then padding
        seen.add(name)
    assert seen == set(classics)
    # One graph alone in its file (what dag_learning.py and decoding.py --part unseen score on): written
    # where the scripts look, the same bytes again on a second call, read back as that graph.
    one = dag_learning.classic_topology_file(tmp_path, "fork_join_2x3")
    assert one == tmp_path / "classics" / "fork_join_2x3.json"
    first = one.read_bytes()
    assert dag_learning.classic_topology_file(tmp_path, "fork_join_2x3").read_bytes() == first
    alone = scenarios.make("dag", {"tasks": 10, "topology": "file", "topology_file": str(one)})
    two = alone.sample(jax.random.key(1), alone.params, jax.numpy.arange(2, dtype=jax.numpy.uint32))
    assert all(np.array_equal(a, want["fork_join_2x3"]) for a in np.asarray(two.adj)[:, 0])


def test_mirror_mixture_markdown_compares_the_same_cases():
    """experiments/mirror_mixture.py's table: each case's ratios, quickstart -> mirrored, per policy."""
    mirror = _script("mirror_mixture")

    def side(shift):
        rows = {n: {"objective_ratio": 1.1 + shift + k / 100} for k, n in enumerate(mirror.COMPARED)}
        return {"layered": rows, "alibaba": rows, "families": {"chain": rows}, "classics": {"mesh_3x3": rows}}

    md = mirror.markdown({"mirror_share": 0.5, "quickstart": side(0.0), "mirrored": side(0.2)})
    assert ("| family chain | 1.100 -> 1.300 | 1.110 -> 1.310 | 1.120 -> 1.320 | 1.130 -> 1.330 | "
            "1.140 -> 1.340 |") in md
    assert md.count("\n| ") == 1 + 4  # the header, then layered, alibaba, one family, one shape


def test_tree_sites_markdown_shows_label_and_student_shares():
    tree_sites = _script("tree_sites")
    result = {"out_tree_10": {"states": 1000, "student_ratio": 1.283, "accuracy": [0.84, 0.5],
                              "label_share": [[0.2, 0.56, 0.24], [0.3, 0.3, 0.4]],
                              "student_share": [[0.16, 0.58, 0.26], [0.1, 0.5, 0.4]]}}
    md = tree_sites.markdown(result)
    assert "## out_tree_10 (student J / J* 1.283, 1,000 states)" in md
    assert "| 0 | 20 / 16 | 56 / 58 | 24 / 26 | 0.84 |" in md
    assert "| 1 | 30 / 10 | 30 / 50 | 40 / 40 | 0.50 |" in md


def test_decoding_markdown_shows_every_pass_count_and_the_one_pass_networks():
    """experiments/decoding.py's tables from a result in its JSON form (string keys)."""
    decoding = _script("decoding")
    steps = {"quality": {"teacher": {str(k): 1.2 - k / 100 for k in decoding.STEPS},
                         "student_kd": {str(k): 1.3 - k / 100 for k in decoding.STEPS}},
             "jax_us": {str(k): 10.0 + k for k in decoding.STEPS},
             "jax_p99_us": {str(k): 20.0 + k for k in decoding.STEPS},
             "numpy_us": {str(k): 19.0 + 13 * k for k in decoding.STEPS},
             "greedy_us": 50.0, "identity_us": 5.5, "load_avg": 1.0}
    rows = {n: {"objective_ratio": 1.05 + k / 100} for k, n in enumerate(decoding.SHOWN)}
    before = {"alibaba": {"teacher": {"objective_ratio": 1.5}, "student_kd": {"objective_ratio": 1.6}}}
    md = decoding.markdown({"steps": steps, "unseen": {"alibaba": rows}}, before)
    assert "| 5 | 1.150 | 1.250 | 15.0 / 25 | 84.0 |" in md
    assert "| alibaba | 1.050 | 1.060 | 1.070 | 1.080 | 1.090 | 1.100 | 1.500 | 1.600 |" in md
    assert md.count("\n| ") == 2 + len(decoding.STEPS) + 1
    assert "passes, student" not in md  # a result written before the runs' counts were recorded
    with_passes = decoding.markdown({"unseen": {"alibaba": rows}, "passes": {"teacher": 5, "student_kd": 4}},
                                    before)
    assert "teacher 5 passes, student 4)" in with_passes


def test_passes_markdown_reads_the_json_form():
    """experiments/passes.py's table from a result as passes.json holds it (pass counts as strings)."""
    passes = _script("passes")
    steps = ["1", "3"]
    result = {"runs": ["a", "b"], "data": "eval", "steps": [1, 3], "device": "cpu", "load_avg": 0.5,
              "quality": {n: {k: {"objective_ratio_mean": 1.1 - int(k) / 100 + off,
                                  "objective_ratio_sem": sem} for k in steps}
                          for n, off, sem in (("a", 0.0, 0.001), ("b", 0.002, 0.003))},
              "mean_over_runs": {"1": 1.091, "3": 1.071}, "jax_us_p50": {"1": 20.0, "3": 40.0},
              "numpy_us_p50": {"1": 50.0, "3": 100.0}, "identity_us_p50": 5.0,
              "baselines": {"greedy": {"objective_ratio_mean": 1.4, "decision_us_p50": 60.0}}}
    md = passes.markdown(result)
    assert "| 3 | 1.0710 | 1.0700 / 1.0720 | 0.0030 | 40.0 | 100.0 |" in md
    assert "greedy 1.4000 at 60.0 us" in md and md.count("\n| ") == 1 + len(steps)  # header + rows


def test_unseen_graph_sets_are_valid_topologies_and_the_verdict_names_misses(tmp_path):
    """experiments/unseen_graphs.py: each shape is a valid graph of at most 10 sub-tasks, every set's file
    is read by the scenario into exactly its adjacency, the random-order sets are deterministic with edge
    shares near their p, and the markdown names a set where the student misses the issue's target."""
    unseen = _script("unseen_graphs")
    for name, (tasks, edges) in unseen.SHAPES.items():
        assert tasks <= 10 and all(0 <= i < j < tasks for i, j in edges), name
        assert len(set(edges)) == len(edges), name
    assert unseen.SHAPES["independent_10"][1] == []
    assert sorted(j for _, j in unseen.SHAPES["star_out_10"][1]) == list(range(1, 10))
    fft = unseen.SHAPES["fft_butterfly_10"][1]
    assert [sum(1 for i, j in fft if j == v) for v in range(10)] == [0, 1, 1, 1, 1, 2, 2, 2, 2, 4]
    again = unseen.random_order_graphs(0.3)
    assert again == unseen.random_order_graphs(0.3) and len(again) == unseen.RANDOM_GRAPHS
    for p in unseen.RANDOM_P:
        share = np.mean([len(g.edges) for g in unseen.random_order_graphs(p)]) / 45
        assert abs(share - p) < 0.03, (p, share)
    files = unseen.topology_files(tmp_path)
    assert set(files) == set(unseen.SHAPES) | {f"random_p{p}" for p in unseen.RANDOM_P}
    for name in ("sipht_10", "chain_3", "independent_10", "random_p0.6"):
        graphs = json.loads(files[name].read_text())["graphs"]
        dag = scenarios.make("dag", {"tasks": 10, "topology": "file", "topology_file": str(files[name])})
        states = dag.sample(jax.random.key(0), dag.params, jax.numpy.arange(32, dtype=jax.numpy.uint32))
        wanted = []
        for g in graphs:
            adj = np.zeros((10, 10), bool)
            if g["edges"]:
                adj[tuple(np.array(g["edges"]).T)] = True
            wanted.append((adj, g["tasks"]))
        for adj, cycles in zip(np.asarray(states.adj[:, 0]), np.asarray(states.cycles[:, 0]), strict=True):
            assert any(np.array_equal(adj, a) and np.count_nonzero(cycles) == t for a, t in wanted), name
    row = {p: {"objective_ratio": 1.1} for p in unseen.SHOWN}
    miss = {**row, "student_kd": {"objective_ratio": 1.2}, "local_search": {"objective_ratio": 1.1}}
    text = unseen.markdown({"quickstart": "QS", "load_avg": 0.0, "sets": {"ok": {
        **row, "greedy": {"objective_ratio": 1.3}}, "bad": miss}})
    assert "misses (below greedy, within 0.05 of local search) on: bad" in text
    assert "| ok |" in text and "| yes |" in text and "**no**" in text
