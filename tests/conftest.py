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


REPO = Path(__file__).resolve().parents[1]


def import_script(folder: str, name: str):
    """The module <folder>/<name>.py of the repository (benchmarks/ and experiments/ are not packages;
    it imports its siblings as `python <folder>/<name>.py` does)."""
    sys.path.insert(0, str(REPO / folder))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(REPO / folder))
