"""benchmarks/bench_labeling.py, dag mode: its naive labeler is the SPEC's label (against the slow
reference), and the whole benchmark runs on a tiny setting (slow: it compiles every exact method)."""

import json

import dag_reference as ref
import numpy as np
import pytest
from conftest import import_script


@pytest.fixture(scope="module")
def bench():
    return import_script("benchmarks", "bench_labeling")


@pytest.mark.parametrize("seed,users,tasks,padding,w_energy", [
    (0, 1, 4, False, 0.0), (1, 1, 5, True, 0.5), (2, 2, 3, False, 0.5), (3, 2, 3, True, 0.0),
    (4, 3, 2, True, 0.5)])
def test_naive_dag_label_is_the_reference_label(bench, seed, users, tasks, padding, w_energy):
    rng = np.random.default_rng(seed)
    state = ref.random_dag_state(rng, users, tasks, 3, padding=padding)
    w = {"w_energy": w_energy}
    want_x, want_j = ref.brute_force_label(state, w)
    plain = {k: np.asarray(v, np.float64).tolist() if k != "adj" else np.asarray(v).tolist()
             for k, v in state.items()}
    plain.update({k: float(np.asarray(state[k])) for k in ("f_edge", "f_cloud", "backhaul_rate",
                                                          "cloud_delay")})
    plain.update({**ref.DAG_WEIGHT_DEFAULTS, **w})
    x, j = bench.naive_dag_label(plain)
    np.testing.assert_array_equal(np.asarray(x).reshape(users, tasks), want_x)
    assert j == pytest.approx(want_j, rel=1e-12)


def test_tree_stats_counts_evaluated_and_kept_nodes(bench):
    # 2 states, T = 3: the tree has 3 + 9 + 27 = 39 nodes; kept per level (batch totals) 4, 2, 2
    stats = bench.tree_stats(np.array([4, 2, 2]), 2, 3)
    assert stats["tree_nodes"] == 39
    assert stats["kept_per_state"] == 4.0
    assert stats["evaluated_per_state"] == 3 + 3 * (2 + 1)
    assert stats["evaluated_fraction"] == pytest.approx(12 / 39)


@pytest.mark.slow  # compiles enumeration and the pruned search at two batch sizes (~1-5 min on 2 cores)
def test_dag_mode_runs_on_a_tiny_setting(bench, tmp_path):
    out = tmp_path / "bench.json"
    argv = ["--scenario", "dag", "--tasks", "3", "--json", str(out), "--states", "32", "--reps", "2",
            "--batch1-states", "3", "--naive-states", "4"]
    assert bench.main(argv) == 0
    got = json.loads(out.read_text())
    assert got["scenario"] == "dag" and got["tasks"] == 3 and got["users"] == 1
    assert set(got["states_per_s"]) == {"naive_python", "enumerate", "bnb"}
    assert all(v > 0 for v in got["states_per_s"].values())
    assert all(v > 0 for v in got["decision_s_batch1"].values())
    assert got["details"]["naive_python"]["label_agreement_with_enumerate"] == 1.0
    assert 0 < got["tree_fraction"]["bnb"] <= 1
