"""Atomic file writes: a temp file in the same directory, then os.replace.

Readers never see a partial file; a failed write (a full disk, a read-only file system) removes its
temp file and raises an OSError naming the target; a killed one leaves at most a temp file named
`.<name>.tmp-<pid>`, which the next writer of the directory removes (`remove_stale_temps`). No fsync:
a file torn by a power loss fails its checksum (datasets) or its parse and is rewritten.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from pathlib import Path
from typing import Any

TMP_MARK = ".tmp-"


def temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


def remove_stale_temps(directory: str | os.PathLike) -> None:
    """Remove the temp files that killed writers left in `directory`. Only its lock holder may do this
    (`locking.hold` does): the temp files of a live writer would go too."""
    for f in os.listdir(directory):
        if f.startswith(".") and TMP_MARK in f and f.rsplit(TMP_MARK, 1)[1].isdigit():
            os.remove(os.path.join(directory, f))


def make_dirs(path: str | os.PathLike) -> bool:
    """Create directory `path` and its parents if needed; whether it was created. A file in the way
    raises NotADirectoryError naming it (os.makedirs would say "File exists")."""
    path = Path(path)
    if path.is_dir():
        return False
    if path.exists():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), os.fspath(path))
    os.makedirs(path, exist_ok=True)
    return True


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (parent directories are created). Returns the path.

    An OSError names `path` (not the temp file), whatever step failed.
    """
    path = Path(path)
    make_dirs(path.parent)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):  # e.g. there is no temp file on a read-only file system
            tmp.unlink()
        if isinstance(exc, OSError):
            raise OSError(exc.errno, exc.strerror or str(exc), os.fspath(path)) from exc
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode())


def write_json(path: str | os.PathLike, obj: Any, *, indent: int = 2, sort_keys: bool = False) -> Path:
    """`obj` as JSON with a trailing newline, atomically."""
    return write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")
