"""Labeled datasets on disk (SPEC.md "Dataset on disk", both scenarios): a sharded, resumable,
checksummed writer and a verifying reader. Everything scenario-specific comes from the scenario
(`offload_jax.scenarios`): its state arrays, its label and value arrays, its format and manifest keys,
its labelers and the rules its values obey.

Layout of DIR:

* `shard-00000.npz`, ...: every SPEC state array with a leading axis k, then the label and its values
  (chain: `label` int8 (k, T), `latency` (k,); dag: `label` (k, U, T), `objective` (k,), `latency` and
  `energy` (k, U)). Written as a zip with fixed timestamps, so the same command gives the same bytes.
* `job.json`: the command's identity (everything that decides the bytes, including the shard size)
  and, per finished shard, its sha256 and label statistics. It is what makes a run resumable and
  what refuses a different command into the same DIR. Not part of the SPEC format.
* `job-process-<I>.json` (only while several processes write, see below): process I's records of the
  shards it wrote, in the form of `job.json`'s.
* `manifest.json`: the SPEC manifest, written last, so a DIR with a manifest is complete.

State i uses the key `fold_in(key(seed), i)` (`Scenario.sample`), so the states do not depend
on the batch size or the number of devices; the batch is split over all local devices with a
one-axis `Mesh` ("batch").

Several processes (`offload_jax.processes`, one JAX job of P processes running the same call, DIR on a
file system they share): shard i belongs to process i mod P, which labels it on its own local devices
with the batches a 1-process run on such a host uses, so the bytes do not depend on P. Process 0 holds
DIR's lock for all; it opens the job (creates or checks `job.json`, moves the records that killed
processes left in `job-process-*.json` into it) before the others start, records its shards in
`job.json`, and once every process has said it is done, moves their records into `job.json`, checks
their shards' checksums and writes the manifest. The others check that `job.json` is their command's
and record their shards in their own `job-process-<I>.json`. So a killed process's rerun, with any P,
resumes the same dataset, and a finished DIR is the 1-process run's byte for byte.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import json
import math
import os
import re
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm import tqdm

import offload_jax
from offload_jax import atomic, locking, processes, scenarios, shapes
from offload_jax.config import MAX_SEED, ConfigError
from offload_jax.scenarios.base import NUM_SITES, SITES, Scenario

MANIFEST_FILE = "manifest.json"
JOB_FILE = "job.json"
PEER_JOB_FILE = "job-process-{}.json"  # process I > 0's shard records while several processes write
AUTO = "auto"  # batch_size: grow the batch until the labeler's throughput saturates (grow_batch)
GROW_GAIN = 1.1  # grow_batch doubles the batch while states/s rises by more than this factor
GROW_LIMIT = 64  # ... up to this many times the solver's default batch
_PEER_JOB_RE = re.compile(r"job-process-\d+\.json")
# Keys of every manifest; a scenario adds its own (`Scenario.manifest_keys`).
COMMON_KEYS = ("format", "num_states", "seed", "solver", "system", "shards", "versions")
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed zip timestamp: byte-identical shards


class DatasetError(ConfigError):
    """A dataset on disk is missing, corrupt or does not match the request; the message names the file."""


def shard_name(i: int) -> str:
    return f"shard-{i:05d}.npz"


# --------------------------------------------------------------------------- labeling


def array_names(scenario: Scenario) -> tuple[str, ...]:
    """The arrays of a shard, in file order: the state's, then the label and its values."""
    return (*scenario.state_shapes(), *scenario.result_shapes())


def label_indices(key: jax.Array, cfg, indices: jax.Array, solver: str | None = None):
    """States number `indices` (n,) of the stream of `key` for the system `cfg`, their labels and values:
    (state, label, {value array: ...}) as a shard holds them (default solver: the scenario's first)."""
    scenario = scenarios.of(cfg)
    solver = solver or scenario.solvers[0]
    state, label, results, _ = scenario.labeler(solver, _mesh())(key, scenario.params, jnp.asarray(indices),
                                                                 len(indices))
    return state, label, results


