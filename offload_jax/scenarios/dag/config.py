"""Configuration of the `dag` scenario (SPEC.md, "Scenario `dag`"): every chain key plus the dag keys.

`DagConfig` holds exactly the keys of a format-2 manifest's `system` section, validated with errors
that name the field. It splits into what fixes the shapes and the structure of the programs
(`DagStatic`: T, U, N, the graph family, one graph or one per state, the graphs of a topology file;
hashable, a static argument of jitted functions) and what only sets values (`DagParams`: ranges,
layered-graph knobs, objective weights, energy constants; a pytree of float32 / int32 arrays passed
at call time, so a sweep over w_energy or the mean SNR is one vmapped program).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from offload_jax.config import ConfigError, SystemConfig, _coerce, _is_finite_number
from offload_jax.scenarios.sampling import Range, make_range

TOPOLOGIES = ("chain", "layered", "file")
TOPOLOGY_FORMAT = "offload-jax-topologies/1"
# Ranges added by dag (log-uniform, > 0): per-edge bits, and the device's input / result bits.
DAG_RANGE_KEYS = ("edge_bits_range", "io_bits_range")
# dag keys after the chain keys, in manifest order.
DAG_KEYS = ("users", "topology", "topology_per_state", "topology_seed", "topology_file",
            "topology_file_sha256", "fat", "density", "jump", *DAG_RANGE_KEYS,
            "w_latency", "w_energy", "kappa", "p_tx", "p_rx")
CHAIN_KEYS = tuple(f.name for f in dataclasses.fields(SystemConfig))


@dataclasses.dataclass(frozen=True)
class Graph:
    """One application graph: `tasks` sub-tasks, edges (i, j) with i < j (i's output feeds j)."""

    name: str
    tasks: int
    edges: tuple[tuple[int, int], ...]


@dataclasses.dataclass(frozen=True)
class DagConfig:
    """The dag system of SPEC.md. Units: cycles, bits, Hz, bit/s, seconds, dB, W, J/(cycle Hz^2).

    Defaults of the dag keys (graph shape and data sizes) are calibrated so that at T = 10 on
    layered graphs every site gets >= 10% of the optimal labels (benchmarks/RESULTS.md, "dag").
    `data_bits_range` is a chain key kept for the manifest; the dag draws its bits from
    `edge_bits_range` and `io_bits_range`.
    """

    # --- the chain keys (SystemConfig), same defaults
    tasks: int = 10
    cycles_range: tuple[float, float] = (5.0e7, 2.0e9)
    data_bits_range: tuple[float, float] = (4.0e5, 4.0e7)
    f_local_range: tuple[float, float] = (1.0e9, 4.0e9)
    edge_cores: int = 8
    edge_core_hz: float = 2.5e9
    f_cloud_range: tuple[float, float] = (2.0e10, 4.0e10)
    subcarriers: int = 8
    subcarrier_bandwidth: float = 1.0e6
    subcarrier_free_prob: float = 0.5
    mean_snr_db_range: tuple[float, float] = (0.0, 20.0)
    downlink_factor: float = 2.0
    backhaul_rate_range: tuple[float, float] = (5.0e6, 1.0e8)
    cloud_delay_range: tuple[float, float] = (0.02, 0.15)
    # --- dag
    users: int = 1
    topology: str = "layered"
    topology_per_state: bool = True
    topology_seed: int = 0
    topology_file: str | None = None
    topology_file_sha256: str | None = None
    # layered graphs (graphs.layered): mean layer width T**fat, edge probability, layers an edge may skip.
    # Calibrated (experiments/dag_calibration.py; benchmarks/RESULTS.md, "dag scenario: calibration and
    # baselines"): at T = 10, U = 1, w_energy = 0 on 2048 layered states the optimal labels put 25.0% of
    # sub-tasks local, 48.7% on the edge, 26.2% in the cloud; greedy 1.39x and local search 1.20x the
    # optimum. Graph shape near MRLCO's daggen settings (fat 0.5, density 0.6); per-edge data 25-750 kB,
    # device input / result 12.5-500 kB: a middle between small (1e5-4e6 bits: local search 1.12x) and
    # large (4e5-1e7 bits: 1.35x) per-edge data.
    fat: float = 0.5
    density: float = 0.5
    jump: int = 1
    edge_bits_range: tuple[float, float] = (2.0e5, 6.0e6)
    io_bits_range: tuple[float, float] = (1.0e5, 4.0e6)
    w_latency: float = 1.0
    w_energy: float = 0.0
    kappa: float = 1.0e-27
    p_tx: float = 1.258
    p_rx: float = 1.181

    # ------------------------------------------------------------------ validation and I/O

    def chain_part(self) -> SystemConfig:
        return SystemConfig(**{k: getattr(self, k) for k in CHAIN_KEYS})

    def validate(self) -> DagConfig:
        """Return self if every field is allowed, else raise ConfigError naming the field."""
        self.chain_part().validate()
        if isinstance(self.users, bool) or not isinstance(self.users, int) or self.users < 1:
            raise ConfigError(f"users must be an integer >= 1, got {self.users!r}")
        if self.topology not in TOPOLOGIES:
            raise ConfigError(f"topology must be one of {list(TOPOLOGIES)}, got {self.topology!r}")
        if not isinstance(self.topology_per_state, bool):
            raise ConfigError(f"topology_per_state must be true or false, got {self.topology_per_state!r}")
        if (isinstance(self.topology_seed, bool) or not isinstance(self.topology_seed, int)
                or not 0 <= self.topology_seed <= 2**32 - 1):
            raise ConfigError(f"topology_seed must be an integer in [0, 2**32-1], got {self.topology_seed!r}")
        if self.topology == "file":
            if not isinstance(self.topology_file, str) or not self.topology_file:
                raise ConfigError("topology_file must name a topology file when topology is 'file'")
        elif self.topology_file is not None:
            raise ConfigError(f"topology_file is only used with topology 'file' (topology is "
                              f"{self.topology!r}); got {self.topology_file!r}")
        if not _is_finite_number(self.fat) or self.fat < 0:
            raise ConfigError(f"fat must be a finite number >= 0, got {self.fat!r}")
        if not _is_finite_number(self.density) or not 0.0 <= self.density <= 1.0:
            raise ConfigError(f"density must be in [0, 1], got {self.density!r}")
        if isinstance(self.jump, bool) or not isinstance(self.jump, int) or self.jump < 0:
            raise ConfigError(f"jump must be an integer >= 0, got {self.jump!r}")
        for name in DAG_RANGE_KEYS:
            value = getattr(self, name)
            if not (isinstance(value, tuple) and len(value) == 2
                    and all(_is_finite_number(v) for v in value)):
                raise ConfigError(f"{name} must be a pair [low, high] of finite numbers, got {value!r}")
            if not 0 < value[0] <= value[1]:
                raise ConfigError(f"{name} must satisfy 0 < low <= high, got [{value[0]}, {value[1]}]")
        for name in ("w_latency", "w_energy", "kappa", "p_tx", "p_rx"):
            value = getattr(self, name)
            if not _is_finite_number(value) or value < 0:
                raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.w_latency == 0 and self.w_energy == 0:
            raise ConfigError("w_latency and w_energy are both 0: the objective would be constant; "
                              "give at least one a positive weight")
        if self.w_energy > 0 and self.kappa == 0:
            raise ConfigError("kappa must be > 0 when w_energy > 0: the all-local energy E_u(0) "
                              "normalizes the objective")
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: the chain keys in SPEC order, then the dag keys (ranges as lists)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DagConfig:
        """Build and validate from a dict such as a manifest's `system` section (values may be strings
        as typed after `--set`)."""
        unknown = sorted(set(d) - set(field_names()))
        if unknown:
            raise ConfigError(f"unknown system key(s) {unknown}; allowed: {list(field_names())}")
        return cls(**{k: _coerce_dag(k, v) for k, v in d.items()}).validate()

    def with_overrides(self, overrides: Mapping[str, Any]) -> DagConfig:
        """Copy with some keys replaced; a new `topology_file` gets its sha256 (the file must exist)."""
        merged = self.to_dict()
        for key, value in overrides.items():
            if key not in merged:
                raise ConfigError(f"unknown system key {key!r}; allowed: {list(field_names())}")
            merged[key] = value
        if "topology_file" in overrides and "topology_file_sha256" not in overrides:
            merged["topology_file_sha256"] = None
        cfg = DagConfig.from_dict(merged)
        if cfg.topology == "file" and cfg.topology_file_sha256 is None:
            cfg = dataclasses.replace(cfg, topology_file_sha256=file_sha256(cfg.topology_file))
        return cfg

    # ------------------------------------------------------------------ the static / values split

    def static(self) -> DagStatic:
        """What fixes shapes and program structure (hashable: a static jit argument).

        A `topology_file` that is not on disk (a dataset or run directory moved or copied without it)
        leaves the graphs out: everything but drawing states works (loading, deciding, scoring stored
        states), and drawing them fails naming the file. A file that is there but changed is refused.
        """
        graphs: tuple[Graph, ...] = ()
        missing = None
        if self.topology == "file":
            if os.path.exists(self.topology_file):
                graphs = eligible_graphs(self.topology_file, self.tasks, self.topology_file_sha256)
            else:
                missing = self.topology_file
        return DagStatic(tasks=self.tasks, users=self.users, subcarriers=self.subcarriers,
                         topology=self.topology, topology_per_state=self.topology_per_state,
                         topology_seed=self.topology_seed, graphs=graphs, missing_file=missing)

    def params(self) -> DagParams:
        """The values (a pytree of numpy float32 / int32 scalars and pairs)."""
        f32, i32 = np.float32, np.int32

        def pair(name):
            return make_range(getattr(self, name))

        return DagParams(
            cycles_range=pair("cycles_range"), edge_bits_range=pair("edge_bits_range"),
            io_bits_range=pair("io_bits_range"), f_local_range=pair("f_local_range"),
            edge_cores=i32(self.edge_cores), edge_core_hz=f32(self.edge_core_hz),
            f_cloud_range=pair("f_cloud_range"), subcarrier_bandwidth=f32(self.subcarrier_bandwidth),
            subcarrier_free_prob=f32(self.subcarrier_free_prob), mean_snr_db_range=pair("mean_snr_db_range"),
            downlink_factor=f32(self.downlink_factor), backhaul_rate_range=pair("backhaul_rate_range"),
            cloud_delay_range=pair("cloud_delay_range"), fat=f32(self.fat), density=f32(self.density),
            jump=i32(self.jump), w_latency=f32(self.w_latency), w_energy=f32(self.w_energy),
            kappa=f32(self.kappa), p_tx=f32(self.p_tx), p_rx=f32(self.p_rx))


@dataclasses.dataclass(frozen=True)
class DagStatic:
    """Shapes and structure: sub-task slots T, users U, sub-carriers N, the graph family."""

    tasks: int
    users: int
    subcarriers: int
    topology: str
    topology_per_state: bool
    topology_seed: int
    graphs: tuple[Graph, ...] = ()  # topology "file": the eligible graphs (<= T sub-tasks)
    missing_file: str | None = None  # topology "file" not on disk: no graphs, states cannot be drawn

    @property
    def decisions(self) -> int:
        """Sub-task slots decided per state (U * T)."""
        return self.users * self.tasks


class DagParams(NamedTuple):
    """Values of a dag system: a pytree passed at call time (vmappable, e.g. over w_energy)."""

    cycles_range: Range
    edge_bits_range: Range
    io_bits_range: Range
    f_local_range: Range
    edge_cores: Any  # () int32
    edge_core_hz: Any  # () float32
    f_cloud_range: Range
    subcarrier_bandwidth: Any
    subcarrier_free_prob: Any
    mean_snr_db_range: Range
    downlink_factor: Any
    backhaul_rate_range: Range
    cloud_delay_range: Range
    fat: Any
    density: Any
    jump: Any  # () int32
    w_latency: Any
    w_energy: Any
    kappa: Any
    p_tx: Any
    p_rx: Any


def field_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(DagConfig))


