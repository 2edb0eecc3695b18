"""The one atomic-write helper: whole files or the old ones, never a torn file or a leftover temp."""

import json

import pytest

from offload_jax import atomic


def test_write_json_and_text(tmp_path):
    path = atomic.write_json(tmp_path / "sub" / "a.json", {"b": 1, "a": [1, 2]}, sort_keys=True)
    assert path.read_text() == json.dumps({"a": [1, 2], "b": 1}, indent=2, sort_keys=True) + "\n"
    atomic.write_text(path, "replaced")
    assert path.read_text() == "replaced"
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.json"]


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path = atomic.write_bytes(tmp_path / "x.bin", b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic.write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]


def test_temp_name_is_recognizable(tmp_path):
    tmp = atomic.temp_path(tmp_path / "shard-00001.npz")
    assert tmp.name.startswith(".shard-00001.npz" + atomic.TMP_MARK) and tmp.parent == tmp_path
