"""Several processes of one job with JAX's own multi-process runtime (`jax.distributed`): starting it with
a bounded wait, and the few signals the processes of a job exchange through its key-value store.

The processes compute apart (each on its own local devices) and only wait for one another: `Group`
publishes a named signal, waits for one, and reports a failure to the others, who stop with it.

Timeouts: one number, `--timeout`, bounds every wait that has no reason to last. `initialize` fails
cleanly when the processes have not all connected within it; a process that dies (killed, its host
lost) stops sending heartbeats, and the runtime ends every other process of the job within it (JAX's
health check: "all processes shut down if any process dies"), so a lost peer fails the run instead of
hanging it. Waits for work (a peer still labeling its shards) last as long as the peers live.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import sys
import threading
import time
from collections.abc import Iterator

import jax
from jax._src import distributed  # the runtime's client: no public API has its key-value store

from offload_jax.config import ConfigError

DEFAULT_TIMEOUT = 60  # seconds
_GRACE = 10  # JAX's own connection timeout exceeds ours by this much, so that ours always fires first
_POLL_S = 0.2  # how often a wait looks at the signals
_steps = itertools.count()  # steps (e.g. `generate` calls) this process has run, to name their signals
_timeout = DEFAULT_TIMEOUT  # seconds, as `initialize` was given


class ProcessGroupError(ConfigError):
    """The processes of a job could not start together, or one of them failed; the message says which."""


class _PeerFailed(ProcessGroupError):
    """Another process reported a failure (so this one does not report it again)."""


def _check(coordinator, num_processes, process_id, timeout) -> None:
    flags = {"--coordinator": coordinator, "--num-processes": num_processes, "--process-id": process_id}
    missing = [flag for flag, value in flags.items() if value is None]
    if missing:
        raise ConfigError(f"--coordinator, --num-processes and --process-id go together: give all three or "
                          f"none (missing {', '.join(missing)})")
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"--coordinator must be HOST:PORT with a port in [1, 65535], got {coordinator!r}")
    if num_processes < 1:
        raise ConfigError(f"--num-processes must be an integer >= 1, got {num_processes}")
    if not 0 <= process_id < num_processes:
        raise ConfigError(f"--process-id must be in [0, {num_processes - 1}] for --num-processes "
                          f"{num_processes}, got {process_id}")
    if timeout < 1:
        raise ConfigError(f"--timeout must be an integer >= 1 (seconds), got {timeout}")


def initialize(coordinator: str | None, num_processes: int | None, process_id: int | None,
               timeout: int | None = None) -> None:
    """Join the job's processes (`jax.distributed.initialize`; process 0 runs the coordinator at
    `coordinator`, HOST:PORT), before anything else uses JAX. All three None: a 1-process run, nothing
    to do. Raises ConfigError naming the flag for a bad or missing value, and ProcessGroupError if the
    processes have not all connected within `timeout` seconds (default 60).

    JAX cannot abandon a connection attempt, and its exit handler would then abort the process; so after
    that ProcessGroupError the process, when it exits, ends with code 2 without running the exit handlers
    registered before (JAX's among them)."""
    if coordinator is num_processes is process_id is None:
        if timeout is not None:
            raise ConfigError("--timeout applies to several processes: give it with --coordinator, "
                              "--num-processes and --process-id")
        return
    global _timeout
    timeout = DEFAULT_TIMEOUT if timeout is None else timeout
    _check(coordinator, num_processes, process_id, timeout)
    _timeout = timeout
    errors: list[Exception] = []

    def connect():
        try:
            # No cluster detection: under Slurm or Open MPI it would give each process one GPU, not its
            # host's devices.
            jax.distributed.initialize(coordinator, num_processes, process_id,
                                       cluster_detection_method="deactivate",
                                       initialization_timeout=timeout + _GRACE,
                                       heartbeat_timeout_seconds=timeout, shutdown_timeout_seconds=timeout)
        except Exception as exc:  # reported by the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=connect, name="jax.distributed.initialize", daemon=True)
    thread.start()
    thread.join(timeout)
    if errors:
        raise ProcessGroupError(f"--coordinator {coordinator}: cannot start process {process_id} of "
                                f"{num_processes}: {str(errors[0]).splitlines()[0]}")
    if thread.is_alive():
        atexit.register(_exit_now)
        raise ProcessGroupError(
            f"--coordinator {coordinator}: the {num_processes} processes did not all connect within "
            f"{timeout} s (--timeout): is process 0 running there, reachable from this host, and were all "
            f"--num-processes {num_processes} processes started?")


def _exit_now() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(2)


class Group:
    """The processes of the current JAX job (`jax.process_count()`, `jax.process_index()`) for one step
    of it (e.g. a `generate` call: each process runs the same steps in the same order).

    With one process there is no one to signal: `publish`, `check` and `reporting` do nothing."""

    def __init__(self, step: str):
        self.count, self.index = jax.process_count(), jax.process_index()
        self._prefix = f"offload_jax/{step}/{next(_steps)}/"
        self._client = distributed.global_state.client if self.count > 1 else None

    def publish(self, name: str) -> None:
        """Tell the other processes that `name` happened."""
        if self._client is not None:
            self._client.key_value_set(self._prefix + name, "")

    def wait(self, name: str, late: str | None = None) -> None:
        """Wait until a process publishes `name`; raise ProcessGroupError if a process reports a failure.
        With `late` (what it means), raise it too if `name` is not published within the timeout; without,
        wait as long as the processes live (the runtime ends the job within the timeout of a lost one)."""
        start = time.monotonic()
        while True:
            signals = self._signals()
            self._raise_failures(signals)
            if name in signals:
                return
            if late is not None and time.monotonic() - start > _timeout:
                raise ProcessGroupError(f"{late} within {_timeout} s (--timeout)")
            time.sleep(_POLL_S)

    def check(self) -> None:
        """Raise ProcessGroupError if another process has reported a failure."""
        if self._client is not None:
            self._raise_failures(self._signals())

    @contextlib.contextmanager
    def reporting(self) -> Iterator[None]:
        """Report an exception of the block to the other processes (they stop), then re-raise it."""
        try:
            yield
        except _PeerFailed:
            raise  # its process has reported it
        except BaseException as exc:
            if self._client is not None:
                text = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
                with contextlib.suppress(jax.errors.JaxRuntimeError):  # the runtime is gone: raise exc
                    self._client.key_value_set(f"{self._prefix}failed/{self.index}",
                                               (text.splitlines() or [""])[0])
            raise

    def _signals(self) -> dict[str, str]:
        return {key.removeprefix(self._prefix): value
                for key, value in self._client.key_value_dir_get(self._prefix)}

    @staticmethod
    def _raise_failures(signals: dict[str, str]) -> None:
        failed = sorted((int(k.split("/")[1]), v) for k, v in signals.items() if k.startswith("failed/"))
        if failed:
            raise _PeerFailed("; ".join(f"process {i} failed: {text}" for i, text in failed))