def _coerce_dag(name: str, value: Any) -> Any:
    """JSON / command-line values -> the field's type, errors naming the field."""
    if name in CHAIN_KEYS:
        return _coerce(name, value)
    if name in DAG_RANGE_KEYS:
        return _coerce_range(name, value)
    if name in ("topology", "topology_file", "topology_file_sha256"):
        nullable = name != "topology"
        if value is None or (nullable and isinstance(value, str) and value.lower() in ("", "null", "none")):
            return None
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")
        return value
    if name == "topology_per_state":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
            return value.strip().lower() in ("true", "1")
        raise ConfigError(f"topology_per_state must be true or false, got {value!r}")
    if name in ("users", "topology_seed", "jump"):
        try:
            number = float(value) if isinstance(value, str) else value
            if isinstance(number, bool) or not float(number).is_integer():
                raise ValueError
            return int(number)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{name} must be an integer, got {value!r}") from None
    try:
        if isinstance(value, bool):
            raise ValueError
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: cannot read {value!r} as a number") from None


def _coerce_range(name: str, value: Any) -> tuple[float, float]:
    try:
        if isinstance(value, str):
            value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
        if (not isinstance(value, (list, tuple)) or len(value) != 2
                or any(isinstance(v, bool) for v in value)):
            raise ValueError
        return (float(value[0]), float(value[1]))
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a pair low,high, got {value!r}") from None


