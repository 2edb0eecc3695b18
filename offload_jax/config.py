"""Configuration: frozen dataclasses for every knob, validated with clear errors.

`SystemConfig` holds exactly the `system` keys of SPEC.md (the manifest's
`system` section) with their defaults. It is hashable, so it can be a static
argument of jitted functions.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

RANGE_KEYS = (
    "cycles_range",
    "data_bits_range",
    "f_local_range",
    "f_cloud_range",
    "mean_snr_db_range",
    "backhaul_rate_range",
    "cloud_delay_range",
)
# Ranges sampled log-uniformly or used as rates/speeds must be strictly positive.
POSITIVE_RANGE_KEYS = (
    "cycles_range",
    "data_bits_range",
    "f_local_range",
    "f_cloud_range",
    "backhaul_rate_range",
)


MAX_SEED = 2**32 - 1  # jax.random.key keeps 32 bits of the seed: larger seeds would collide


class ConfigError(ValueError):
    """A configuration value is outside what is allowed; the message names the field."""


@dataclasses.dataclass(frozen=True)
class SystemConfig:
    """The edge system of SPEC.md. Units: cycles, bits, Hz, bit/s, seconds, dB."""

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

    def validate(self) -> SystemConfig:
        """Return self if every field is allowed, else raise ConfigError naming the field."""
        for name in ("tasks", "edge_cores", "subcarriers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        for name in RANGE_KEYS:
            value = getattr(self, name)
            if not (isinstance(value, tuple) and len(value) == 2):
                raise ConfigError(f"{name} must be a pair [low, high], got {value!r}")
            lo, hi = value
            if not all(_is_finite_number(v) for v in value):
                raise ConfigError(f"{name} must hold two finite numbers, got {value!r}")
            if lo > hi:
                raise ConfigError(f"{name} must satisfy low <= high, got [{lo}, {hi}]")
            if name in POSITIVE_RANGE_KEYS and lo <= 0:
                raise ConfigError(f"{name} must be > 0 (low and high), got [{lo}, {hi}]")
            if name == "cloud_delay_range" and lo < 0:
                raise ConfigError(f"{name} must be >= 0 seconds, got [{lo}, {hi}]")
        for name in ("edge_core_hz", "subcarrier_bandwidth", "downlink_factor"):
            value = getattr(self, name)
            if not _is_finite_number(value) or value <= 0:
                raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
        p = self.subcarrier_free_prob
        if not _is_finite_number(p) or not 0.0 <= p <= 1.0:
            raise ConfigError(f"subcarrier_free_prob must be in [0, 1], got {p!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with exactly the SPEC keys (ranges as lists)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SystemConfig:
        """Build and validate from a dict such as a manifest's `system` section."""
        unknown = sorted(set(d) - set(field_names()))
        if unknown:
            raise ConfigError(f"unknown system key(s) {unknown}; allowed: {list(field_names())}")
        kwargs = {k: _coerce(k, v) for k, v in d.items()}
        return cls(**kwargs).validate()

    def with_overrides(self, overrides: Mapping[str, Any]) -> SystemConfig:
        """Copy with some keys replaced (values may be strings as typed on a command line)."""
        merged = self.to_dict()
        for key, value in overrides.items():
            if key not in merged:
                raise ConfigError(
                    f"unknown system key {key!r}; allowed: {list(field_names())}"
                )
            merged[key] = value
        return SystemConfig.from_dict(merged)


