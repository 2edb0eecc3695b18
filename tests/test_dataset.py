"""Sharded dataset writer and reader: determinism, resume, refusal, verification, multi-device."""

import itertools
import json
import os
import shutil
import subprocess
import sys
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import four_cpu_devices_env

from offload_jax import cli, dataset, scenarios, shapes
from offload_jax.config import ConfigError, SystemConfig
from offload_jax.scenarios.chain import cost, system

CFG = SystemConfig(tasks=4, subcarriers=3)
N, SHARD, SEED = 600, 200, 11  # 3 equal shards: one compiled batch shape
SPEC_KEYS = ["format", "tasks", "num_states", "seed", "solver", "system", "shards", "versions"]


def _gen(out, **kw):
    args = dict(cfg=CFG, num_states=N, seed=SEED, solver="dp", shard_size=SHARD, progress=False)
    args.update(kw)
    return dataset.generate(out, **args)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run that other tests compare against (do not modify)."""
    out = tmp_path_factory.mktemp("ref") / "data"
    _gen(out)
    return out


def _files(d):
    return sorted(f for f in os.listdir(d) if f.endswith(".npz"))


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _assert_same_shard_bytes(a, b):
    assert _files(a) == _files(b) == [dataset.shard_name(i) for i in range(N // SHARD)]
    for name in [*_files(a), "manifest.json"]:
        assert _read(a / name) == _read(b / name), name


def _assert_same_states_and_labels(a: dataset.Dataset, b: dataset.Dataset):
    """States bit for bit; labels equal except where both placements are optimal within 1e-6."""
    for name, x, y in zip(system.STATE_FIELDS, a.states, b.states, strict=True):
        np.testing.assert_array_equal(x, y, err_msg=name)
    costs = cost.stage_costs(system.from_arrays(a.states._asdict()))
    lat_a = np.asarray(cost.path_latency(costs, jnp.asarray(a.label)))
    lat_b = np.asarray(cost.path_latency(costs, jnp.asarray(b.label)))
    differ = np.any(a.label != b.label, axis=1)
    np.testing.assert_allclose(lat_a[differ], lat_b[differ], rtol=1e-6)
    assert differ.mean() < 0.01


def test_same_command_gives_byte_identical_shards(reference, tmp_path):
    _gen(tmp_path / "again")
    _assert_same_shard_bytes(reference, tmp_path / "again")


def test_manifest_and_shard_contents_follow_spec(reference):
    manifest = json.loads(_read(reference / "manifest.json"))
    assert list(manifest) == SPEC_KEYS
    assert manifest["format"] == "offload-jax-dataset/1"
    assert (manifest["tasks"], manifest["num_states"], manifest["seed"], manifest["solver"]) == (
        CFG.tasks, N, SEED, "dp")
    assert manifest["system"] == CFG.to_dict()
    assert sorted(manifest["versions"]) == ["jax", "offload_jax"]
    assert [s["file"] for s in manifest["shards"]] == ["shard-00000.npz", "shard-00001.npz",
                                                       "shard-00002.npz"]
    assert [sorted(s) for s in manifest["shards"]] == [["file", "num_states", "sha256"]] * 3
    shapes = system.state_shapes(CFG)
    for entry in manifest["shards"]:
        k = entry["num_states"]
        with np.load(reference / entry["file"]) as npz:
            assert sorted(npz.files) == sorted([*system.STATE_FIELDS, "label", "latency"])
            for name, (shape, dtype) in shapes.items():
                assert npz[name].shape == (k, *shape) and npz[name].dtype == dtype, name
            assert npz["label"].shape == (k, CFG.tasks) and npz["label"].dtype == np.int8
            assert npz["latency"].shape == (k,) and npz["latency"].dtype == np.float32


def test_states_labels_and_latency_against_slow_reference(reference):
    ds = dataset.load(reference)
    # State i is state i of system.sample's stream (sampled here in one batch of another size).
    expected = system.to_numpy(system.sample(jax.random.key(SEED), CFG, N))
    for name in system.STATE_FIELDS:
        np.testing.assert_array_equal(getattr(ds.states, name), expected[name], err_msg=name)
    costs = cost.stage_costs(system.from_arrays(expected))
    # Stored latency is the SPEC latency of the stored label.
    np.testing.assert_allclose(ds.latency, cost.path_latency(costs, jnp.asarray(ds.label)), rtol=1e-6)
    # Labels are optimal: compare with every one of the 3^T placements.
    every = np.array(list(itertools.product(range(3), repeat=CFG.tasks)), np.int32)
    all_lat = jax.vmap(lambda x: cost.path_latency(costs, jnp.broadcast_to(x, (N, CFG.tasks))))(every)
    np.testing.assert_allclose(ds.latency, np.min(np.asarray(all_lat), axis=0), rtol=1e-6)


def test_enumerate_solver_gives_the_same_labels(reference, tmp_path):
    _gen(tmp_path / "enum", solver="enumerate")
    a, b = dataset.load(reference), dataset.load(tmp_path / "enum")
    assert b.manifest["solver"] == "enumerate"
    _assert_same_states_and_labels(a, b)


def test_other_batch_size_gives_same_bytes(reference, tmp_path):
    _gen(tmp_path / "b37", batch_size=37)
    _assert_same_shard_bytes(reference, tmp_path / "b37")


@pytest.mark.parametrize(("start", "end", "max_batch", "multiple"),
                         [(0, 100_000, 8192, 1), (0, 5000, 8192, 1), (0, 300, 64, 4), (10, 1000, 3000, 3),
                          (0, 1, 8192, 4)])
def test_batches_cover_the_shard_padded_to_one_shared_size(start, end, max_batch, multiple):
    batches = dataset._batches(start, end, max_batch, multiple)
    assert batches[0][0] == start and batches[-1][1] == end
    assert all(a[1] == b[0] for a, b in itertools.pairwise(batches))
    padded = {b[2] for b in batches}
    assert len(padded) == 1  # one shape a shard
    (padded,) = padded
    assert padded % multiple == 0 and all(b[1] - b[0] <= padded for b in batches)
    assert padded < max_batch + multiple  # at most the largest batch, rounded up to the multiple


def test_padded_size_is_the_least_power_of_two_not_below_n_or_least():
    assert [shapes.padded_size(n) for n in range(1, 10)] == [1, 2, 4, 4, 8, 8, 8, 8, 16]
    assert [shapes.padded_size(n, least=64) for n in (1, 63, 64, 65)] == [64, 64, 64, 128]
    with pytest.raises(ValueError, match="a size to pad must be >= 1, got 0"):
        shapes.padded_size(0)


def test_shards_of_other_sizes_share_the_batch_shape():
    # A power of two (or the largest batch): the dag quickstart's 5,000 evaluation states and its 100,000
    # training states are labeled by one compiled program (the exact search compiles for ~25 s).
    assert dataset._batches(0, 5000, 8192, 1)[0][2] == dataset._batches(0, 100_000, 8192, 1)[0][2] == 8192
    assert {dataset._batches(0, n, 8192, 1)[0][2] for n in (520, 700, 1024)} == {1024}
    assert dataset._batches(0, 1000, 3000, 3)[0][2] == dataset._batches(0, 600, 3000, 3)[0][2] == 1026


def test_grow_batch_doubles_until_throughput_saturates():
    rates = {64: 1000.0, 128: 1900.0, 256: 3500.0, 512: 3700.0, 1024: 9999.0}  # states/s per batch size
    now, calls = [0.0], []

    def run(b):  # a fake labeler: b states take b / rate seconds on a fake clock
        calls.append(b)
        now[0] += b / rates[b]

    chosen, trials = dataset.grow_batch(run, 64, 4096, clock=lambda: now[0])
    # 256 -> 512 gains 6% (< 10%): growth stops there; 1024 is never tried; each size runs twice
    assert chosen == 512 and [b for b, _ in trials] == [64, 128, 256, 512]
    assert calls == [64, 64, 128, 128, 256, 256, 512, 512]
    assert trials[2][1] == pytest.approx(3500.0)
    assert dataset.grow_batch(run, 64, 200, clock=lambda: now[0])[0] == 128  # the limit
    assert dataset.grow_batch(run, 64, 32, clock=lambda: now[0]) == (32, [])  # shards below one batch

    def out_of_memory(b):
        if b >= 256:
            raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: out of memory allocating 1 GiB")
        run(b)

    assert dataset.grow_batch(out_of_memory, 64, 4096, clock=lambda: now[0])[0] == 128

    def broken(b):
        raise jax.errors.JaxRuntimeError("INTERNAL: something else")

    with pytest.raises(jax.errors.JaxRuntimeError, match="INTERNAL"):
        dataset.grow_batch(broken, 64, 4096, clock=lambda: now[0])


def test_auto_batch_size_gives_same_bytes(reference, tmp_path, monkeypatch, capsys):
    scenario = scenarios.of(CFG)
    monkeypatch.setitem(type(scenario).default_batch, "dp", 16)  # grow from 16 toward the shard (200)
    _gen(tmp_path / "auto", batch_size="auto", progress=True)
    assert "generate: batch of " in capsys.readouterr().err
    _assert_same_shard_bytes(reference, tmp_path / "auto")
    with pytest.raises(ConfigError, match="'auto'"):
        _gen(tmp_path / "bad", batch_size="big")


def test_four_devices_give_same_states_and_labels(reference, tmp_path):
    out = tmp_path / "dev4"
    script = (
        "import json, sys, jax\n"
        "from offload_jax import dataset\n"
        "from offload_jax.config import SystemConfig\n"
        "assert jax.device_count() == 4, jax.devices()\n"
        "cfg = SystemConfig.from_dict(json.loads(sys.argv[2]))\n"
        f"dataset.generate(sys.argv[1], cfg, {N}, {SEED}, shard_size={SHARD}, batch_size=64, "
        "progress=False)\n")
    env = four_cpu_devices_env()
    proc = subprocess.run([sys.executable, "-c", script, str(out), json.dumps(CFG.to_dict())],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    _assert_same_states_and_labels(dataset.load(reference), dataset.load(out))


def test_resume_after_interruption_keeps_finished_shards(reference, tmp_path, monkeypatch):
    out = tmp_path / "resumed"
    real_write, calls = dataset._write_shard, []

    def failing_write(path, arrays):
        calls.append(path)
        if len(calls) > 1:
            raise RuntimeError("injected interruption")
        return real_write(path, arrays)

    monkeypatch.setattr(dataset, "_write_shard", failing_write)
    with pytest.raises(RuntimeError, match="injected"):
        _gen(out)
    monkeypatch.undo()
    assert _files(out) == ["shard-00000.npz"]
    assert not (out / "manifest.json").exists()
    assert not [f for f in os.listdir(out) if ".tmp" in f]
    before = os.stat(out / "shard-00000.npz")
    (out / ".shard-00001.npz.tmp-99999").write_bytes(b"left by a killed run")

    _gen(out)
    after = os.stat(out / "shard-00000.npz")
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    _assert_same_shard_bytes(reference, out)
    assert sorted(os.listdir(out)) == ["job.json", "manifest.json", *_files(reference)]


def test_corrupt_truncated_or_missing_shard_is_rewritten(reference, tmp_path):
    out = tmp_path / "damaged"
    shutil.copytree(reference, out)
    data = bytearray(_read(out / "shard-00001.npz"))
    data[len(data) // 2] ^= 0xFF
    (out / "shard-00001.npz").write_bytes(bytes(data))
    (out / "shard-00002.npz").unlink()
    kept = os.stat(out / "shard-00000.npz")
    _gen(out)
    _assert_same_shard_bytes(reference, out)
    now = os.stat(out / "shard-00000.npz")
    assert (now.st_ino, now.st_mtime_ns) == (kept.st_ino, kept.st_mtime_ns)

    (out / "shard-00002.npz").write_bytes(_read(out / "shard-00002.npz")[:100])
    _gen(out)
    _assert_same_shard_bytes(reference, out)


def test_finished_rerun_is_a_no_op(reference, tmp_path, capsys):
    out = tmp_path / "done"
    shutil.copytree(reference, out)
    stats = {f: os.stat(out / f).st_mtime_ns for f in os.listdir(out)}
    manifest = _gen(out, progress=True)
    assert {f: os.stat(out / f).st_mtime_ns for f in os.listdir(out)} == stats
    assert manifest == dataset.read_manifest(out)
    printed = capsys.readouterr().out
    assert f"{N} states" in printed and "all-local" in printed


@pytest.mark.parametrize("change, named", [
    (dict(num_states=N + 1), "num_states"),
    (dict(seed=SEED + 1), "seed"),
    (dict(solver="enumerate"), "solver"),
    (dict(shard_size=SHARD + 1), "shard_size"),
    (dict(cfg=CFG.with_overrides({"tasks": 5})), "tasks"),
    (dict(cfg=CFG.with_overrides({"backhaul_rate_range": "1e6,5e7"})), "system.backhaul_rate_range"),
])
def test_a_different_command_into_an_existing_dir_is_refused(reference, tmp_path, change, named):
    out = tmp_path / "other"
    shutil.copytree(reference, out)
    before = {f: _read(out / f) for f in os.listdir(out)}
    with pytest.raises(dataset.DatasetError, match=named):
        _gen(out, **change)
    assert {f: _read(out / f) for f in os.listdir(out)} == before


def test_a_foreign_non_empty_dir_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(dataset.DatasetError, match="notes.txt"):
        _gen(tmp_path)


@pytest.mark.parametrize("change", [dict(num_states=0), dict(seed=-1), dict(seed=2**32),
                                    dict(solver="greedy"), dict(shard_size=0), dict(batch_size=0)])
def test_bad_arguments_are_refused(tmp_path, change):
    name = next(iter(change))
    with pytest.raises(ConfigError, match=name):
        _gen(tmp_path / "bad", **change)
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_reader_names_a_bad_shard(reference, tmp_path, damage):
    out = tmp_path / "bad"
    shutil.copytree(reference, out)
    path = out / "shard-00001.npz"
    if damage == "flip":
        data = bytearray(_read(path))
        data[-200] ^= 0x01
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(_read(path)[:1000])
    else:
        path.unlink()
    with pytest.raises(dataset.DatasetError, match="shard-00001.npz"):
        dataset.load(out)
    with pytest.raises(dataset.DatasetError, match="shard-00001.npz"):
        list(dataset.iter_shards(out))
    if damage != "flip":  # without checksums the damage is still found when parsing
        with pytest.raises(dataset.DatasetError, match="shard-00001.npz"):
            dataset.load(out, verify=False)


def test_reader_checks_shapes_and_dtypes_against_the_manifest(reference, tmp_path):
    out = tmp_path / "wrong"
    shutil.copytree(reference, out)
    ds = next(dataset.iter_shards(out))
    arrays = {**ds.states._asdict(), "label": ds.label.astype(np.int32), "latency": ds.latency}
    data = dataset.shard_bytes(arrays)
    (out / "shard-00000.npz").write_bytes(data)
    manifest = json.loads(_read(out / "manifest.json"))
    manifest["shards"][0]["sha256"] = __import__("hashlib").sha256(data).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(dataset.DatasetError, match="shard-00000.npz.*label"):
        dataset.load(out)


def test_reader_rejects_a_bad_manifest(reference, tmp_path):
    out = tmp_path / "m"
    shutil.copytree(reference, out)
    manifest = json.loads(_read(out / "manifest.json"))
    del manifest["versions"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(dataset.DatasetError, match="manifest.json"):
        dataset.read_manifest(out)
    (out / "manifest.json").unlink()
    with pytest.raises(dataset.DatasetError, match="manifest.json"):
        dataset.load(out)


def test_iter_shards_streams_and_load_concatenates(reference):
    parts = list(dataset.iter_shards(reference))
    assert [p.num_states for p in parts] == [SHARD] * 3
    whole = dataset.load(reference)
    assert whole.config == CFG
    np.testing.assert_array_equal(np.concatenate([p.label for p in parts]), whole.label)
    np.testing.assert_array_equal(np.concatenate([p.states.snr for p in parts]), whole.states.snr)
    head = dataset.load(reference, max_states=250)
    assert head.num_states == 250
    np.testing.assert_array_equal(head.latency, whole.latency[:250])
    np.testing.assert_array_equal(head.states.cycles, whole.states.cycles[:250])
    with pytest.raises(ValueError, match="max_states"):
        dataset.load(reference, max_states=0)


def test_label_summary_against_direct_computation(reference):
    ds = dataset.load(reference)
    summary = dataset.label_summary(ds)
    counts = np.bincount(ds.label.ravel(), minlength=3) / ds.label.size
    assert summary["num_states"] == N
    np.testing.assert_allclose(list(summary["site_share"].values()), counts, rtol=1e-12)
    costs = cost.stage_costs(system.from_arrays(ds.states._asdict()))
    for site, name in enumerate(cost.SITES):
        fixed = np.asarray(cost.path_latency(costs, jnp.full((N, CFG.tasks), site)), np.float64)
        np.testing.assert_allclose(summary["ratio_to_optimal"][f"all_{name}"],
                                   np.mean(fixed / ds.latency), rtol=1e-5)
    # generate's printed summary (accumulated per batch) is the same numbers.
    job = json.loads(_read(reference / "job.json"))
    ratio_sums = np.sum([s["ratio_sums"] for s in job["shards"].values()], axis=0)
    np.testing.assert_allclose(ratio_sums / N, list(summary["ratio_to_optimal"].values()), rtol=1e-5)


def test_label_indices_matches_the_stored_data(reference):
    ds = dataset.load(reference)
    idx = jnp.array([0, 5, 599], jnp.uint32)
    state, label, values = dataset.label_indices(jax.random.key(SEED), CFG, idx, "dp")
    np.testing.assert_array_equal(np.asarray(label), ds.label[np.asarray(idx)])
    np.testing.assert_array_equal(np.asarray(state.cycles), ds.states.cycles[np.asarray(idx)])
    np.testing.assert_allclose(np.asarray(values["latency"]), ds.latency[np.asarray(idx)], rtol=1e-6)


def test_cli_generate_smoke(reference, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["generate", "--out", str(out), "--num-states", str(N), "--tasks", str(CFG.tasks),
            "--seed", str(SEED), "--shard-size", str(SHARD), "--set", f"subcarriers={CFG.subcarriers}"]
    assert cli.main(argv) == 0
    assert "labels by site" in capsys.readouterr().out
    _assert_same_shard_bytes(reference, out)
    with pytest.raises(SystemExit) as exc:
        cli.main([*argv[:-2], "--set", "subcarriers=4", "--no-progress"])
    assert exc.value.code == 2
    assert "subcarriers" in capsys.readouterr().err


@pytest.mark.parametrize("argv, named", [
    (["--num-states", "0"], "--num-states"),
    (["--num-states", "5", "--solver", "greedy"], "solver"),
    (["--num-states", "5", "--set", "backhaul_rate_range=5,1"], "backhaul_rate_range"),
    (["--num-states", "5", "--set", "nonsense=1"], "nonsense"),
    (["--num-states", "5", "--tasks", "-2"], "--tasks"),
])
def test_cli_generate_bad_values_exit_2(tmp_path, capsys, argv, named):
    with pytest.raises(SystemExit) as exc:
        cli.main(["generate", "--out", str(tmp_path / "x"), *argv])
    assert exc.value.code == 2
    assert named in capsys.readouterr().err


def test_shards_are_plain_stored_zips_with_fixed_timestamps(reference):
    with zipfile.ZipFile(reference / "shard-00000.npz") as zf:
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        names = dataset.array_names(scenarios.of(CFG))
        assert [i.filename for i in zf.infolist()] == [f"{n}.npy" for n in names]
