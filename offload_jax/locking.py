"""One writer per output directory: `hold(DIR, command)` takes DIR's lock or refuses at once.

The lock is an exclusive `flock` on `DIR/.offload-jax.lock`; the file holds the owner's pid, host and
command, for the message that refuses a second writer. The kernel drops the lock of a process that
dies in any way (SIGKILL included), so a lock file left by a dead process is taken over without asking.
On taking the lock, a holder removes the temp files that killed writers left (`atomic.remove_stale_temps`:
no live writer can own them now); when it is done, it removes the lock file (and DIR too, if `hold`
created it and nothing else was put there).

`hold` is re-entrant within a process (a command may take the lock before loading its inputs and the
library call inside take it again) and exclusive across processes. The processes of one multi-process
job that share a directory by design do not each take it: the job's first process holds it for all.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from offload_jax import atomic
from offload_jax.config import ConfigError

LOCK_FILE = ".offload-jax.lock"

_held: dict[Path, int] = {}  # directory (resolved) -> nesting depth, for the locks this process holds


class LockError(ConfigError):
    """Another process is writing into the directory; the message names it."""


@contextlib.contextmanager
def hold(directory: str | os.PathLike, command: str) -> Iterator[Path]:
    """Create `directory` if needed and hold its lock for the block; raise LockError if another process
    holds it. Yields the directory."""
    directory = Path(directory)
    created = atomic.make_dirs(directory)
    key = directory.resolve()
    if key in _held:
        _held[key] += 1
        try:
            yield directory
        finally:
            _held[key] -= 1
        return
    path = directory / LOCK_FILE
    fd = _acquire(path, command)
    _held[key] = 1
    try:
        atomic.remove_stale_temps(directory)
        yield directory
    finally:
        del _held[key]
        path.unlink(missing_ok=True)  # before the unlock: a waiter that opened this file sees it was replaced
        os.close(fd)
        if created and not any(directory.iterdir()):
            directory.rmdir()


def _owner(path: Path) -> dict:
    """What a lock file says about its holder ({} if it cannot be read)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _acquire(path: Path, command: str) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockError(f"{path.parent} is in use by another writer ({_describe(_owner(path))}); "
                            "wait until it ends, or use another --out") from None
        except OSError as exc:
            os.close(fd)
            raise OSError(exc.errno, f"cannot lock: {exc.strerror}", os.fspath(path)) from None
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            break
        os.close(fd)  # the holder we waited for removed this file: lock the new one
    record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command}
    try:
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(record) + "\n").encode())
    except OSError:
        pass  # e.g. a full disk: the lock holds without its description, and the first real write says why
    return fd


def _describe(record: dict) -> str:
    if not record:
        return "owner unknown"
    return f"pid {record.get('pid')} on host {record.get('host')!r}, `{record.get('command')}`"
