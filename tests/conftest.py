"""Fixtures shared by test modules."""

import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

_HOLDER = textwrap.dedent("""
    import sys, time
    from offload_jax import locking
    with locking.hold(sys.argv[1], "holder"):
        print("held", flush=True)
        time.sleep(120)
""")


@pytest.fixture
def held(tmp_path):
    """A directory whose lock another (live) process holds; yields (directory, that process)."""
    out = tmp_path / "held"
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "held\n"
        yield out, proc
    finally:
        proc.kill()
        proc.wait()


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def import_benchmark(name: str):
    """The module benchmarks/<name>.py (benchmarks/ is not a package)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))
