"""Fault injection through the command line: bad arguments, run directories that hold another
command, damaged files, full and read-only disks, concurrent writers, and (slow) SIGKILLs at seeded
random points of generate and train followed by a rerun that must give the uninterrupted result.
Every refusal is one line on stderr, `offload-jax <command>: error: ...`, exit 2.
"""

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from offload_jax import cli, dataset, locking, models, runs
from offload_jax.config import SystemConfig
from offload_jax.scenarios.chain import solvers

CFG = SystemConfig(tasks=4, subcarriers=3)
N, SHARD, SEED = 600, 200, 11  # as in test_dataset: the compiled labeler is shared
# A small run: one compiled training program serves every command below that trains.
TRAIN = ["--model", "student", "--hidden", "16", "--steps", "20", "--batch-size", "32", "--eval-every", "10",
         "--no-progress"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "data"
    dataset.generate(out, CFG, N, SEED, shard_size=SHARD, progress=False)
    return out


@pytest.fixture(scope="module")
def run(data):
    """A finished run of `train --data DATA --out RUN` + TRAIN (do not modify)."""
    out = data.parent / "run"
    assert cli.main(["train", "--data", str(data), "--out", str(out), *TRAIN]) == 0
    return out


def _code(argv) -> int:
    try:
        return cli.main([str(a) for a in argv])
    except SystemExit as exc:
        return exc.code


def _refused(capsys, argv, *named) -> str:
    """Run the command; it must exit 2 with one error line naming every string of `named`."""
    code = _code(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 or lines[0].startswith("usage:"), err  # argparse prints its usage first
    assert lines[-1].startswith(f"offload-jax {argv[0]}: error: "), err
    for text in named:
        assert str(text) in lines[-1], (text, err)
    return lines[-1]


def _listing(path: Path) -> dict:
    """Every file under `path` with its bytes' sha256 (a directory's whole state)."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("argv, named", [
    (["evaluate", "--data", "{data}", "--policies", "local", "--max-states", "-5"], ["--max-states", "-5"]),
    (["evaluate", "--data", "{data}", "--policies", "local", "--batch-size", "0"], ["--batch-size"]),
    (["evaluate", "--data", "{data}", "--policies", "local", "--json", "{dir}"], ["{dir}", "is a directory"]),
    (["evaluate", "--data", "{data}", "--policies", "local", "--json", "{file}/x.json"],
     ["{file}", "a file"]),
    (["export", "--run", "{run}", "--out", "{dir}"], ["{dir}", "is a directory"]),
    (["generate", "--out", "{new}", "--num-states", "5", "--tasks", "40", "--solver", "enumerate"],
     ["tasks", f"at most {solvers.MAX_TASKS['enumerate']}", "got 40"]),
    (["generate", "--out", "{new}", "--num-states", "10", "--tasks", "10000"],
     ["tasks", f"at most {solvers.MAX_TASKS['dp']}", "got 10000"]),
    (["generate", "--out", "{file}", "--num-states", "5"], ["{file}", "Not a directory"]),
    (["generate", "--out", "{file}/sub", "--num-states", "5"], ["{file}/sub", "Not a directory"]),
    (["train", "--data", "{data}", "--out", "{file}", *TRAIN], ["{file}", "Not a directory"]),
    (["train", "--data", "{data}", "--out", "{file}/sub", *TRAIN], ["{file}/sub", "Not a directory"]),
    (["train", "--data", "{data}", "--out", "{new}", "--max-states", "0"], ["--max-states"]),
    (["train", "--data", "{data}", "--out", "{new}", "--steps", "-1"], ["steps", "-1"]),
    (["train", "--data", "{data}", "--out", "{new}", "--holdout", "-3", *TRAIN], ["--holdout", "-3"]),
    (["distill", "--data", "{data}", "--out", "{new}", "--teacher", "{run}", "--alpha", "2"], ["alpha"]),
    (["train-droo", "--data", "{data}", "--out", "{new}", "--memory-size", "0"], ["memory_size"]),
    (["train-droo", "--data", "{data}", "--out", "{new}", "--states", "-1"], ["--states", "-1"]),
])
def test_bad_arguments_are_one_line_errors(data, run, tmp_path, capsys, argv, named):
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    names = {"data": data, "run": run, "dir": tmp_path / "dir", "file": tmp_path / "file",
             "new": tmp_path / "new"}
    started = time.monotonic()
    _refused(capsys, [a.format(**names) for a in argv], *(n.format(**names) for n in named))
    assert time.monotonic() - started < 10  # refused up front, e.g. before labeling 10000 sub-tasks
    assert not (tmp_path / "new").exists()  # nothing is left behind
    assert (tmp_path / "file").read_text() == "x" and not any((tmp_path / "dir").iterdir())


# --------------------------------------------------------------------------- run directories


@pytest.mark.parametrize("change, named", [
    (["--seed", "5"], ["train.seed: existing 0, requested 5"]),
    (["--lr", "1e-3"], ["train.learning_rate: existing 0.002, requested 0.001"]),
    (["--model", "teacher"], ["kind: existing 'student', requested 'teacher'"]),
    (["--steps", "10"], ["train.steps: existing 20, requested 10"]),
    (["--steps", "30"], ["train.steps: existing 20, requested 30"]),
    (["--eval-every", "5"], ["train.eval_every"]),
    (["--max-states", "500"], ["data.states: existing 600, requested 500"]),
    (["--holdout", "50"], ["data.holdout: existing 30, requested 50"]),
])
def test_a_finished_run_refuses_another_command(data, run, capsys, change, named):
    before = _listing(run)
    line = _refused(capsys, ["train", "--data", data, "--out", run, *TRAIN, *change], *named)
    assert "other settings" in line
    assert _listing(run) == before
    assert _code(["train", "--data", data, "--out", run, *TRAIN]) == 0  # the same command: nothing to do
    assert "nothing to do" in capsys.readouterr().err
    assert _listing(run) == before


def test_a_finished_run_refuses_other_data_teachers_and_kinds(data, run, tmp_path, capsys):
    before = _listing(run)
    _refused(capsys, ["train", "--data", tmp_path / "nope", "--out", run, *TRAIN], tmp_path / "nope")
    shutil.copytree(data, tmp_path / "copy")  # the same data elsewhere is the same data
    assert _code(["train", "--data", tmp_path / "copy", "--out", run, *TRAIN]) == 0
    assert "nothing to do" in capsys.readouterr().err
    dataset.generate(tmp_path / "other", CFG, N, SEED + 1, shard_size=SHARD, progress=False)
    _refused(capsys, ["train", "--data", tmp_path / "other", "--out", run, *TRAIN], "data.dataset: existing")
    _refused(capsys, ["distill", "--data", data, "--teacher", run, "--out", run, *TRAIN],
             "kind: existing 'student', requested 'distill'")
    _refused(capsys, ["train-droo", "--data", data, "--out", run],
             "kind: existing 'student', requested 'droo'")
    assert _listing(run) == before


def test_a_distilled_run_refuses_another_teacher(data, run, tmp_path, capsys):
    flags = [*TRAIN[:-3], "--eval-every", "0", "--no-progress", "--data", data, "--out", tmp_path / "d"]
    assert _code(["distill", *flags, "--teacher", run]) == 0
    assert _code(["train", "--data", data, "--out", tmp_path / "t", *TRAIN, "--seed", "1"]) == 0
    _refused(capsys, ["distill", *flags, "--teacher", tmp_path / "t"], "teacher.sha256: existing")


def test_a_droo_run_refuses_another_command(data, tmp_path, capsys):
    out = tmp_path / "droo"
    flags = ["--data", data, "--out", out, "--states", "100", "--memory-size", "32", "--batch-size", "8"]
    assert _code(["train-droo", *flags]) == 0
    before = _listing(out)
    assert _code(["train-droo", *flags]) == 0  # the same command: left as is
    capsys.readouterr()
    _refused(capsys, ["train-droo", *flags, "--seed", "1"], "seed: existing 0, requested 1")
    _refused(capsys, ["train-droo", *flags, "--lr", "0.01"], "droo.learning_rate")
    _refused(capsys, ["train-droo", *flags[:4], "--states", "90", *flags[6:]], "data.states")
    _refused(capsys, ["train", "--data", data, "--out", out, *TRAIN], "kind: existing 'droo'")
    assert _listing(out) == before


def test_train_refuses_a_directory_that_holds_anything_else(data, tmp_path, capsys):
    before = _listing(data)
    _refused(capsys, ["train", "--data", data, "--out", data, *TRAIN], "holds no run", "manifest.json")
    _refused(capsys, ["train-droo", "--data", data, "--out", data], "holds no run")
    assert _listing(data) == before
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    _refused(capsys, ["train", "--data", data, "--out", tmp_path / "mine", *TRAIN], "notes.txt")
    assert sorted(os.listdir(tmp_path / "mine")) == ["notes.txt"]


# --------------------------------------------------------------------------- damaged files


def _damage(src: Path, out: Path, array: str, edit) -> None:
    """Copy the dataset, rewrite shard 1 with `edit(arrays[array])` applied, and update its sha256 in the
    manifest and in job.json (so only the values can give the damage away)."""
    shutil.copytree(src, out)
    shard = next(p for i, p in enumerate(dataset.iter_shards(out)) if i == 1)
    arrays = {**shard.states._asdict(), "label": shard.label.copy(), "latency": shard.latency.copy()}
    arrays[array] = np.array(arrays[array])
    edit(arrays[array])
    data = dataset.shard_bytes(arrays)
    (out / "shard-00001.npz").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    manifest, job = (json.loads((out / name).read_text()) for name in ("manifest.json", "job.json"))
    manifest["shards"][1]["sha256"] = job["shards"]["shard-00001.npz"]["sha256"] = digest
    for name, doc in (("manifest.json", manifest), ("job.json", job)):
        (out / name).write_text(json.dumps(doc))


def _set(index, value):
    def edit(a):
        a[index] = value
    return edit


@pytest.mark.parametrize("array, edit, rule", [
    ("label", _set((5, 1), 3), "in {0, 1, 2}"),
    ("label", _set((0, 0), -1), "in {0, 1, 2}"),
    ("cycles", _set((7, 2), np.nan), "finite and > 0"),
    ("cycles", _set((7, 0), -1.0), "finite and > 0"),
    ("data_bits", _set((3, 4), np.inf), "finite and > 0"),
    ("f_local", _set(9, 0.0), "finite and > 0"),
    ("f_edge", _set(9, np.nan), "finite and > 0"),
    ("f_cloud", _set(9, -2e10), "finite and > 0"),
    ("snr", _set((1, 2), 0.0), "finite and > 0"),
    ("rate_up", _set(4, np.nan), "finite and > 0"),
    ("rate_down", _set(4, np.inf), "finite and > 0"),
    ("backhaul_rate", _set(4, 0.0), "finite and > 0"),
    ("cloud_delay", _set(4, -0.01), "finite and >= 0"),
    ("cloud_delay", _set(4, np.nan), "finite and >= 0"),
    ("edge_cores_free", _set(2, 0), "in [1, edge_cores=8]"),
    ("edge_cores_free", _set(2, 9), "in [1, edge_cores=8]"),
    ("subcarrier_free", _set(6, False), "at least one sub-carrier"),
    ("latency", _set(8, np.nan), "finite and > 0"),
    ("latency", _set(8, 0.0), "finite and > 0"),
])
def test_values_are_checked_after_the_checksum(data, tmp_path, capsys, array, edit, rule):
    out = tmp_path / "damaged"
    _damage(data, out, array, edit)
    with pytest.raises(dataset.DatasetError, match=rf"shard-00001\.npz: array '{array}' must be "):
        dataset.load(out)
    line = _refused(capsys, ["evaluate", "--data", out, "--policies", "local"], "shard-00001.npz",
                    f"'{array}'", rule)
    assert "1 of 200 states" in line


def test_train_on_bad_labels_names_them_not_the_learning_rate(data, tmp_path, capsys):
    _damage(data, tmp_path / "bad", "label", _set((5, 1), 3))
    _refused(capsys, ["train", "--data", tmp_path / "bad", "--out", tmp_path / "r", *TRAIN], "'label'")
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- full and read-only disks


@contextlib.contextmanager
def _tmpfs(path: Path, size: str, *options: str):
    """A tmpfs of `size` mounted at `path` (skips where mounting is not allowed)."""
    path.mkdir()
    opts = ",".join([f"size={size}", *options])
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({proc.stderr.strip() or proc.returncode})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def test_generate_on_a_full_disk_fails_cleanly_and_resumes(data, tmp_path, capsys):
    with _tmpfs(tmp_path / "fs", "48k") as fs:
        argv = ["generate", "--out", fs / "d", "--num-states", N, "--tasks", CFG.tasks, "--seed", SEED,
                "--shard-size", SHARD, "--set", f"subcarriers={CFG.subcarriers}", "--no-progress"]
        _refused(capsys, argv, fs / "d" / "shard-0000", "No space left on device")
        left = sorted(os.listdir(fs / "d"))
        # No temp file, no lock.
        assert left[0] == "job.json" and all(f.startswith("shard-") for f in left[1:]), left
        job = json.loads((fs / "d" / "job.json").read_text())
        assert sorted(job["shards"]) == left[1:]  # every recorded shard is whole
        subprocess.run(["mount", "-o", "remount,size=1m", str(fs)], check=True)
        assert _code(argv) == 0
        assert _listing(fs / "d") == {k: v for k, v in _listing(data).items()}


def test_train_on_a_full_disk_is_one_line(data, tmp_path, capfd):
    with _tmpfs(tmp_path / "fs", "64k") as fs:  # a 2x256 student's checkpoint needs ~1 MB
        argv = ["train", "--data", data, "--out", fs / "r", *TRAIN, "--hidden", "256,256"]
        assert _code(argv) == 2
        err = capfd.readouterr().err  # the file descriptor: Orbax's threads would write there too
        assert err.startswith(f"offload-jax train: error: cannot write checkpoint 20 in "
                              f"'{fs}/r/checkpoints': No space left on device ("), err
        assert err.count("\n") == 1, err
        assert [p.name for p in (fs / "r").rglob("*")] == ["checkpoints"]


_ORBAX_FAILS = """
import shutil, sys
from offload_jax import cli, runs
# Room enough by the estimate: Orbax starts writing and the disk fills midway.
runs.shutil.disk_usage = lambda path: shutil._ntuple_diskusage(1 << 40, 0, 1 << 40)
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_checkpoint_that_fills_the_disk_midway_is_one_error_and_no_partial_checkpoint(data, tmp_path):
    """In a process of its own: Orbax's abandoned writes complain until the process exits."""
    with _tmpfs(tmp_path / "fs", "64k") as fs:
        argv = ["train", "--data", data, "--out", fs / "r", *TRAIN, "--hidden", "256,256"]
        proc = subprocess.run([sys.executable, "-c", _ORBAX_FAILS, *map(str, argv)], capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 2
        assert proc.stderr.startswith(f"offload-jax train: error: cannot write checkpoint 20 in "
                                      f"'{fs}/r/checkpoints': No space left on device\n"), proc.stderr
        assert [p.name for p in (fs / "r").rglob("*")] == ["checkpoints"]  # no half-written checkpoint


def test_leftovers_are_removed_until_their_writer_stops(tmp_path):
    """A failed Orbax write's other threads can go on writing into its temp directory after the error
    (a loaded machine left it behind): the removal outlasts them; one removal would not."""
    tmp = tmp_path / "20.orbax-checkpoint-tmp-1"
    stop = time.monotonic() + 0.3

    def writer():
        i = 0
        while time.monotonic() < stop:
            with contextlib.suppress(OSError):  # the directory removed under it: on with the next part
                tmp.mkdir(exist_ok=True)
                (tmp / f"part{i}").write_text("x")
            i += 1
            time.sleep(0.01)

    tmp.mkdir()
    thread = threading.Thread(target=writer)
    thread.start()
    runs._remove_settled(tmp_path / "20.orbax-checkpoint-tmp*")
    thread.join()
    assert list(tmp_path.iterdir()) == []


def test_a_read_only_file_system_is_one_line(data, tmp_path, capsys):
    with _tmpfs(tmp_path / "fs", "1m", "ro") as fs:
        ro = "Read-only file system"
        _refused(capsys, ["generate", "--out", fs / "d", "--num-states", "5"], fs / "d", ro)
        _refused(capsys, ["train", "--data", data, "--out", fs / "r", *TRAIN], fs / "r", ro)
        _refused(capsys, ["evaluate", "--data", data, "--policies", "local", "--json", fs / "e.json"],
                 f"cannot write into '{fs}': {ro}")  # before evaluating


# --------------------------------------------------------------------------- concurrent writers


@pytest.mark.parametrize("command", ["generate", "train", "distill", "train-droo"])
def test_a_second_writer_is_refused_at_once(data, run, held, capsys, command):
    out, holder = held
    argv = {"generate": ["generate", "--out", out, "--num-states", N, "--tasks", 4],
            "train": ["train", "--data", data, "--out", out, *TRAIN],
            "distill": ["distill", "--data", data, "--teacher", run, "--out", out, *TRAIN],
            "train-droo": ["train-droo", "--data", data, "--out", out]}[command]
    started = time.monotonic()
    _refused(capsys, argv, f"{out} is in use by another writer (pid {holder.pid} on host", "`holder`")
    assert time.monotonic() - started < 5
    assert locking.LOCK_FILE in os.listdir(out)


# --------------------------------------------------------------------------- kills and concurrency (slow)


def _cli_process(argv) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "offload_jax.cli", *map(str, argv)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _timed(argv) -> float:
    started = time.monotonic()
    proc = _cli_process(argv)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return time.monotonic() - started


def _kill_at_random(argv, seed: int, duration: float) -> None:
    """Start the command and SIGKILL it after a seeded random share of `duration` (its uninterrupted
    wall time)."""
    proc = _cli_process(argv)
    time.sleep(random.Random(seed).uniform(0.1, 0.8) * duration)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "finished before the kill"


def _generate_argv(out):
    # Enumeration, so that labeling and writing 20 shards takes longer than starting the process.
    return ["generate", "--out", out, "--num-states", 4000, "--tasks", 10, "--solver", "enumerate",
            "--seed", 3, "--shard-size", 200, "--batch-size", 200, "--no-progress"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """(uninterrupted dataset of _generate_argv, its wall time)."""
    out = tmp_path_factory.mktemp("gen") / "whole"
    return out, _timed(_generate_argv(out))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_generate_killed_at_a_random_point_resumes_to_the_same_bytes(generated, tmp_path, seed):
    whole, duration = generated
    out = tmp_path / "killed"
    _kill_at_random(_generate_argv(out), seed, duration)
    _timed(_generate_argv(out))
    assert sorted(os.listdir(out)) == sorted(os.listdir(whole))  # no temp files, no lock

    def shards_and_manifest(d):
        return {k: v for k, v in _listing(d).items() if k != dataset.JOB_FILE}

    assert shards_and_manifest(out) == shards_and_manifest(whole)  # bytes
    # job.json lists the same shards, perhaps in another order.
    assert json.loads((out / "job.json").read_text()) == json.loads((whole / "job.json").read_text())


def _train_argv(data, out):
    return ["train", "--data", data, "--out", out, "--model", "student", "--hidden", "32,32", "--steps", 300,
            "--batch-size", 32, "--eval-every", 50, "--chunk-steps", 5, "--checkpoint-every", 0,
            "--no-progress"]


@pytest.fixture(scope="module")
def trained(data):
    """(uninterrupted run of _train_argv, its wall time)."""
    out = data.parent / "trained"
    return out, _timed(_train_argv(data, out))


def _same_run(a: Path, b: Path) -> None:
    """Same parameters bit for bit, same run.json but its wall-clock fields."""
    def meta(run_dir):
        return {k: v for k, v in json.loads((run_dir / "run.json").read_text()).items()
                if k not in runs.WALL_CLOCK_KEYS}

    assert meta(a) == meta(b)

    def params(run_dir):
        leaves = jax.tree.leaves(models.params_of(runs.load_run(run_dir).model))
        return np.concatenate([np.ravel(p) for p in leaves])

    np.testing.assert_array_equal(params(a), params(b))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_train_killed_at_a_random_point_resumes_to_the_same_run(data, trained, tmp_path, seed):
    whole, duration = trained
    out = tmp_path / "killed"
    _kill_at_random(_train_argv(data, out), seed, duration)
    _timed(_train_argv(data, out))
    _same_run(out, whole)
    assert not list(out.rglob("*orbax-checkpoint-tmp*")) and not list(out.glob(".*"))


@pytest.mark.slow
def test_two_concurrent_writers_one_is_refused(data, trained, generated, tmp_path):
    for argv, whole in ((_train_argv(data, tmp_path / "r"), trained[0]),
                        (_generate_argv(tmp_path / "d"), generated[0])):
        first = _cli_process(argv)
        while not (Path(argv[argv.index("--out") + 1]) / locking.LOCK_FILE).exists():
            assert first.poll() is None
            time.sleep(0.05)
        second = _cli_process(argv)
        _, err = second.communicate(timeout=60)
        assert second.returncode == 2 and "Traceback" not in err
        assert err.strip().endswith("wait until it ends, or use another --out") and "in use by" in err
        assert first.wait(timeout=600) == 0
        if argv[0] == "train":
            _same_run(tmp_path / "r", whole)
        else:
            assert _listing(tmp_path / "d") == _listing(whole)