# ---------------------------------------------------------------------- topology files


def file_sha256(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError as exc:
        raise ConfigError(f"topology_file {path!r}: cannot read it ({exc.strerror or exc})") from None


def read_topology_file(path: str) -> tuple[Graph, ...]:
    """Every graph of a topology file (SPEC: {"format": "offload-jax-topologies/1", "graphs": [...]}),
    checked: clear errors naming the file, the graph and the field."""
    try:
        with open(path) as f:
            doc = json.load(f)
    except OSError as exc:
        raise ConfigError(f"topology_file {path!r}: cannot read it ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise ConfigError(f"topology_file {path!r}: not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != TOPOLOGY_FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ConfigError(f"topology_file {path!r}: format must be {TOPOLOGY_FORMAT!r}, got {got!r}")
    graphs = doc.get("graphs")
    if not isinstance(graphs, list):
        raise ConfigError(f"topology_file {path!r}: 'graphs' must be a list")
    out = []
    for k, g in enumerate(graphs):
        where = f"topology_file {path!r}: graph {k}"
        if not isinstance(g, dict):
            raise ConfigError(f"{where} must be an object with name, tasks, edges")
        name, n, edges = g.get("name", f"graph-{k}"), g.get("tasks"), g.get("edges")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"{where} ({name!r}): 'tasks' must be an integer >= 1, got {n!r}")
        if not isinstance(edges, list):
            raise ConfigError(f"{where} ({name!r}): 'edges' must be a list of [i, j]")
        pairs = []
        for e in edges:
            if (not isinstance(e, (list, tuple)) or len(e) != 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) for v in e)):
                raise ConfigError(f"{where} ({name!r}): edge {e!r} must be a pair of integers [i, j]")
            i, j = e
            if not 0 <= i < j < n:
                raise ConfigError(f"{where} ({name!r}): edge [{i}, {j}] must satisfy 0 <= i < j < tasks "
                                  f"= {n} (the file's order is a topological order)")
            pairs.append((i, j))
        out.append(Graph(name=str(name), tasks=n, edges=tuple(sorted(set(pairs)))))
    return tuple(out)


