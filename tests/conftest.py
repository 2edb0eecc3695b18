"""Fixtures shared by test modules."""

import subprocess
import sys
import tempfile
import textwrap

import jax
import pytest

# One XLA compilation per distinct program for the whole run: the dag tests build the same search and
# schedule programs (same shapes) from many tests and fresh closures; the persistent cache, in a
# directory of this run only, turns their repeats into cache hits.
_CACHE = tempfile.mkdtemp(prefix="offload-jax-test-xla-cache-")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

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
