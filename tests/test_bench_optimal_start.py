"""benchmarks/optimal_start.py on a tiny dag system: every first pool size decides every state, with the
same labels whichever size it starts from (the search against exhaustive enumeration is
tests/test_dag_search.py's), and bad arguments are refused (slow: it compiles the exact search at batch 1
for each size)."""

import json

import pytest
from conftest import import_script


@pytest.mark.slow
def test_optimal_start_times_every_cap_with_the_same_labels(tmp_path):
    bench = import_script("benchmarks", "optimal_start")
    out = tmp_path / "start.json"
    assert bench.main(["--tasks", "3", "--users", "2", "--states", "4", "--reps", "2", "--caps", "4,32",
                       "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["tasks"], result["users"], result["states"], result["reps"]) == (3, 2, 4, 2)
    assert result["same_labels"] is True
    assert set(result["caps"]) == {"4", "32"}
    for stats in result["caps"].values():
        assert 0 < stats["p50_ms"] <= stats["p99_ms"] and stats["mean_ms"] > 0 and stats["compile_s"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("bad", [["--caps", "4,x"], ["--caps", "0"], ["--caps", "4,4"], ["--states", "0"]])
def test_optimal_start_refuses_bad_arguments(tmp_path, bad):
    bench = import_script("benchmarks", "optimal_start")
    with pytest.raises(SystemExit):
        bench.main(["--json", str(tmp_path / "x.json"), *bad])
