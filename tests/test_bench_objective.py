"""benchmarks/profile_objective.py runs end to end on a tiny system and writes what it says (slow: ~15-25 s
of compiling, like the other benchmarks' tests)."""

import json
import math

import pytest
from conftest import import_script

from offload_jax.scenarios.dag import schedule


@pytest.mark.slow
def test_profile_objective_writes_every_pair(tmp_path):
    bench = import_script("benchmarks", "profile_objective")

    out = tmp_path / "p.json"
    bench.main(["--tasks", "3", "--states", "4", "--samples", "2", "--reps", "1", "--json", str(out)])
    result = json.loads(out.read_text())
    pairs = {"draws_ms": {"categorical", "sample_sites"}, "schedule_us": {"looped", "unrolled"},
             "candidates_us": {"looped", "unrolled"}, "local_search_batch1_us": {"looped", "unrolled"},
             "greedy_batch1_us": {"looped", "unrolled"}, "candidate_values_batch1_us": {"looped", "unrolled"}}
    for key, names in pairs.items():
        assert set(result["medians"][key]) == names, key
        assert all(len(result[key][name]) == 2 for name in names), key
        assert all(math.isfinite(v) and v > 0 for v in result["medians"][key].values()), key
    assert schedule.UNROLL_MAX_SLOTS == 10  # restored after the looped local search