def field_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(SystemConfig))


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """Parse `key=value` strings (ranges as `low,high`) from `--set`."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value (e.g. backhaul_rate_range=1e6,5e7), got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def _is_finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _coerce(name: str, value: Any) -> Any:
    """Turn JSON / command-line values into the field's type, with errors naming the field."""
    try:
        if name in RANGE_KEYS:
            if isinstance(value, str):
                value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
            if (not isinstance(value, (list, tuple)) or len(value) != 2
                    or any(isinstance(v, bool) for v in value)):
                raise ConfigError(f"{name} must be a pair low,high, got {value!r}")
            return (float(value[0]), float(value[1]))
        if name in ("tasks", "edge_cores", "subcarriers"):
            if isinstance(value, str):
                value = float(value)
            if isinstance(value, bool) or float(value) != int(value):
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
            return int(value)
        if isinstance(value, bool):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        return float(value)
    except (TypeError, ValueError, OverflowError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{name}: cannot read {value!r} as a number ({exc})") from None


ACTIVATIONS = ("relu", "gelu", "silu", "tanh")
NORMS = ("none", "layer")
# What a network reads (features.py): "all" features, or only the logs of the state's "fields"
# (no stage-cost features: one cheap XLA kernel at batch 1 instead of three, the network learns the costs).
INPUTS = ("all", "fields")
# Network families (models.py): "mlp" on the flat features; for dag only, "graph", a transformer over
# the sub-task slots with adjacency-aware attention, "gnn", message passing along the task graph
# followed by an MLP on the slots' embeddings and the flat features, and "slots", message passing and
# a per-slot readout with every weight shared by the slots.
ARCHS = ("mlp", "graph", "gnn", "slots")
# What a run's CE term (and a conditional network's given decisions) imitate on each training state:
# "labels", the dataset's exact labels; for a distilled run also "teacher", the teacher's own
# placements, or "teacher_ls", those improved by the scenario's local search (`train.targets`).
TARGETS = ("labels", "teacher", "teacher_ls")
# How training picks the decisions a conditional network (decode_steps > 1) is given (`train.py`).
PARTIALS = ("random", "confident")


# Settings added after runs were first recorded, at the default that changes nothing: left out of
# to_dict there, so the record (and identity) of a run made before they existed stays what it was and
# the run still resumes, counts as finished and loads (from_dict gives them their defaults).
_LATER_MODEL_SETTINGS = {"decode_steps": 1, "earlier_mean": False}
_LATER_TRAIN_SETTINGS = {"regret_weight": 0.0, "targets": "labels", "objective_states": 0,
                         "partials": "random"}


def _without_later_defaults(d: dict[str, Any], later: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if not (k in later and v == later[k])}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A network that maps features (the `inputs` set of features.py) to logits (*decision_shape, 3).

    arch "mlp": layers of the widths `hidden`; arch "graph": len(hidden) transformer blocks of width
    hidden[0] (all equal) with `heads` attention heads; arch "gnn": `graph_layers` rounds of message
    passing at width `graph_width`, then MLP layers of the widths `hidden`; arch "slots": one network
    shared by the sub-task slots, `graph_layers` rounds of message passing at width `graph_width` and a
    per-slot readout (`hidden` unused, `norm` "none").
    `decode_steps` > 1 (mlp, gnn and slots): the network also reads a partial placement (one-hot site of each
    decision already taken, zeros for the others) and decides in that many passes, each taking the
    most confident of the open decisions (`decoding.decide`); trained on labels with random subsets
    given (`train.py`). 1: one pass on the features alone.
    """

    hidden: tuple[int, ...] = (384, 384, 384, 384)
    activation: str = "gelu"
    norm: str = "layer"
    inputs: str = "all"
    arch: str = "mlp"
    heads: int = 4
    graph_width: int = 48
    graph_layers: int = 3
    decode_steps: int = 1
    # arch "slots": each round also reads the mean over the slots dispatched before the slot
    # (`export_runtime.dag_earlier_means`); False: predecessors', successors' and every slot's means only
    earlier_mean: bool = False

    def validate(self) -> ModelConfig:
        if not isinstance(self.hidden, tuple) or not all(
            isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in self.hidden
        ):
            raise ConfigError(f"hidden must be a tuple of integers >= 1, got {self.hidden!r}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.norm not in NORMS:
            raise ConfigError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.inputs not in INPUTS:
            raise ConfigError(f"inputs must be one of {INPUTS}, got {self.inputs!r}")
        if self.arch not in ARCHS:
            raise ConfigError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        for name in ("heads", "graph_width", "graph_layers", "decode_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if self.arch == "graph":
            if len(set(self.hidden)) != 1 or self.hidden[0] % self.heads:
                raise ConfigError(f"hidden of a graph model must be equal widths divisible by heads="
                                  f"{self.heads}, got {self.hidden!r}")
        if self.arch == "slots" and self.norm != "none":
            raise ConfigError(f"norm must be 'none' for arch 'slots' (it has no normalization layers), "
                              f"got {self.norm!r}")
        if self.arch != "mlp" and self.inputs != "all":
            raise ConfigError(f"a {self.arch} model reads all features (inputs 'all')")
        if not isinstance(self.earlier_mean, bool):
            raise ConfigError(f"earlier_mean must be true or false, got {self.earlier_mean!r}")
        if self.earlier_mean and self.arch != "slots":
            raise ConfigError(f"earlier_mean is a setting of arch 'slots', got arch {self.arch!r}")
        if self.arch == "graph" and self.decode_steps != 1:
            raise ConfigError(f"decode_steps must be 1 for arch 'graph' (mlp, gnn and slots decode in "
                              f"steps), got {self.decode_steps}")
        return self

    def to_dict(self) -> dict[str, Any]:
        out = _without_later_defaults(dataclasses.asdict(self), _LATER_MODEL_SETTINGS)
        out["hidden"] = list(self.hidden)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelConfig:
        """Runs saved before `inputs` (or `arch`, `heads`) existed have their defaults."""
        allowed = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - allowed)
        if unknown:
            raise ConfigError(f"unknown model key(s) {unknown}; allowed: {sorted(allowed)}")
        d = dict(d)
        if "hidden" in d:
            d["hidden"] = tuple(d["hidden"])
        return cls(**d).validate()


# Defaults of the paper's two networks: a large teacher (~0.5M parameters at T=10)
# and a student with at most 5% of its parameters (13,150 = 2.6% at T=10). The student is built
# for batch-1 decision time: it reads only the logs of the state's fields (inputs="fields": one XLA
# kernel; the stage-cost features take three and a gather) and is ReLU without LayerNorm: 4 dots and
# 5 elementwise kernels in XLA, one matmul and one maximum per layer in the numpy export. Distilled
# for 20k steps on 1M states it places within 1.042 of the optimum (reading all features: 1.039, and
# ~15% slower per decision); 4x64 on the fields reaches 1.031 at about 1.1x its decision time
# (benchmarks/RESULTS.md, "Learning", "Decision latency"). Reading fields only, it needs more steps
# than a student on all features to learn the costs itself: the quickstart gives it 8000.
TEACHER_MODEL = ModelConfig(hidden=(384, 384, 384, 384), activation="gelu", norm="layer")
STUDENT_MODEL = ModelConfig(hidden=(64, 64, 64), activation="relu", norm="none", inputs="fields")
# DROO's DNN: the same size as the previous default student (23,390 parameters at T=10). GELU +
# LayerNorm matters to DROO's online training: on the quickstart's data it reached 1.138 of the
# optimum with this net, 1.358 with 3x64 ReLU + LayerNorm and 1.594 with 3x64 ReLU (the student's
# net, which trains well offline but not from DROO's replay memory).
DROO_MODEL = ModelConfig(hidden=(64, 64, 64, 64), activation="gelu", norm="layer")
# dag (twentieth dag session): both networks are SlotNetworks (arch "slots": message passing over the
# task graph and a per-slot readout, every weight shared by the slots) and decide in passes
# (`decoding.py`: each pass reads the decisions already taken; training does not depend on the count).
# The teacher is 128 x 3 in 5 passes (201,859 parameters at T = 10), the student 32 x 2 in 4 (9,475:
# 4.7% of the teacher, within the 5%). On the dag quickstart the teacher reached 1.090 of the
# optimum on the layered evaluation states in 2,000 steps (~160 s on the 2-core CPU), the student
# distilled from it 1.120 / 1.113 / 1.111 / 1.104 in 3 / 4 / 5 / 10 passes (4: the fewest within the
# issue's 1.12 with room; a pass costs ~5-10 us at batch 1, and 5 passes timed level with greedy in
# the quickstart's run): benchmarks/RESULTS.md, "Both networks shared by the slots".
# Those counts are one user's: `default_model` keeps what a pass fixes and adds passes with the users.
# Until then the teacher was message passing then a flat 3 x 512 MLP (arch "gnn", graph width 48, 3
# rounds, 10 passes: 939,198 parameters, 1.140 on the same states) and the student slots 64 x 2 in 3
# passes (35,331 parameters, 1.116): the student was better than its teacher, and a slots teacher of
# >= 707k parameters (the 5% rule for that student) costs ~4x the 128 x 3's compute a step, which the
# quickstart's 15 minutes do not hold (slots 256 x 3, 796,931 parameters, reached 1.046 on 1M layered
# states in 43 min on this CPU: experiments/results/long_run_1M, third round). A smaller student under
# a teacher of its own family that fits the budget is the trade this default makes.
# The MLP student before the slots one (until the thirteenth dag session; 45,438 parameters at T = 10),
# kept for the record: it spends its parameters per slot position (1.161 on the layered evaluation,
# 1.281 / 1.355 on the published out- and in-tree, where the first slots student reached 1.109 and
# 1.139 / 1.163 in a quarter of the steps).
DAG_MLP_STUDENT_MODEL = ModelConfig(hidden=(96, 96, 96), activation="relu", norm="none", decode_steps=5)
DAG_TEACHER_MODEL = ModelConfig(hidden=(), activation="gelu", norm="none", arch="slots", graph_width=128,
                                graph_layers=3, decode_steps=5)
# The student decides in 5 passes since the twenty-fourth dag session (4 before): its batch-1 program
# got ~2x faster (fewer kernel calls: `decoding.most_confident`, `SlotNetwork.decode`), and the fifth
# pass gave 0.001-0.009 on each of three quickstart runs (benchmarks/RESULTS.md, "Fewer kernel calls").
DAG_STUDENT_MODEL = ModelConfig(hidden=(), activation="relu", norm="none", arch="slots", graph_width=32,
                                graph_layers=2, decode_steps=5)
DEFAULT_MODELS = {("chain", "teacher"): TEACHER_MODEL, ("chain", "student"): STUDENT_MODEL,
                  ("dag", "teacher"): DAG_TEACHER_MODEL, ("dag", "student"): DAG_STUDENT_MODEL}


def default_model(scenario: str, role: str, decision_shape: tuple[int, ...]) -> ModelConfig:
    """The scenario's default network for `role` ("teacher" or "student", DEFAULT_MODELS) at these
    decisions ((T,) for the chain, (U, T) for the dag).

    A network that decides in passes keeps what one of its passes fixes for one user's T decisions,
    ceil(T / decode_steps), whatever the number of users, and takes as many passes as that needs for
    all U x T: its passes grow with the users (three users x 6: the student in 9 passes, the teacher in
    9; one user: the count as given, less any pass that would have nothing left to fix). With users
    sharing the edge the student's 4 passes (its default then) had fixed 5 of three users' 18 decisions
    at a time, and local search was ahead of the student (1.163 against 1.173); with this rule the
    student is ahead (three users x 6, 9 passes: 1.155 at 0.18x local search's time; two users x 5, 5
    passes: 1.120 against 1.128 at 0.51x), and the teacher is better (1.111 -> 1.104, 1.078 -> 1.068):
    benchmarks/RESULTS.md, "Passes that grow with the users". (The student's default is 5 passes now:
    two users x 5 take 10.)
    """
    if (scenario, role) not in DEFAULT_MODELS:
        allowed = sorted({s for s, _ in DEFAULT_MODELS}), sorted({r for _, r in DEFAULT_MODELS})
        raise ConfigError(f"no default model for scenario {scenario!r} and role {role!r}: scenario one of "
                          f"{allowed[0]}, role one of {allowed[1]}")
    cfg = DEFAULT_MODELS[scenario, role]
    if cfg.decode_steps == 1:  # one pass on the features alone, at any size
        return cfg
    tasks, decisions = decision_shape[-1], math.prod(decision_shape)
    per_pass = -(-tasks // cfg.decode_steps)
    return dataclasses.replace(cfg, decode_steps=-(-decisions // per_pass))


# --- training (losses, optimizer, distillation) ---


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run: Optax AdamW with warmup + cosine decay and global-norm clipping.

    The loss is `alpha * CE(targets) + (1 - alpha) * temperature^2 * KL(teacher || student)`
    (the KD term only when a teacher is given), plus `latency_weight` times the expected
    latency of the student's placement distribution over the optimal latency. The targets are the
    dataset's labels, or with a teacher its placements (`targets`, `train.targets`).
    Step k's batch is a pure function of (seed, k), so a resumed run repeats an uninterrupted one.
    """

    steps: int = 20_000
    batch_size: int = 1024
    learning_rate: float = 2e-3  # peak, reached after the warmup
    warmup_frac: float = 0.05  # share of `steps` spent warming up linearly from 0
    end_lr_frac: float = 0.01  # the cosine decays to learning_rate * end_lr_frac
    weight_decay: float = 1e-4  # AdamW, on kernels only
    clip_norm: float = 1.0  # global gradient norm
    seed: int = 0
    alpha: float = 1.0  # 1 = labels only
    temperature: float = 1.0
    latency_weight: float = 0.0
    regret_weight: float = 0.0  # weight of the labels' single-change regret term (`losses.regret_loss`)
    eval_every: int = 1000  # steps between held-out evaluations (0 = only at the end)
    targets: str = "labels"  # what the CE term imitates (TARGETS; not "labels": needs a teacher)
    # The sampled objective term (dag) scores this many states of each batch (0: all of them): an
    # unbiased estimate of the same term at a fraction of its cost, which is most of a small network's step.
    objective_states: int = 0
    # A conditional network's (decode_steps > 1) given decisions on each training state: a share of its
    # real decisions (uniform in [0, 1) per state) with their targets' sites, the share drawn at random
    # ("random") or the share the network, given nothing, is most confident of ("confident": the
    # subsets its decoding passes fix first; one forward pass more a step).
    partials: str = "random"

    def validate(self) -> TrainConfig:
        for name in ("steps", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("seed", "eval_every", "objective_states"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
        for name in ("learning_rate", "temperature", "clip_norm"):
            value = getattr(self, name)
            if not _is_finite_number(value) or value <= 0:
                raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
        for name in ("weight_decay", "latency_weight", "regret_weight"):
            value = getattr(self, name)
            if not _is_finite_number(value) or value < 0:
                raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
        for name in ("alpha", "warmup_frac", "end_lr_frac"):
            value = getattr(self, name)
            if not _is_finite_number(value) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {value!r}")
        if self.partials not in PARTIALS:
            raise ConfigError(f"partials must be one of {list(PARTIALS)}, got {self.partials!r}")
        if self.targets not in TARGETS:
            raise ConfigError(f"targets must be one of {list(TARGETS)}, got {self.targets!r}")
        if self.objective_states > self.batch_size:
            raise ConfigError(f"objective_states ({self.objective_states}) must be <= batch_size "
                              f"({self.batch_size}); 0 scores every state of the batch")
        return self

    def to_dict(self) -> dict[str, Any]:
        return _without_later_defaults(dataclasses.asdict(self), _LATER_TRAIN_SETTINGS)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(allowed))
        if unknown:
            raise ConfigError(f"unknown training key(s) {unknown}; allowed: {allowed}")
        return cls(**d).validate()
