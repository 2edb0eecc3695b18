"""Fault injection through the command line: damaged files. Every refusal is one line on stderr,
`offload-jax <command>: error: ...`, exit 2.
"""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from offload_jax import cli, dataset
from offload_jax.config import SystemConfig

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
