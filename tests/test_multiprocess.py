"""`generate` as one JAX job of several processes (`jax.distributed` on 127.0.0.1, 2 CPU processes): the
files of a 1-process run byte for byte, resume after a killed process with any number of processes,
one-line errors for bad flags, an unreachable coordinator and a failed peer."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from offload_jax import cli, dataset
from offload_jax.config import SystemConfig
from offload_jax.scenarios.dag.config import DagConfig

CHAIN = SystemConfig(tasks=4, subcarriers=3)
CHAIN_ARGS = ["--tasks", "4", "--set", "subcarriers=3"]
DAG = DagConfig(tasks=4, users=2, subcarriers=3)
DAG_ARGS = ["--scenario", "dag", "--tasks", "4", "--set", "users=2", "--set", "subcarriers=3"]
N, SHARD, SEED = 600, 100, 11  # 6 shards: 3 for each of 2 processes
DAG_N, DAG_SHARD = 120, 40
TIMEOUT = 10  # --timeout of the runs that should succeed (a margin for a loaded machine)

# The CLI, optionally SIGKILLed as it starts writing its shard number KILL_AT (1-based): its first
# KILL_AT - 1 shards are written and recorded, the rest are not.
_CLI = """
import os, signal, sys
from offload_jax import cli, dataset
kill_at = int(os.environ.get("KILL_AT", "0"))
real_write, calls = dataset._write_shard, []

def write_or_die(path, arrays):
    calls.append(path)
    if len(calls) == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_write(path, arrays)