def _summary_from_sums(counts, ratio_sums, n_states: int) -> dict[str, Any]:
    counts = np.asarray(counts, dtype=np.float64)
    ratio_sums = np.asarray(ratio_sums, dtype=np.float64)
    total = max(counts.sum(), 1.0)
    return {
        "num_states": int(n_states),
        "site_share": {site: float(c / total) for site, c in zip(SITES, counts, strict=True)},
        "ratio_to_optimal": {f"all_{site}": float(r / max(n_states, 1))
                             for site, r in zip(SITES, ratio_sums, strict=True)},
    }


def label_summary(ds: Dataset) -> dict[str, Any]:
    """Share of each site among a dataset's labels (the decisions that matter: padding slots excluded)
    and the mean (of per-state ratios) objective of all-local, all-edge and all-cloud relative to the
    labels'. Returns {"num_states", "site_share": {site: share}, "ratio_to_optimal": {"all_<site>": mean}}."""
    scenario = ds.scenario
    state = scenario.state_type(*(jnp.asarray(v) for v in ds.states))
    label = jnp.asarray(ds.label)
    counts, ratio_sums = jax.jit(scenario.summary_sums)(
        scenario.params, state, label, jnp.asarray(ds.objective), jnp.ones(label.shape[0], bool))
    return _summary_from_sums(counts, ratio_sums, label.shape[0])


def format_summary(summary: dict[str, Any]) -> str:
    share = "  ".join(f"{site} {100 * v:.1f}%" for site, v in summary["site_share"].items())
    ratio = "  ".join(f"{name.replace('_', '-')} {v:.3f}x"
                      for name, v in summary["ratio_to_optimal"].items())
    return (f"{summary['num_states']} states; labels by site: {share}\n"
            f"objective relative to optimal (mean of per-state ratios): {ratio}")


def _mesh() -> Mesh:
    """This process's devices (with several processes each labels its own shards; none share arrays)."""
    return Mesh(np.array(jax.local_devices()), ("batch",))


# --------------------------------------------------------------------------- writing


def _atomic_write_json(path: str, obj: Any) -> None:
    atomic.write_json(path, obj, indent=1)  # the dataset files' format: indent 1


