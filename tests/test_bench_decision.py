"""benchmarks/bench_decision.py runs end to end on a tiny dag system and reports every policy (slow: it
compiles every policy, the exact search included)."""

import json

import pytest
from conftest import import_script


@pytest.mark.slow
def test_bench_decision_dag_reports_every_policy(tmp_path):
    bench = import_script("benchmarks", "bench_decision")
    out = tmp_path / "bench.json"
    assert bench.main(["--json", str(out), "--scenario", "dag", "--tasks", "3", "--users", "2",
                       "--calls", "20", "--rounds", "4", "--batch", "16", "--batch-reps", "1"]) == 0
    result = json.loads(out.read_text())
    assert set(result["policies"]) == {"local", "edge", "cloud", "random", "greedy", "local_search",
                                       "optimal", "teacher", "student_kd", "student_ce", "droo",
                                       "student_kd_ls", "student_kd_ls1"}  # the hybrids: random weights here
    assert result["policies"]["optimal"]["timed_as"].startswith("host driver")
    assert all(r["p50_us"] > 0 for r in result["policies"].values()) and result["numpy_student"]["p50_us"] > 0
    with pytest.raises(SystemExit):
        bench.main(["--json", str(out), "--scenario", "dag", "--users", "0"])


@pytest.mark.slow
def test_bench_decision_passes_sets_the_students_passes(tmp_path):
    bench = import_script("benchmarks", "bench_decision")
    out = tmp_path / "bench.json"
    args = ["--json", str(out), "--scenario", "dag", "--tasks", "3", "--calls", "20", "--rounds", "4",
            "--batch", "16", "--batch-reps", "1", "--policies", "student_kd"]
    assert bench.main([*args, "--passes", "2"]) == 0
    result = json.loads(out.read_text())
    assert result["passes"] == 2 and set(result["policies"]) == {"student_kd"}
    with pytest.raises(SystemExit):
        bench.main([*args, "--passes", "0"])