dataset._write_shard = write_or_die
sys.exit(cli.main(sys.argv[1:]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(out, args, extra=(), kill_at=0):
    argv = ["generate", "--out", str(out), *args, "--seed", str(SEED), "--no-progress", *extra]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "KILL_AT": str(kill_at)}
    return subprocess.Popen([sys.executable, "-c", _CLI, *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _processes(num_processes, port, timeout=TIMEOUT):
    """The flags of each process of a job."""
    return [["--coordinator", f"127.0.0.1:{port}", "--num-processes", str(num_processes),
             "--process-id", str(i), "--timeout", str(timeout)] for i in range(num_processes)]


def _run_job(out, args, num_processes=2, kill_at=None):
    """Run the processes of one job; kill_at: {process id: shard number at which it is killed}.
    Returns [(returncode, stderr, exit time)] per process."""
    kill_at = kill_at or {}
    procs = [_start(out, args, extra, kill_at.get(i, 0))
             for i, extra in enumerate(_processes(num_processes, _free_port()))]
    results = []
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        results.append((proc.returncode, err))
    return results


def _bytes(d):
    names = sorted(f for f in os.listdir(d) if f.endswith(".npz") or f == dataset.MANIFEST_FILE)
    return {f: (d / f).read_bytes() for f in names}


@pytest.fixture(scope="module")
def chain_ref(tmp_path_factory):
    out = tmp_path_factory.mktemp("chain") / "ref"
    dataset.generate(out, CHAIN, N, SEED, shard_size=SHARD, progress=False)
    return out


def _assert_finished_like(out, ref):
    assert _bytes(out) == _bytes(ref)
    assert sorted(os.listdir(out)) == sorted(os.listdir(ref))  # job.json, manifest, shards; no job-process-*


def test_two_processes_write_the_one_process_bytes(chain_ref, tmp_path):
    out = tmp_path / "two"
    results = _run_job(out, [*CHAIN_ARGS, "--num-states", str(N), "--shard-size", str(SHARD)])
    assert [rc for rc, _ in results] == [0, 0], results
    _assert_finished_like(out, chain_ref)


@pytest.mark.slow
def test_two_processes_write_the_one_process_bytes_dag(tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "two"
    dataset.generate(ref, DAG, DAG_N, SEED, shard_size=DAG_SHARD, progress=False)
    results = _run_job(out, [*DAG_ARGS, "--num-states", str(DAG_N), "--shard-size", str(DAG_SHARD)])
    assert [rc for rc, _ in results] == [0, 0], results
    _assert_finished_like(out, ref)


def test_a_lost_peer_fails_the_run_and_a_one_process_rerun_resumes(chain_ref, tmp_path):
    out = tmp_path / "lost"
    args = [*CHAIN_ARGS, "--num-states", str(N), "--shard-size", str(SHARD)]
    procs = [_start(out, args, extra, kill_at=2 * i)  # process 1 dies as it starts its second shard
             for i, extra in enumerate(_processes(2, _free_port()))]
    procs[1].wait(timeout=300)
    died = time.monotonic()
    assert procs[1].returncode == -signal.SIGKILL
    procs[0].communicate(timeout=300)
    assert procs[0].returncode != 0  # the runtime ends it: its peer stopped sending heartbeats
    assert time.monotonic() - died < TIMEOUT + 30
    assert not (out / dataset.MANIFEST_FILE).exists()
    assert (out / "job-process-1.json").exists()  # the killed process's record of its first shard
    kept = os.stat(out / dataset.shard_name(1))  # that shard, which the rerun keeps

    dataset.generate(out, CHAIN, N, SEED, shard_size=SHARD, progress=False)
    _assert_finished_like(out, chain_ref)
    now = os.stat(out / dataset.shard_name(1))
    assert (now.st_ino, now.st_mtime_ns) == (kept.st_ino, kept.st_mtime_ns)


@pytest.mark.slow
def test_a_killed_process_0_and_a_two_process_rerun_resume(chain_ref, tmp_path):
    out = tmp_path / "killed0"
    args = [*CHAIN_ARGS, "--num-states", str(N), "--shard-size", str(SHARD)]
    results = _run_job(out, args, kill_at={0: 2})
    assert results[0][0] == -signal.SIGKILL and results[1][0] != 0, results
    assert not (out / dataset.MANIFEST_FILE).exists()
    results = _run_job(out, args)
    assert [rc for rc, _ in results] == [0, 0], results
    _assert_finished_like(out, chain_ref)


@pytest.mark.slow
def test_a_failed_peer_stops_the_job_with_one_line_errors(tmp_path):
    out = tmp_path / "other"
    args = [*CHAIN_ARGS, "--num-states", str(N), "--shard-size", str(SHARD)]
    port = _free_port()
    extras = _processes(2, port)
    procs = [_start(out, args, extras[0]), _start(out, [*args, "--set", "subcarriers=4"], extras[1])]
    results = [(p.communicate(timeout=300)[1], p.returncode) for p in procs]
    (err0, rc0), (err1, rc1) = results
    assert (rc0, rc1) == (2, 2), results
    why = "process 1 runs another command than process 0: system.subcarriers: existing 3, requested 4"
    assert err1 == f"offload-jax generate: error: {why}\n"
    assert err0 == f"offload-jax generate: error: process 1 failed: {why}\n"
    assert not (out / dataset.MANIFEST_FILE).exists()


@pytest.mark.parametrize("process_id", [1, 0])  # alone: no coordinator to reach; no peer to come
def test_a_job_that_does_not_form_fails_within_the_timeout(tmp_path, process_id):
    out = tmp_path / "alone"
    extra = _processes(2, _free_port(), timeout=2)[process_id]
    start = time.monotonic()
    proc = _start(out, [*CHAIN_ARGS, "--num-states", "10"], extra)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert time.monotonic() - start < 30  # 2 s, plus starting Python and JAX on a loaded machine
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "the 2 processes did not all connect within 2 s (--timeout)" in err
    assert not out.exists()


@pytest.mark.parametrize("flags, named", [
    (["--coordinator", "h:1", "--num-processes", "2"], "missing --process-id"),
    (["--process-id", "0"], "missing --coordinator, --num-processes"),
    (["--coordinator", "h:1", "--num-processes", "0", "--process-id", "0"], "--num-processes must be"),
    (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"], "--process-id must be in [0, 1]"),
    (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "-1"], "--process-id must be in"),
    (["--coordinator", "h", "--num-processes", "2", "--process-id", "0"], "--coordinator must be HOST:PORT"),
    (["--coordinator", "h:99999", "--num-processes", "2", "--process-id", "0"], "--coordinator must be"),
    (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "0", "--timeout", "0"], "--timeout"),
    (["--timeout", "5"], "--timeout applies to several processes"),
])
def test_bad_process_flags_are_one_line_errors(tmp_path, capsys, flags, named):
    out = tmp_path / "x"
    with pytest.raises(SystemExit) as exc:
        cli.main(["generate", "--out", str(out), "--num-states", "10", *flags])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert named in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()