def shard_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz (zip, stored) of `arrays` in their order with fixed timestamps: same arrays, same bytes
    (np.savez stamps the current time)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in arrays:
            npy = io.BytesIO()
            np.lib.format.write_array(npy, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            zf.writestr(info, npy.getvalue())
    return buf.getvalue()


def _write_shard(path: str, arrays: dict[str, np.ndarray]) -> str:
    """Write one shard atomically; return its sha256 (hex)."""
    data = shard_bytes(arrays)
    digest = hashlib.sha256(data).hexdigest()
    atomic.write_bytes(path, data)
    return digest


def _file_sha256(path: str) -> str | None:
    """sha256 (hex) of a file, None if it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def _shard_plan(num_states: int, shard_size: int) -> list[tuple[int, int]]:
    return [(s, min(s + shard_size, num_states)) for s in range(0, num_states, shard_size)]


def _batches(start: int, end: int, max_batch: int, multiple: int) -> list[tuple[int, int, int]]:
    """Split [start, end) into near-equal batches of at most ~max_batch states.

    Returns (start, end, padded size); padded sizes are a multiple of `multiple` (the device count),
    equal within a shard, and a power of two or max_batch (rounded), so shards and datasets of other
    sizes share compiles (the dag's exact search compiles a program in ~25-30 s at T = 10 on a 2-core
    CPU, and labels a batch in seconds).
    """
    n = end - start
    count = math.ceil(n / max_batch)
    size = math.ceil(n / count)
    padded = min(shapes.padded_size(size), max_batch)
    padded = math.ceil(padded / multiple) * multiple
    return [(s, min(s + size, end), padded) for s in range(start, end, size)]


def _check_request(scenario: Scenario, num_states: int, seed: int, solver: str, shard_size: int,
                   batch_size: int | None) -> None:
    def is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not is_int(num_states) or not 1 <= num_states <= 2**32:
        raise ConfigError(f"num_states must be an integer in [1, 2**32], got {num_states!r}")
    if not is_int(seed) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed must be an integer in [0, {MAX_SEED}], got {seed!r}")
    scenario.check_solver(solver)
    scenario.static  # noqa: B018 (reads and checks what the system refers to, a topology file, up front)
    if not is_int(shard_size) or shard_size < 1:
        raise ConfigError(f"shard_size must be an integer >= 1, got {shard_size!r}")
    if batch_size not in (None, AUTO) and (not is_int(batch_size) or batch_size < 1):
        raise ConfigError(f"batch_size must be an integer >= 1 or {AUTO!r}, got {batch_size!r}")


def _versions() -> dict[str, str]:
    return {"offload_jax": offload_jax.__version__, "jax": jax.__version__}


def _describe_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = []
    for key in new:
        if key == "system":
            old_sys, new_sys = old.get("system") or {}, new["system"]
            out += [f"system.{k}: existing {old_sys.get(k)!r}, requested {new_sys[k]!r}"
                    for k in new_sys if k != "tasks" and old_sys.get(k) != new_sys[k]]
        elif key == "versions":
            old_v = old.get("versions") or {}
            out += [f"versions.{k}: existing {old_v.get(k)!r}, now {v!r}"
                    for k, v in new[key].items() if old_v.get(k) != v]
        elif old.get(key) != new[key]:
            out.append(f"{key}: existing {old.get(key)!r}, requested {new[key]!r}")
    return out


def _read_job(job_path: str) -> dict[str, Any]:
    try:
        with open(job_path) as f:
            job = json.load(f)
        if not isinstance(job["job"], dict) or not isinstance(job["shards"], dict):
            raise TypeError("job and shards must be objects")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"cannot read {job_path} ({exc}); use a new --out") from None
    return job


def _open_job(out_dir: str, identity: dict[str, Any]) -> dict[str, Any]:
    """Reopen DIR (created, and locked, by the caller) for this job; refuse a DIR that holds anything else."""
    job_path = os.path.join(out_dir, JOB_FILE)
    if not os.path.exists(job_path):
        others = sorted(f for f in os.listdir(out_dir) if not f.startswith("."))
        if others:
            raise DatasetError(
                f"refusing to write into {out_dir}: it is not empty and has no {JOB_FILE} "
                f"(holds {others[:5]}{' ...' if len(others) > 5 else ''}); use an empty or new --out")
        job = {"job": identity, "shards": {}}
        _atomic_write_json(job_path, job)
        return job
    job = _read_job(job_path)
    diffs = _describe_differences(job["job"], identity)
    if diffs:
        raise DatasetError(
            f"refusing to write into {out_dir}: it holds a different dataset job; "
            + "; ".join(diffs) + ". Use another --out, or rerun the original command to finish it.")
    return job


def _merge_peer_records(out_dir: str, job: dict[str, Any]) -> None:
    """Move the shard records in DIR's `job-process-*.json` into `job` and `job.json` (a record there is
    newer than `job.json`'s), then remove those files. An unreadable one is dropped: its shards fail
    their check and are written again."""
    names = sorted(f for f in os.listdir(out_dir) if _PEER_JOB_RE.fullmatch(f))
    if not names:
        return
    for name in names:
        peer = _read_json_or_none(os.path.join(out_dir, name))
        if isinstance(peer, dict) and peer.get("job") == job["job"] and isinstance(peer.get("shards"), dict):
            job["shards"].update(peer["shards"])
    _atomic_write_json(os.path.join(out_dir, JOB_FILE), job)
    for name in names:
        os.remove(os.path.join(out_dir, name))


def _owned(plan, group: processes.Group) -> list[int]:
    """The shards of process `group.index`: shard i belongs to process i mod P."""
    return list(range(group.index, len(plan), group.count))


def _unfinished(out_dir: str, shard_records: dict[str, dict], plan, shards: list[int]) -> list[int]:
    """Those of `shards` without a record whose size and sha256 their file matches."""
    def finished(i):
        rec = shard_records.get(shard_name(i))
        return (rec is not None and rec.get("num_states") == plan[i][1] - plan[i][0]
                and _file_sha256(os.path.join(out_dir, shard_name(i))) == rec.get("sha256"))

    return [i for i in shards if not finished(i)]


def _manifest(identity: dict[str, Any], plan, shard_records: dict[str, dict]) -> dict[str, Any]:
    """The SPEC manifest: the job's identity without the shard size, with the shards' records."""
    shards = [{"file": shard_name(i), "num_states": end - start,
               "sha256": shard_records[shard_name(i)]["sha256"]} for i, (start, end) in enumerate(plan)]
    head = {k: v for k, v in identity.items() if k not in ("shard_size", "versions")}
    return {**head, "shards": shards, "versions": identity["versions"]}


def generate(out_dir, cfg, num_states: int, seed: int, solver: str | None = None, *,
             shard_size: int = 100_000, batch_size: int | None = None, progress: bool = True) -> dict:
    """Label states 0..num_states-1 of the stream of `seed` for the system `cfg` (SystemConfig: chain,
    DagConfig: dag) and write them to `out_dir`; return the manifest. `solver` defaults to the
    scenario's first (the chain DP; dag's pruned search).

    Resumable: rerunning the same call keeps the shards recorded in `job.json` whose sha256 still
    matches and writes only the missing or corrupt ones; a finished DIR is left as is. A different
    call into an existing DIR raises DatasetError naming what differs. Bad arguments raise ConfigError,
    a DIR another process is writing into LockError (`locking.hold`), a failed write an OSError naming
    the file. `batch_size` caps the states per device call (default per solver, times the device count,
    on a CPU; "auto", the default on a GPU or TPU: grown until throughput saturates, `grow_batch`);
    it changes neither the states nor the bytes. With `progress`, shows a progress bar on stderr
    and prints the label summary on stdout.

    In a job of several processes (`processes.initialize`) every process makes this same call and
    writes its share of the shards (module docstring); each returns the manifest. A failure in one
    stops the others with ProcessGroupError naming it.
    """
    group = processes.Group("generate")
    with group.reporting():
        scenario = scenarios.of(cfg)
        solver = solver or scenario.solvers[0]
        _check_request(scenario, num_states, seed, solver, shard_size, batch_size)
        out_dir = os.fspath(out_dir)
        identity = {"format": scenario.format, **scenario.manifest_keys(), "num_states": int(num_states),
                    "seed": int(seed), "solver": solver, "system": scenario.cfg.to_dict(),
                    "shard_size": int(shard_size), "versions": _versions()}
        if group.index > 0:
            return _generate_peer(out_dir, identity, scenario, batch_size, progress, group)
        with locking.hold(out_dir, "generate"):
            return _generate_locked(out_dir, identity, scenario, batch_size, progress, group)


def _generate_locked(out_dir: str, identity: dict[str, Any], scenario: Scenario, batch_size: int | None,
                     progress: bool, group: processes.Group) -> dict:
    """`generate` on process 0 (the only one of a 1-process run) once it holds DIR's lock."""
    job = _open_job(out_dir, identity)
    _merge_peer_records(out_dir, job)  # those of processes killed in an earlier run
    group.publish("open")
    job_path = os.path.join(out_dir, JOB_FILE)
    plan = _shard_plan(identity["num_states"], identity["shard_size"])

    # Keep this process's shards whose bytes match the checksum recorded when they were written.
    todo = _unfinished(out_dir, job["shards"], plan, _owned(plan, group))
    stale = [shard_name(i) for i in todo if shard_name(i) in job["shards"]]
    if stale:
        for name in stale:
            del job["shards"][name]
        _atomic_write_json(job_path, job)

    if todo:
        _label_and_write(out_dir, scenario, identity, plan, todo, batch_size, progress, job, job_path, group)
    if group.count > 1:
        for peer in range(1, group.count):
            group.wait(f"done/{peer}")
        _merge_peer_records(out_dir, job)
        others = sorted(set(range(len(plan))) - set(_owned(plan, group)))
        bad = _unfinished(out_dir, job["shards"], plan, others)
        if bad:
            path = os.path.join(out_dir, shard_name(bad[0]))
            raise DatasetError(f"shard {path}, written by process {bad[0] % group.count}, is missing or "
                               "differs from its record: --out must be a directory all processes share")

    manifest = _manifest(identity, plan, job["shards"])
    manifest_path = os.path.join(out_dir, MANIFEST_FILE)
    if todo or _read_json_or_none(manifest_path) != manifest:
        _atomic_write_json(manifest_path, manifest)
    group.publish("finished")
    if progress:
        print(format_summary(_job_summary(job, plan)), flush=True)
    return manifest


