"""Fixtures shared by test modules."""

import subprocess
import sys
import textwrap

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
