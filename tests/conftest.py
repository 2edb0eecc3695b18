"""Fixtures shared by test modules."""

import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Most of this suite's time is XLA compiling small programs, not running them. XLA's CPU backend
# (LLVM) at its lowest optimization level compiles them ~30% faster (four dag test files: 123 s against
# 170 s on 2 cores) and computes the same operations. Set before any test imports JAX; workers and
# subprocesses inherit it. Tests at the default level: XLA_FLAGS=--xla_backend_optimization_level=2
# python -m pytest (a level given in XLA_FLAGS is kept, other flags there too).
# Likewise the older (LLVM IR) emitters of fused elementwise kernels compile faster than the new
# (MLIR) ones: the default run 400 s against 684 on a 2-core AVX2 VM (benchmarks/RESULTS.md, "Another
# VM"). A flag given in XLA_FLAGS is kept.
for _flag, _value in (("--xla_backend_optimization_level", "0"), ("--xla_cpu_use_fusion_emitters", "false")):
    if _flag not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_flag}={_value}".strip()

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


def four_cpu_devices_env() -> dict[str, str]:
    """The environment of a subprocess with four CPU devices and this process's other XLA flags (the
    optimization level above): its numbers are compared with this process's bit for bit."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4".strip()
    return {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