def _generate_peer(out_dir: str, identity: dict[str, Any], scenario: Scenario, batch_size: int | None,
                   progress: bool, group: processes.Group) -> dict:
    """`generate` on process I > 0: once process 0 has opened the job, write this process's shards,
    recording them in `job-process-<I>.json`; return when process 0 has written the manifest."""
    group.wait("open", late=f"process 0 did not open the job in {out_dir}")
    job_path = os.path.join(out_dir, JOB_FILE)
    if not os.path.exists(job_path):
        raise DatasetError(f"{job_path} is missing on process {group.index}'s host, though process 0 has "
                           f"written it: --out must be one directory that all processes share")
    job = _read_job(job_path)
    diffs = _describe_differences(job["job"], identity)
    if diffs:
        raise DatasetError(f"process {group.index} runs another command than process 0: " + "; ".join(diffs))
    plan = _shard_plan(identity["num_states"], identity["shard_size"])
    todo = _unfinished(out_dir, job["shards"], plan, _owned(plan, group))
    if todo:
        records_path = os.path.join(out_dir, PEER_JOB_FILE.format(group.index))
        _label_and_write(out_dir, scenario, identity, plan, todo, batch_size, progress,
                         {"job": identity, "shards": {}}, records_path, group)
    group.publish(f"done/{group.index}")
    group.wait("finished")
    return read_manifest(out_dir)


