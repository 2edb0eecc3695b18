"""One writer per output directory: refusal while held, takeover of a dead owner's lock, re-entrancy."""

import json
import os
import socket

import pytest

from offload_jax import atomic, locking


def test_a_second_writer_is_refused_naming_the_first(held):
    out, proc = held
    with pytest.raises(locking.LockError, match=rf"in use by another writer \(pid {proc.pid} on host "
                                                rf"'{socket.gethostname()}', `holder`\)"):
        with locking.hold(out, "second"):
            pass
    assert (out / locking.LOCK_FILE).exists()  # the refused writer leaves the holder's lock alone


def test_the_lock_of_a_killed_process_is_taken_over(held):
    out, proc = held
    proc.kill()
    proc.wait()
    assert json.loads((out / locking.LOCK_FILE).read_text())["pid"] == proc.pid  # left behind
    (out / ".job.json.tmp-99999").write_text("left by a killed writer")
    with locking.hold(out, "next"):
        record = json.loads((out / locking.LOCK_FILE).read_text())
        assert record == {"pid": os.getpid(), "host": socket.gethostname(), "command": "next"}
        assert not (out / ".job.json.tmp-99999").exists()  # the holder removes dead writers' temp files
    assert not (out / locking.LOCK_FILE).exists()


def test_hold_is_reentrant_and_cleans_up(tmp_path):
    out = tmp_path / "a" / "b"
    with locking.hold(out, "outer"):
        with locking.hold(out, "inner"):  # the same process: a nested holder (a command, then its library)
            assert json.loads((out / locking.LOCK_FILE).read_text())["command"] == "outer"
        assert (out / locking.LOCK_FILE).exists()
        atomic.write_text(out / "kept", "x")
    assert sorted(os.listdir(out)) == ["kept"]
    with locking.hold(tmp_path / "empty", "nothing"):
        pass
    assert not (tmp_path / "empty").exists()  # created for a command that wrote nothing: removed again


def test_a_file_in_the_way_is_named(tmp_path):
    (tmp_path / "f").write_text("x")
    for path in (tmp_path / "f", tmp_path / "f" / "sub"):
        with pytest.raises(NotADirectoryError, match="Not a directory") as exc:
            with locking.hold(path, "x"):
                pass
        assert exc.value.filename in (str(tmp_path / "f"), str(tmp_path / "f" / "sub"))