def write_topology_file(path: str | os.PathLike, graphs: Sequence[Graph], **extra: Any) -> Path:
    """`graphs` as a topology file (SPEC format; `extra` keys go to the top level, which readers ignore),
    written atomically and compactly (one graph per line)."""
    from offload_jax import atomic  # noqa: PLC0415

    lines = [json.dumps({"name": g.name, "tasks": g.tasks, "edges": [list(e) for e in g.edges]})
             for g in graphs]
    head = json.dumps({"format": TOPOLOGY_FORMAT, **extra})[:-1]
    return atomic.write_text(path, head + ', "graphs": [\n' + ",\n".join(lines) + "\n]}\n")


def eligible_graphs(path: str, tasks: int, sha256: str | None = None) -> tuple[Graph, ...]:
    """The graphs of `path` with at most `tasks` sub-tasks; refuses a file whose sha256 differs from
    the recorded one, and a file without any eligible graph."""
    if sha256 is not None and file_sha256(path) != sha256:
        raise ConfigError(f"topology_file {path!r}: its sha256 differs from the recorded "
                          f"topology_file_sha256 {sha256[:12]}...: the file changed")
    graphs = tuple(g for g in read_topology_file(path) if g.tasks <= tasks)
    if not graphs:
        raise ConfigError(f"topology_file {path!r}: no graph has at most tasks={tasks} sub-tasks")
    return graphs


def resolve_path(cfg: DagConfig) -> DagConfig:
    """`topology_file` as an absolute path (a manifest records where the graphs came from)."""
    if cfg.topology_file is None:
        return cfg
    return dataclasses.replace(cfg, topology_file=os.path.abspath(cfg.topology_file))