def grow_batch(run: Callable[[int], Any], start: int, limit: int, *, gain: float = GROW_GAIN,
               clock: Callable[[], float] = time.perf_counter) -> tuple[int, list[tuple[int, float]]]:
    """The batch size at which a labeler's throughput saturates on the device it runs on.

    `run(b)` labels b states and waits for them. From `start`, each size is run twice (the first call
    compiles, the second is timed) and doubled while states/s rises by more than `gain` and the size
    stays <= `limit`; a size the device has no memory for (XLA's RESOURCE_EXHAUSTED) ends the growth.
    Returns (the size with the best states/s, [(size, states/s), ...] of every size timed)."""
    trials: list[tuple[int, float]] = []
    b = start
    while b <= limit:
        try:
            run(b)
            t0 = clock()
            run(b)
            elapsed = clock() - t0
        except jax.errors.JaxRuntimeError as exc:
            if "RESOURCE_EXHAUSTED" not in str(exc) or not trials:
                raise
            break
        trials.append((b, b / max(elapsed, 1e-9)))
        if len(trials) > 1 and trials[-1][1] < gain * trials[-2][1]:
            break
        b *= 2
    if not trials:  # limit < start: the shards are smaller than one default batch
        return limit, trials
    return max(trials, key=lambda t: t[1])[0], trials


def _saturating_batch(labeler, key, params, mesh: Mesh, start: int, most: int, progress: bool) -> int:
    """grow_batch on this job's labeler over its first states (labels thrown away: a batch's labels do not
    depend on its size), up to GROW_LIMIT x the default batch or the largest shard."""
    n_dev = mesh.devices.size
    sharding = NamedSharding(mesh, PartitionSpec("batch"))

    def run(b: int) -> None:
        idx = jax.device_put(np.arange(b, dtype=np.uint32), sharding)
        jax.block_until_ready(labeler(key, params, idx, b))

    limit = max(n_dev, min(GROW_LIMIT * start, math.ceil(most / n_dev) * n_dev))
    chosen, trials = grow_batch(run, min(start, limit), limit)
    if progress:
        rates = ", ".join(f"{b}: {r:,.0f}/s" for b, r in trials)
        print(f"generate: batch of {chosen} states per call (states/s by batch: {rates})", file=sys.stderr)
    return chosen


def _label_and_write(out_dir, scenario: Scenario, identity, plan, todo, batch_size, progress, job, job_path,
                     group: processes.Group):
    """Compute shards `todo` (of this process's) and write them, recording each in `job` and `job_path`;
    writing shard k overlaps computing shard k+1."""
    seed, solver = identity["seed"], identity["solver"]
    mesh = _mesh()
    n_dev = mesh.devices.size
    labeler = scenario.labeler(solver, mesh)
    params = scenario.params
    batch_sharding = NamedSharding(mesh, PartitionSpec("batch"))
    key = jax.random.key(seed)
    max_batch = batch_size or scenario.default_batch[solver] * n_dev
    if batch_size == AUTO or (batch_size is None and mesh.devices.flat[0].platform != "cpu"):
        max_batch = _saturating_batch(labeler, key, params, mesh, scenario.default_batch[solver] * n_dev,
                                      max(plan[i][1] - plan[i][0] for i in todo), progress)
    dtypes = {**scenario.state_shapes(), **scenario.result_shapes()}
    state_names = tuple(scenario.state_shapes())
    mine = _owned(plan, group)
    done_states = sum(plan[i][1] - plan[i][0] for i in mine if i not in set(todo))

    def write_task(i, arrays, counts, ratio_sums):
        name = shard_name(i)
        digest = _write_shard(os.path.join(out_dir, name), arrays)
        job["shards"][name] = {"num_states": plan[i][1] - plan[i][0], "sha256": digest,
                               "label_counts": [int(c) for c in counts],
                               "ratio_sums": [float(r) for r in ratio_sums]}
        _atomic_write_json(job_path, job)

    def dispatch(i):
        """Start computing shard i (JAX dispatch is asynchronous); returns its batches' futures."""
        start, end = plan[i]
        batches = []
        for b_start, b_end, padded in _batches(start, end, max_batch, n_dev):
            idx = np.minimum(np.arange(b_start, b_start + padded, dtype=np.int64), end - 1)
            idx = jax.device_put(idx.astype(np.uint32), batch_sharding)
            batches.append((b_start, b_end, labeler(key, params, idx, b_end - b_start)))
        return i, batches

    def collect(i, batches):
        """Wait for shard i and copy it to host arrays (padding dropped)."""
        start, end = plan[i]
        arrays = {k: np.empty((end - start, *s), d) for k, (s, d) in dtypes.items()}
        counts = np.zeros(NUM_SITES, np.int64)
        ratio_sums = np.zeros(NUM_SITES, np.float64)
        for b_start, b_end, (state, label, results, (c, r)) in batches:
            rows, n = slice(b_start - start, b_end - start), b_end - b_start
            for name, value in zip(state_names, state, strict=True):
                arrays[name][rows] = np.asarray(value)[:n]
            arrays["label"][rows] = np.asarray(label)[:n]
            for name, value in results.items():
                arrays[name][rows] = np.asarray(value)[:n]
            counts += np.asarray(c)
            ratio_sums += np.asarray(r)
            bar.update(n)
        return arrays, counts, ratio_sums

    bar = tqdm(total=sum(plan[i][1] - plan[i][0] for i in mine), initial=done_states, unit="states",
               unit_scale=True, file=sys.stderr, disable=not progress,
               desc="generate" if group.count == 1 else f"generate (process {group.index} of {group.count})")
    pending_writes: list[concurrent.futures.Future] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as writer:
        try:
            # Pipeline: shard k+1 is dispatched before shard k is read back, and shard k is written
            # by the writer thread while the main thread reads back k+1.
            ahead = dispatch(todo[0])
            for nxt in [*todo[1:], None]:
                current, ahead = ahead, (dispatch(nxt) if nxt is not None else None)
                arrays, counts, ratio_sums = collect(*current)
                group.check()  # stop if another process has failed
                # Bound memory: at most one shard waiting for the writer besides the one being written.
                while len(pending_writes) >= 2:
                    pending_writes.pop(0).result()
                pending_writes.append(writer.submit(write_task, current[0], arrays, counts, ratio_sums))
            for fut in pending_writes:
                fut.result()
        finally:
            for fut in pending_writes:
                fut.cancel()
            bar.close()


def _job_summary(job: dict[str, Any], plan) -> dict[str, Any]:
    recs = [job["shards"][shard_name(i)] for i in range(len(plan))]
    counts = np.sum([r["label_counts"] for r in recs], axis=0)
    ratio_sums = np.sum([r["ratio_sums"] for r in recs], axis=0)
    return _summary_from_sums(counts, ratio_sums, plan[-1][1])


def _read_json_or_none(path: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- reading


class Dataset(NamedTuple):
    """A labeled dataset (or one shard of it) in host memory."""

    states: Any  # the scenario's state NamedTuple of numpy arrays, leading axis n
    label: np.ndarray  # (n, *decision_shape) int8
    values: dict[str, np.ndarray]  # the label's values: chain latency; dag objective, latency, energy
    manifest: dict

    @property
    def scenario(self) -> Scenario:
        return scenario_of(self.manifest)

    @property
    def config(self):
        return self.scenario.cfg

    @property
    def objective(self) -> np.ndarray:
        """(n,) the optimal objective J (the chain's is its latency)."""
        return self.values["objective"] if "objective" in self.values else self.values["latency"]

    @property
    def latency(self) -> np.ndarray:
        """Seconds: (n,) chain, (n, U) dag."""
        return self.values["latency"]

    @property
    def num_states(self) -> int:
        return int(self.label.shape[0])


def scenario_of(manifest: dict) -> Scenario:
    """The scenario (with its system) a checked manifest describes."""
    name = manifest.get("scenario") or scenarios.name_of_format(manifest["format"])
    return scenarios.from_system(name, manifest["system"])


def _manifest_path(path) -> str:
    path = os.fspath(path)
    return path if os.path.basename(path) == MANIFEST_FILE else os.path.join(path, MANIFEST_FILE)


def read_manifest(path) -> dict:
    """The manifest of the dataset at `path` (its directory or its manifest.json), checked."""
    mpath = _manifest_path(path)
    try:
        with open(mpath) as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise DatasetError(f"{mpath} does not exist: not a finished dataset "
                           f"(an unfinished `generate` resumes when rerun)") from None
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read {mpath}: {exc}") from None
    if not isinstance(manifest, dict) or "format" not in manifest:
        raise DatasetError(f"{mpath}: not a dataset manifest (no 'format')")
    try:
        name = manifest.get("scenario") or scenarios.name_of_format(manifest["format"])
        expected = scenarios.SCENARIOS[name].format if name in scenarios.SCENARIOS else None
        scenario = scenario_of(manifest)
    except (ConfigError, TypeError, AttributeError) as exc:
        raise DatasetError(f"{mpath}: field 'format', 'scenario' or 'system' is invalid: {exc}") from None
    if manifest["format"] != expected:
        raise DatasetError(f"{mpath}: format must be {expected!r} for scenario {name!r}, "
                           f"got {manifest['format']!r}")
    keys = (*COMMON_KEYS, *scenario.manifest_keys())
    if sorted(manifest) != sorted(keys):
        raise DatasetError(f"{mpath}: keys must be {sorted(keys)}, got {sorted(manifest)}")
    for key, value in scenario.manifest_keys().items():
        if manifest[key] != value:
            raise DatasetError(f"{mpath}: field {key!r} ({manifest[key]!r}) differs from system.{key} "
                               f"({value!r})")
    shards = manifest["shards"]
    if not isinstance(shards, list) or not all(
            isinstance(s, dict) and {"file", "num_states", "sha256"} <= set(s) for s in shards):
        raise DatasetError(f"{mpath}: field 'shards' must be a list of {{file, num_states, sha256}}")
    if sum(s["num_states"] for s in shards) != manifest["num_states"]:
        raise DatasetError(f"{mpath}: field 'num_states' ({manifest['num_states']}) is not the sum "
                           f"of the shards' num_states")
    return manifest


def fingerprint(manifest: dict) -> str:
    """sha256 of a manifest (canonical JSON): it holds every shard's sha256, so equal fingerprints mean
    equal data, wherever the datasets lie."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def _check_values(path: str, arrays: dict[str, np.ndarray], scenario: Scenario) -> None:
    """Raise DatasetError naming the shard, the array and the first bad state (`Scenario.value_rules`: a
    shard whose checksum matches may still have been written with bad values). Vectorized: a few passes
    over each array."""
    for name, (rule, good_of) in scenario.value_rules().items():
        a = arrays[name]
        good = good_of(a)
        if not good.all():
            bad_states = ~good.reshape(good.shape[0], -1).all(axis=1)
            first = tuple(np.argwhere(~good)[0])
            raise DatasetError(
                f"shard {path}: array {name!r} must be {rule}; {int(bad_states.sum())} of {a.shape[0]} "
                f"states are not, the first is state {first[0]} with {np.asarray(a[first]).tolist()!r}")


def _read_shard(directory: str, entry: dict, manifest: dict, scenario: Scenario, verify: bool) -> Dataset:
    path = os.path.join(directory, entry["file"])
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DatasetError(f"shard {path} is missing") from None
    except OSError as exc:
        raise DatasetError(f"cannot read shard {path}: {exc}") from None
    if verify and hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise DatasetError(f"shard {path} is corrupt or truncated: sha256 differs from the manifest")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise DatasetError(f"shard {path} is corrupt or truncated: {exc}") from None
    names = array_names(scenario)
    if sorted(arrays) != sorted(names):
        raise DatasetError(f"shard {path}: arrays must be {sorted(names)}, got {sorted(arrays)}")
    k = entry["num_states"]
    for name, (shape, dtype) in {**scenario.state_shapes(), **scenario.result_shapes()}.items():
        a = arrays[name]
        if a.shape != (k, *shape) or a.dtype != dtype:
            raise DatasetError(f"shard {path}: array {name!r} must be {dtype} {(k, *shape)} "
                               f"({_sizes(scenario)}), got {a.dtype} {a.shape}")
    _check_values(path, arrays, scenario)
    states = scenario.state_type(**{name: arrays[name] for name in scenario.state_shapes()})
    values = {name: arrays[name] for name in scenario.result_shapes() if name != "label"}
    return Dataset(states=states, label=arrays["label"], values=values, manifest=manifest)


def _sizes(scenario: Scenario) -> str:
    return ", ".join(f"{k}={v}" for k, v in scenario.manifest_keys().items() if isinstance(v, int))


def iter_shards(path, *, verify: bool = True) -> Iterator[Dataset]:
    """Stream the dataset at `path` one shard at a time, checking checksums (unless not `verify`),
    shapes, dtypes and values."""
    manifest = read_manifest(path)
    directory = os.path.dirname(_manifest_path(path))
    scenario = scenario_of(manifest)
    for entry in manifest["shards"]:
        yield _read_shard(directory, entry, manifest, scenario, verify)


def load(path, *, verify: bool = True, max_states: int | None = None) -> Dataset:
    """The whole dataset at `path` (or its first `max_states` states), shards concatenated."""
    if max_states is not None and (not isinstance(max_states, int) or max_states < 1):
        raise ConfigError(f"max_states must be an integer >= 1 or None, got {max_states!r}")
    parts, total = [], 0
    manifest = read_manifest(path)
    for part in iter_shards(path, verify=verify):
        parts.append(part)
        total += part.num_states
        if max_states is not None and total >= max_states:
            break
    n = total if max_states is None else min(max_states, total)

    def cat(arrays):
        return arrays[0][:n] if len(arrays) == 1 else np.concatenate(arrays, axis=0)[:n]

    states = type(parts[0].states)(*(cat([p.states[j] for p in parts]) for j in range(len(parts[0].states))))
    values = {name: cat([p.values[name] for p in parts]) for name in parts[0].values}
    return Dataset(states=states, label=cat([p.label for p in parts]), values=values, manifest=manifest)

