"""Numpy-only decision function for end devices that cannot carry JAX.

`offload-jax export` writes a student's weights and feature statistics into one
`.npz`; this module loads it and decides placements from the packed state vector
(`offload_jax.scenarios.chain.system.pack` layout: the SPEC fields in order, flattened to float32).

Importing this module imports numpy only (tests check that no JAX is loaded).
The features are defined here, once, as index arrays over the packed vector
(`feature_recipe`), which `features.raw_features` applies with jax.numpy; their stage
costs restate `cost.stage_costs` (tests/test_features.py keeps them equal).
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

import numpy as np

FORMAT = "offload-jax-student/1"
# What the features of each scenario are (recorded in checkpoints and exported files; a file whose
# version differs from the one this module computes is refused).
FEATURES_VERSION = "logs+stage-costs/1"
DAG_FEATURES_VERSION = "dag-recipe/2"  # 2: log(1 + bits) of every edge
COST_EPS = np.float32(1e-6)  # seconds, added to every stage cost before its log (some are exactly 0)


def _gelu_cdf(x):  # GELU(x) = x * this; the tanh approximation, jax.nn.gelu's default
    return 0.5 * (1.0 + np.tanh(0.7978845608028654 * (x + 0.044715 * x**3)))


def _sigmoid(x):  # SiLU(x) = x * this
    return 1.0 / (1.0 + np.exp(-x))


# Beyond +-knee, x * cdf(x) is 0 (left) or x (right) to within 1e-9.
_SMOOTH = {"gelu": (_gelu_cdf, 8.0), "silu": (_sigmoid, 24.0)}
_STEP = 1e-3  # table spacing where the activations curve: linear interpolation is within ~1e-7


def _activation(name: str, bound: float | None):
    """The activation as numpy calls on a fresh float64 array (in place where possible).

    At batch 1 a numpy call costs about a microsecond whatever its size, so the smooth
    activations are table lookups (np.interp, within ~1e-7 of the formula, about float32
    roundings): GELU and SiLU are one lookup of f(x) when every input lies in [-bound, bound]
    (after a LayerNorm), else x * (one lookup of cdf(x)); tanh is one lookup.
    """
    if name == "relu":
        return lambda x: np.maximum(x, 0.0, out=x)
    if name == "tanh":
        grid = np.arange(-10.0, 10.0 + _STEP / 2, _STEP)
        values = np.tanh(grid)
        return lambda x: np.interp(x, grid, values, -1.0, 1.0)
    cdf, knee = _SMOOTH[name]
    grid = np.arange(-knee, knee + _STEP / 2, _STEP)
    if bound is None:
        values = cdf(grid)
        return lambda x: np.multiply(x, np.interp(x, grid, values, 0.0, 1.0), out=x)
    grid = np.concatenate([grid, np.arange(knee + 1.0, max(bound, knee) + 1.0)])  # x * cdf(x) = x there
    values = grid * cdf(grid)
    return lambda x: np.interp(x, grid, values, 0.0, None)


# A decision's confidence rank offset by whether it is real (`_passes_one`): padding is closed.
_CLOSED = np.array([np.inf, 0.0], np.float32)


class _MlpBuffers(NamedTuple):
    """The preallocated arrays of an MLP student's single-state path (`_decide_one`), views included."""
    factors: np.ndarray  # (2 R, F) the stage-cost terms' factors: numerators, then denominators
    numerators: np.ndarray  # factors[:R]
    denominators: np.ndarray  # factors[R:]
    quotients: np.ndarray  # (R, F)
    z: np.ndarray  # (F,) the features
    logs: np.ndarray  # z[:the features read as logs]
    hidden: list  # each layer's output
    out: np.ndarray  # the head's output (decisions * 3,)
    out3: np.ndarray  # out as (decisions, 3)


class _SlotsBuffers(NamedTuple):
    """The preallocated arrays of a SlotNetwork's single-state path (`_slots_one`), views included."""
    tokens: np.ndarray  # (U*T, K) the slot tokens, normalized
    pre: np.ndarray  # (U*T, width) the slots' embeddings before the partial placement
    mix: np.ndarray  # M (U*T, K U*T + 1) of `_init_slots`
    first: np.ndarray  # (U*T, 4, width) each slot's first pre-activation for each given site
    h: np.ndarray  # (U*T, width)
    rounds: list  # per round: [h W'; b] (K U*T + 1, width), its h W' as (U*T, K width), the round's output
    logits: np.ndarray  # (U*T, 3)


# The scalars whose logs are features, in feature order (features.raw_features).
_SPEED_AND_RATE_FIELDS = ("f_local", "f_edge", "f_cloud", "rate_up", "rate_down", "backhaul_rate")
# K[a, b] of SPEC "Moving data" as the inverse rates it adds up (local<->cloud: wireless hop + backhaul).
_K_TERMS = {(0, 1): ("rate_up",), (0, 2): ("rate_up", "backhaul_rate"), (1, 0): ("rate_down",),
            (1, 2): ("backhaul_rate",), (2, 0): ("backhaul_rate", "rate_down"), (2, 1): ("backhaul_rate",)}


def packed_slices(tasks: int, subcarriers: int) -> dict[str, slice]:
    """Where each SPEC field lies in the packed vector of `system.pack` (fields in SPEC order)."""
    t, n = tasks, subcarriers
    sizes = [("cycles", t), ("data_bits", t + 1), ("f_local", 1), ("edge_cores_free", 1),
             ("f_edge", 1), ("f_cloud", 1), ("snr", n), ("subcarrier_free", n), ("rate_up", 1),
             ("rate_down", 1), ("backhaul_rate", 1), ("cloud_delay", 1)]
    slices, start = {}, 0
    for name, size in sizes:
        slices[name] = slice(start, start + size)
        start += size
    return slices


# The pool a feature recipe indexes: the packed vector, then these constants (0, 1, COST_EPS).
POOL_CONSTANTS = (0.0, 1.0, COST_EPS)


def field_sources(tasks: int, subcarriers: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where the first features (the fields, before the stage costs) come from in the packed vector:
    (logs, plain, log1p) indices. The features are log(packed[logs]), packed[plain[0]] (cloud_delay),
    log(packed[log1p] + 1) (snr), packed[plain[1:]] (subcarrier_free), in this order."""
    s = packed_slices(tasks, subcarriers)

    def field(name: str) -> list[int]:
        return list(range(s[name].start, s[name].stop))

    logs = field("cycles") + field("data_bits") + [s[f].start for f in _SPEED_AND_RATE_FIELDS]
    plain = [s["cloud_delay"].start] + field("subcarrier_free")
    return np.array(logs), np.array(plain), np.array(field("snr"))


def _recipe_arrays(terms: list, zero: int, one: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Recipe terms [(quotients [(num index, den index), ...], logged), ...] as (num, den, logged) arrays:
    feature j = [log] sum_r pool[num[r, j]] / pool[den[r, j]], short sums padded with 0 / 1."""
    rows = max(len(q) for q, _ in terms)
    num = np.full((rows, len(terms)), zero)
    den = np.full((rows, len(terms)), one)
    for j, (quotients, _) in enumerate(terms):
        for r, (a, b) in enumerate(quotients):
            num[r, j], den[r, j] = a, b
    return num, den, np.array([logged for _, logged in terms])


def feature_recipe(tasks: int, subcarriers: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How `features.raw_features` is computed from a packed state vector: the one home of the features.

    With pool = (packed vector, 0, 1, COST_EPS), feature j is
        s_j = sum_r pool[num[r, j]] / pool[den[r, j]]   (r = 0, 1, ... in order),
    then log(s_j) where logged[j]. The log of a field x is log(x / 1 + 0 / 1 + ...); log1p(snr) is
    log(snr / 1 + 1 / 1); a stage cost entry of `cost.stage_costs` is data_bits[t] / rate (one or
    two rates, as K) + cloud_delay (or nothing, as F) + cycles[t] / speed + COST_EPS. Not logged:
    cloud_delay and subcarrier_free. Returns num, den (R, F) int64 indices into the pool and
    logged (F,) bool, in the order of the features:
    cycles, data_bits, f_local, f_edge, f_cloud, rate_up, rate_down, backhaul_rate (logs),
    cloud_delay, log1p(snr), subcarrier_free, log stage costs first[3], step[T-1, 3, 3], last[3].
    """
    s, t = packed_slices(tasks, subcarriers), tasks
    p = s["cloud_delay"].stop
    zero, one, eps = p, p + 1, p + 2
    delay, bits0, cycles0 = s["cloud_delay"].start, s["data_bits"].start, s["cycles"].start
    speed_of_site = ("f_local", "f_edge", "f_cloud")

    def cost(bits_t: int, a: int, b: int, task: int | None) -> list[tuple[int, int]]:
        """move(data_bits[bits_t], a -> b) [+ cycles[task] / f[b]] + COST_EPS, as quotients."""
        out = [(bits0 + bits_t, s[rate].start) for rate in _K_TERMS.get((a, b), ())]
        out += [(delay, one)] if (a == 2) != (b == 2) else []  # F[a, b] = tau across the backhaul
        out += [(cycles0 + task, s[speed_of_site[b]].start)] if task is not None else []
        return out + [(eps, one)]

    logs, plain, log1p = field_sources(tasks, subcarriers)
    terms = [([(int(i), one)], True) for i in logs]
    terms += [([(int(plain[0]), one)], False)]  # cloud_delay
    terms += [([(int(i), one), (one, one)], True) for i in log1p]  # log(snr + 1)
    terms += [([(int(i), one)], False) for i in plain[1:]]  # subcarrier_free
    terms += [(cost(0, 0, b, 0), True) for b in range(3)]  # first[b]: data_bits[0] leaves the device
    terms += [(cost(i, a, b, i), True)  # step[i - 1, a, b]
              for i in range(1, t) for a in range(3) for b in range(3)]
    terms += [(cost(t, a, 0, None), True) for a in range(3)]  # last[a]: the result returns to the device
    return _recipe_arrays(terms, zero, one)


# --------------------------------------------------------------------------- scenario dag

# The per-slot features of a dag state, in order (DAG_SLOT_FEATURES per slot; `dag_feature_recipe`).
DAG_SLOT_FEATURES = ("log cycles", "log compute local", "log compute edge", "log compute cloud",
                     "log in_bits", "log uplink time of in_bits", "log out_bits",
                     "log downlink time of out_bits", "log bits from predecessors", "log bits to successors",
                     "predecessors", "successors")
DAG_USER_FEATURES = ("log f_local", "log rate_up", "log rate_down")
DAG_SHARED_FEATURES = ("log f_edge", "log f_cloud", "log backhaul_rate", "cloud_delay", "edge_cores_free")


def dag_packed_slices(users: int, tasks: int, subcarriers: int) -> dict[str, slice]:
    """Where each SPEC field of a dag state lies in its packed vector (fields in SPEC order, flattened)."""
    u, t, n = users, tasks, subcarriers
    sizes = [("cycles", u * t), ("adj", u * t * t), ("edge_bits", u * t * t), ("in_bits", u * t),
             ("out_bits", u * t), ("f_local", u), ("edge_cores_free", 1), ("f_edge", 1), ("f_cloud", 1),
             ("snr", u * n), ("subcarrier_free", u * n), ("rate_up", u), ("rate_down", u),
             ("backhaul_rate", 1), ("cloud_delay", 1)]
    slices, start = {}, 0
    for name, size in sizes:
        slices[name] = slice(start, start + size)
        start += size
    return slices


def dag_feature_layout(users: int, tasks: int) -> dict[str, tuple[int, int]]:
    """(start, stop) of each block of the dag feature vector: slot features (U*T x per-slot, slot-major,
    user-major), the adjacency's upper triangle (per user, row-major), log(1 + bits) of every edge on that
    triangle (0 where no edge; same order), user features, shared features."""
    blocks = [("slots", users * tasks * len(DAG_SLOT_FEATURES)),
              ("adjacency", users * tasks * (tasks - 1) // 2),
              ("edge_bits", users * tasks * (tasks - 1) // 2),
              ("users", users * len(DAG_USER_FEATURES)), ("shared", len(DAG_SHARED_FEATURES))]
    out, start = {}, 0
    for name, size in blocks:
        out[name] = (start, start + size)
        start += size
    return out


def dag_adjacency_pairs(tasks: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols): the sub-task pairs i < j of one user's block of the adjacency and edge-bits
    features, in their order (`dag_feature_layout`: the upper triangle, row-major)."""
    return np.triu_indices(tasks, 1)


def slot_round_blocks(earlier_mean: bool) -> int:
    """The blocks of a SlotNetwork round's input: h, the means over the predecessors, the successors and
    every slot[, and over the slots dispatched before (`dag_earlier_means`)]."""
    return 5 if earlier_mean else 4


def slot_constant_blocks(users: int, tasks: int, earlier_mean: bool) -> dict[int, np.ndarray]:
    """A SlotNetwork round's aggregation blocks that do not depend on the state, (U*T, U*T) float32 by
    block index (of `slot_round_blocks`): 0 the identity, 3 every slot's mean, 4 the mean over the slots
    dispatched before (`earlier_mean`). Blocks 1 and 2, the means over the predecessors and over the
    successors, are the state's graph. `models.SlotNetwork.encode` and the numpy runtime read these."""
    slots = users * tasks
    blocks = {0: np.eye(slots, dtype=np.float32), 3: np.full((slots, slots), 1.0 / slots, np.float32)}
    if earlier_mean:
        blocks[4] = dag_earlier_means(users, tasks)
    return blocks


def dag_earlier_means(users: int, tasks: int) -> np.ndarray:
    """(U*T, U*T) float32: row i averages the slots dispatched before slot i (the schedule's order
    (t=0, u=0), (t=0, u=1), ..., (t=1, u=0), ...: SPEC, scenario dag); slots user-major (slot u*T + t);
    the first slot's row is zeros. A slot's queueing on the processors and links is set by the slots
    dispatched before it (no use fills an earlier gap), which this mean shows it
    (`ModelConfig.earlier_mean`)."""
    order = np.array([t * users + u for u in range(users) for t in range(tasks)])  # dispatch rank per slot
    before = (order[None, :] < order[:, None]).astype(np.float32)  # [i, j]: j dispatched before i
    return before / np.maximum(before.sum(axis=1, keepdims=True), 1.0)


def dag_token_indices(users: int, tasks: int) -> np.ndarray:
    """(U*T, K) int: where each slot's token lies in the dag feature vector (`dag_feature_layout`): its
    slot features, its user's, then the shared ones (K = DAG_SLOT + DAG_USER + DAG_SHARED features);
    slots user-major. The networks' tokens (`models._dag_tokens`) and the numpy runtime read these."""
    layout = dag_feature_layout(users, tasks)
    k_slot, k_user = len(DAG_SLOT_FEATURES), len(DAG_USER_FEATURES)
    s0, u0, g0 = layout["slots"][0], layout["users"][0], layout["shared"][0]
    return np.array([[s0 + (v * tasks + i) * k_slot + k for k in range(k_slot)]
                     + [u0 + v * k_user + k for k in range(k_user)]
                     + list(range(g0, g0 + len(DAG_SHARED_FEATURES)))
                     for v in range(users) for i in range(tasks)])


def dag_feature_recipe(users: int, tasks: int, subcarriers: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The dag features as a recipe over the packed vector, like `feature_recipe` (the same pool: the
    packed vector, then 0, 1, COST_EPS): feature j = [log] sum_r pool[num[r, j]] / pool[den[r, j]].

    Sizes and times enter as logs with an offset that keeps an absent one finite (bits + 1, seconds +
    COST_EPS; a padding slot's cycles are 0); counts and the adjacency as they are. See
    DAG_SLOT_FEATURES, DAG_USER_FEATURES, DAG_SHARED_FEATURES and `dag_feature_layout` for the order.
    """
    s = dag_packed_slices(users, tasks, subcarriers)
    p = s["cloud_delay"].stop
    zero, one, eps = p, p + 1, p + 2
    t_n = tasks

    def at(name: str, *index: int) -> int:
        shape = {"cycles": (users, t_n), "adj": (users, t_n, t_n), "edge_bits": (users, t_n, t_n),
                 "in_bits": (users, t_n), "out_bits": (users, t_n)}.get(name, (users,))
        flat = int(np.ravel_multi_index(index, shape)) if index else 0
        return s[name].start + flat

    speed = (("f_local", True), ("f_edge", False), ("f_cloud", False))  # (field, per user)
    terms: list[tuple[list[tuple[int, int]], bool]] = []
    for u in range(users):
        for t in range(t_n):
            terms.append(([(at("cycles", u, t), one), (one, one)], True))
            for field, per_user in speed:
                terms.append(([(at("cycles", u, t), at(field, u) if per_user else s[field].start),
                               (eps, one)], True))
            terms.append(([(at("in_bits", u, t), one), (one, one)], True))
            terms.append(([(at("in_bits", u, t), at("rate_up", u)), (eps, one)], True))
            terms.append(([(at("out_bits", u, t), one), (one, one)], True))
            terms.append(([(at("out_bits", u, t), at("rate_down", u)), (eps, one)], True))
            terms.append(([(at("edge_bits", u, i, t), one) for i in range(t)] + [(one, one)], True))
            terms.append(([(at("edge_bits", u, t, j), one) for j in range(t + 1, t_n)] + [(one, one)], True))
            terms.append(([(at("adj", u, i, t), one) for i in range(t)] or [(zero, one)], False))
            terms.append(([(at("adj", u, t, j), one) for j in range(t + 1, t_n)] or [(zero, one)], False))
    pairs = list(zip(*dag_adjacency_pairs(t_n), strict=True))
    for u in range(users):
        terms += [([(at("adj", u, i, j), one)], False) for i, j in pairs]
    for u in range(users):
        terms += [([(at("edge_bits", u, i, j), one), (one, one)], True) for i, j in pairs]
    for u in range(users):
        terms += [([(at(field, u), one)], True) for field in ("f_local", "rate_up", "rate_down")]
    terms += [([(s["f_edge"].start, one)], True), ([(s["f_cloud"].start, one)], True),
              ([(s["backhaul_rate"].start, one)], True), ([(s["cloud_delay"].start, one)], False),
              ([(s["edge_cores_free"].start, one)], False)]
    return _recipe_arrays(terms, zero, one)


def dag_raw_columns(users: int, tasks: int) -> np.ndarray:
    """bool (F,): the dag features that are 0/1 (the adjacency): a network reads them unnormalized."""
    layout = dag_feature_layout(users, tasks)
    out = np.zeros(layout["shared"][1], bool)
    out[slice(*layout["adjacency"])] = True
    return out


class StudentPolicy:
    """Decides placements from packed state vectors with numpy only.

    Built for batch-1 latency, where every numpy call costs about a microsecond whatever its
    size: the features are one gather, one division, one sum and one log over index arrays
    built at load time (`_feature_recipe`); the feature normalization, the features' order,
    the first bias and LayerNorm's mean subtraction are folded into the kernels (without
    LayerNorm every bias is: `_fold_biases`); smooth activations are one table lookup.
    Features in float32 (as the JAX student); the network in float32 without LayerNorm,
    in float64 with it. Chain students decide (T,) placements, dag students (U, T), with the
    padding slots (cycles 0) on 0 as the JAX policies do.
    Any leading batch shape: (P,) -> decision, (n, P) -> (n, *decision).
    """

    def __init__(self, path: str | os.PathLike, decode_steps: int | None = None):
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(bytes(arrays.pop("meta")).decode())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: not an exported student (format {meta.get('format')!r}, "
                             f"expected {FORMAT!r})")
        self.meta = meta
        self.scenario = meta.get("scenario", "chain")  # files written before dag existed: chain
        computed = DAG_FEATURES_VERSION if self.scenario == "dag" else FEATURES_VERSION
        if meta.get("features", computed) != computed:
            raise ValueError(f"{path}: exported with features {meta['features']!r}, this runtime computes "
                             f"{computed!r}: export a run trained with this version of offload_jax")
        self.tasks = int(meta["tasks"])
        self.users = int(meta.get("users", 1))
        self.subcarriers = int(meta["subcarriers"])
        self.decision_shape = (self.users, self.tasks) if self.scenario == "dag" else (self.tasks,)
        self._decisions = int(np.prod(self.decision_shape))
        self.layer_norm = meta["norm"] == "layer"
        self.layer_norm_eps = float(meta.get("layer_norm_eps", 1e-6))
        self.slices = (dag_packed_slices(self.users, self.tasks, self.subcarriers) if self.scenario == "dag"
                       else packed_slices(self.tasks, self.subcarriers))
        self.packed_size = self.slices["cloud_delay"].stop
        self._feature_recipe(meta.get("num_inputs"))  # files written before it: every feature
        self.mean = arrays["feature_mean"][:self.num_features].astype(np.float32)
        self.std = arrays["feature_std"][:self.num_features].astype(np.float32)
        self.arch = meta.get("arch", "mlp")  # files written before other students existed: an MLP
        if self.arch == "slots":
            self._init_slots(arrays, decode_steps)
            return
        # The network in float64, with every affine map folded at load time:
        # layer 0: (raw - mean) / std @ W + b == z @ [(W / std) in z's row order; b - (mean / std) @ W]
        # (z ends with a constant 1); LayerNorm's mean subtraction is linear, so it is folded into the
        # kernel and bias before it (columns minus their mean): the layer outputs x - mean(x) directly.
        depth = int(meta["depth"])
        k0, b0 = arrays["kernel_0"].astype(np.float64), arrays["bias_0"].astype(np.float64)
        mean, std = self.mean.astype(np.float64), self.std.astype(np.float64)
        folded_bias = (b0 - (mean / std) @ k0)[None]
        self.kernels = [np.concatenate([(k0 / std[:, None])[self._z_of_feature], folded_bias])]
        self.kernels += [arrays[f"kernel_{i}"].astype(np.float64) for i in range(1, depth)]
        self.biases = [None] + [arrays[f"bias_{i}"].astype(np.float64) for i in range(1, depth)]
        if self.layer_norm:
            self.kernels = [k - k.mean(axis=1, keepdims=True) for k in self.kernels]
            self.biases = [None] + [b - b.mean() for b in self.biases[1:]]
            self.scales = [arrays[f"scale_{i}"].astype(np.float64) for i in range(depth)]
            self.shifts = [arrays[f"shift_{i}"].astype(np.float64) for i in range(depth)]
            # After LayerNorm |x_j| < sqrt(width), so the activation's input is bounded.
            bound = max(float(np.max(np.abs(g) * np.sqrt(g.size) + np.abs(b)))
                        for g, b in zip(self.scales, self.shifts, strict=True))
        self.activation = _activation(meta["activation"], 1.01 * bound + 1.0 if self.layer_norm else None)
        self.head_kernel = arrays["head_kernel"].astype(np.float64)
        self.head_bias = arrays["head_bias"].astype(np.float64)
        # A student that decodes in steps (`decoding.decide`): the first layer's rows for the partial
        # placement (centered as the other rows with LayerNorm).
        trained = int(meta.get("decode_steps", 1))
        self._set_decode_steps(trained, decode_steps)
        self.partial_kernel = None
        if trained > 1:
            kp = arrays["partial_kernel"].astype(np.float64)
            self.partial_kernel = kp - kp.mean(axis=1, keepdims=True) if self.layer_norm else kp
        if not self.layer_norm:
            self._fold_biases()
        if self.partial_kernel is not None:  # (decision, site, units): a decision's row for its site
            self._partial_rows = self.partial_kernel.reshape(-1, 3, self.partial_kernel.shape[1])
        fast_one = meta["activation"] == "relu" and not self.layer_norm
        self._one = self._single_state_buffers() if fast_one else None

    def _init_slots(self, arrays: dict[str, np.ndarray], decode_steps: int | None) -> None:
        """A `models.SlotNetwork` (dag): its arrays in float32, the index arrays that read its slot
        tokens (normalized) and the task graph out of z, and the buffers of the single-state path.

        A round's W [h, P h, S h, mean h (, E h)] + b (P, S: means over the predecessors, the
        successors; E over the slots dispatched before, `earlier_mean`) is computed as M [h W'; b]:
        W' = [W_0 | ... | W_{K-1}] (width, K width), h W' viewed as (K U*T, width) (row K j + k: h_j W_k)
        with b as one more row, and M (U*T, K U*T + 1) with M[i, K j + k] = M_k[i, j] for M_k =
        [identity, P, S, every slot's mean (, E)] and a last column of ones: two products a round. M's
        constant entries are set here, P's and S's written at theirs (`_slots_context`)."""
        meta, u, t = self.meta, self.users, self.tasks
        slots = u * t
        earlier_mean = meta.get("earlier_mean", False)  # files written before it: False
        blocks = slot_round_blocks(earlier_mean)
        trained = int(meta["decode_steps"])
        self._set_decode_steps(trained, decode_steps)
        layout = dag_feature_layout(u, t)
        token = dag_token_indices(u, t)  # (U*T, K) raw feature indices
        self._token_z = self._feature_of_z[token]
        self._token_mean = self.mean[token]
        self._token_inv_std = (1.0 / self.std[token]).astype(np.float32)
        rows, cols = dag_adjacency_pairs(t)
        a = np.concatenate([v * t + rows for v in range(u)])  # the pairs a -> b of the adjacency's features
        b = np.concatenate([v * t + cols for v in range(u)])
        # The adjacency read normalized, as the network reads it (mean 0, std 1 where the statistics keep
        # it raw: `raw_columns`), each pair twice: once for P (row b), once for S (row a).
        adjacency = np.tile(np.arange(*layout["adjacency"]), 2)
        self._adj_z = self._feature_of_z[adjacency]
        self._adj_mean = self.mean[adjacency]
        self._adj_inv_std = (1.0 / self.std[adjacency]).astype(np.float32)
        pairs = len(a)
        # [in-degrees | out-degrees] (2 U*T,) = values @ _degree; each entry's divisor is one of them.
        self._degree = np.zeros((2 * pairs, 2 * slots), np.float32)
        self._degree[np.arange(pairs), b] = 1.0
        self._degree[np.arange(pairs), slots + a] = 1.0
        self._divisor = np.concatenate([b, slots + a])
        columns = blocks * slots + 1
        self._mix_pos = np.concatenate([b * columns + blocks * a + 1, a * columns + blocks * b + 2])
        f32 = np.float32
        mix = np.zeros((slots, columns), f32)
        parts = mix[:, :-1].reshape(slots, slots, blocks)
        for k, block in slot_constant_blocks(u, t, earlier_mean).items():
            parts[..., k] = block
        mix[:, -1] = 1.0
        self._mix_base = mix
        self._embed = arrays["embed_kernel"].astype(f32)
        place = arrays["slot_embedding"][None, :] + arrays["user_embedding"][:, None]  # (U, T, width)
        self._embed_bias = (arrays["embed_bias"][None] + place.reshape(slots, -1)).astype(f32)
        width = self._embed.shape[1]
        self._given = arrays["given_kernel"].astype(f32) if trained > 1 else None
        # A slot's first h is act(its embedding + its given site's row of the given kernel); the single-
        # state path computes the four (sites 0-2, none) once a state, a pass takes one per slot.
        self._given_rows = np.zeros((4, width), f32)
        if self._given is not None:
            self._given_rows[:3] = self._given
        self._rounds = []
        for i in range(int(meta["rounds"])):  # (K width, width) -> W' (width, K width)
            kernel = arrays[f"round_kernel_{i}"].astype(f32).reshape(blocks, width, width)
            self._rounds.append((np.concatenate(list(kernel), axis=1), arrays[f"round_bias_{i}"].astype(f32)))
        self._readout = arrays["readout_kernel"].astype(f32), arrays["readout_bias"].astype(f32)
        self._act = _activation(meta["activation"], None)
        self.partial_kernel = self._given  # decides in steps when trained to
        self._one = None
        # The single-state path's buffers: tokens, embeddings, M, the first h of each slot and site,
        # h, each round's [h W'; b] and h W' (a view of it) and output, the logits.
        rounds = []
        for _, bias in self._rounds:
            xb = np.empty((blocks * slots + 1, width), f32)
            xb[-1] = bias
            rounds.append((xb, xb[:-1].reshape(slots, blocks * width), np.empty((slots, width), f32)))
        self._slots_buffers = _SlotsBuffers(
            tokens=np.empty(token.shape, f32), pre=np.empty((slots, width), f32), mix=mix.copy(),
            first=np.empty((slots, 4, width), f32), h=np.empty((slots, width), f32), rounds=rounds,
            logits=np.empty((slots, 3), f32))

    def _slots_context(self, z: np.ndarray,
                       buffers: _SlotsBuffers | None = None) -> tuple[np.ndarray, np.ndarray]:
        """z (..., F + 1) -> (the slots' embeddings before the partial placement (..., U*T, width), the
        rounds' matrix M (..., U*T, K U*T + 1) of `_init_slots`); into the single-state buffers if given."""
        lead, slots = z.shape[:-1], self.users * self.tasks
        tokens, pre, mix = (buffers.tokens, buffers.pre, buffers.mix) if buffers is not None else (None,) * 3
        tokens = np.take(z, self._token_z, axis=-1, out=tokens)
        tokens -= self._token_mean
        tokens *= self._token_inv_std
        pre = np.matmul(tokens, self._embed, out=pre)
        pre += self._embed_bias
        values = np.take(z, self._adj_z, axis=-1)
        values -= self._adj_mean
        values *= self._adj_inv_std
        divisors = np.maximum(np.matmul(values, self._degree), 1.0)
        values /= np.take(divisors, self._divisor, axis=-1)
        if mix is None:
            mix = np.repeat(self._mix_base.reshape(1, -1), int(np.prod(lead)), axis=0)
        mix = mix.reshape(*lead, -1)
        mix[..., self._mix_pos] = values
        return pre, mix.reshape(*lead, slots, -1)

    def _slots_logits(self, context: tuple[np.ndarray, np.ndarray], given: np.ndarray | None,
                      buffers: _SlotsBuffers | None = None) -> np.ndarray:
        """`_slots_context`'s output [and the partial placement (..., U*T, 3)] -> logits (..., U*T, 3).
        With the single-state buffers, `context` is (the first h of each slot and site (U*T * 4,
        width), M) and `given` the rows of it to start from (U*T,)."""
        first, mix = context
        if buffers is None:
            h = self._act(first + np.matmul(given, self._given) if given is not None else first.copy())
            rounds, out = [(None, None, None)] * len(self._rounds), None
        else:
            h, rounds, out = buffers.h, buffers.rounds, buffers.logits
            first.take(given, 0, h, "clip")
        for (kernel, bias), (xb, x, r) in zip(self._rounds, rounds):  # noqa: B905 (same length)
            # one state: dot (matmul is slower into a view); a batch: matmul (dot loops over N-d arrays)
            x = np.dot(h, kernel, out=x) if buffers is not None else np.matmul(h, kernel)
            if xb is None:
                lead, width = x.shape[:-2], bias.size
                xb = np.concatenate([x.reshape(*lead, -1, width), np.broadcast_to(bias, (*lead, 1, width))],
                                    axis=-2)
            h += self._act(np.matmul(mix, xb, out=r))
        kernel, bias = self._readout
        out = np.matmul(h, kernel, out=out)
        out += bias
        return out

    def _set_decode_steps(self, trained: int, decode_steps: int | None) -> None:
        self.decode_steps = trained if decode_steps is None else int(decode_steps)
        if self.decode_steps < 1 or (self.decode_steps > 1 and trained == 1):
            raise ValueError(f"decode_steps must be >= 1, and 1 for a student exported with decode_steps 1, "
                             f"got {decode_steps}")

    def _fold_biases(self) -> None:
        """Without LayerNorm, every bias rides on a constant unit, and the network runs in float32.

        Each hidden layer gets one more unit whose input is exactly 1, so after the activation it
        holds a1 = act(1) (!= 0 for every activation here); the next kernel's last row is then
        bias / a1. A layer is one matmul and one activation; the head one matmul.
        """
        a1 = float(np.asarray(self.activation(np.ones(1)))[0])
        kernels = []
        for i, k in enumerate(self.kernels):
            if i:  # rows: the previous layer's units, then its constant unit
                k = np.concatenate([k, self.biases[i][None] / a1])
            unit = np.zeros((k.shape[0], 1))
            unit[-1] = 1.0 if i == 0 else 1.0 / a1  # z ends with a constant 1 itself
            kernels.append(np.concatenate([k, unit], axis=1).astype(np.float32))
        self.kernels = kernels
        self.head_kernel = np.concatenate([self.head_kernel, self.head_bias[None] / a1]).astype(np.float32)
        if self.partial_kernel is not None:  # no input to the constant unit
            kp = self.partial_kernel
            self.partial_kernel = np.concatenate([kp, np.zeros((kp.shape[0], 1))], axis=1).astype(np.float32)

    def _feature_recipe(self, count: int | None) -> None:
        """`feature_recipe` reordered for numpy: z holds the logged features first (one log call on a
        slice), then the others, then a constant 1 (it carries the first layer's bias).
        `_feature_of_z` maps z back to the order of `features.raw_features`; the first kernel is
        permuted instead. Only the first `count` features (the network's inputs), without the terms
        that none of them has."""
        p = self.packed_size
        recipe = (dag_feature_recipe(self.users, self.tasks, self.subcarriers) if self.scenario == "dag"
                  else feature_recipe(self.tasks, self.subcarriers))
        num, den, logged = (a[..., :count] for a in recipe)
        rows = max(1, int((num != p).any(axis=1).sum()))  # padding rows (0 / 1) come last
        num, den = num[:rows], den[:rows]
        self._consts = np.array(POOL_CONSTANTS, np.float32)
        self.num_features = num.shape[1]
        order = np.concatenate([np.flatnonzero(logged), np.flatnonzero(~logged)])
        self._num_logs = int(logged.sum())
        self._z_of_feature = order  # z[..., :F] == raw[..., order]
        self._feature_of_z = np.argsort(order)
        unit_num = np.full((num.shape[0], 1), p)  # the constant 1 as 1 / 1 + 0 / 1 + ...
        unit_num[0] = p + 1
        num_z = np.concatenate([num[:, order], unit_num], axis=1)
        den_z = np.concatenate([den[:, order], np.full_like(unit_num, p + 1)], axis=1)
        self._terms = num.shape[0]
        self._term_idx = np.concatenate([num_z, den_z])
        self._ones = np.ones(self._terms, np.float32)
        # The pool of a single-state call, reused (see __call__ on threads).
        self._pool = np.concatenate([np.zeros(p, np.float32), self._consts])
        self._pool_head = self._pool[:p]

    def _refuse(self, packed) -> None:
        """A packed state of another system: one error naming both sizes."""
        sizes = f"users={self.users}, tasks={self.tasks}" if self.scenario == "dag" else f"tasks={self.tasks}"
        raise ValueError(f"the packed state has {np.shape(packed)[-1]} values, but this student was exported "
                         f"for scenario {self.scenario}, {sizes}, subcarriers={self.subcarriers} "
                         f"({self.packed_size} values)")

    def _z(self, packed: np.ndarray) -> np.ndarray:
        """(..., P) packed states -> (..., F + 1): the raw features in the order z, then a constant 1."""
        x = packed if type(packed) is np.ndarray and packed.dtype == np.float32 else np.asarray(
            packed, dtype=np.float32)
        if x.shape[-1] != self.packed_size:
            self._refuse(x)
        if x.ndim == 1:  # one state: the pool lives in a buffer (no concatenation)
            np.copyto(self._pool_head, x)
            pool = self._pool
        else:
            pool = np.concatenate((x, np.broadcast_to(self._consts, (*x.shape[:-1], 3))), axis=-1)
        factors = np.take(pool, self._term_idx, axis=-1)  # (..., 2R, F + 1)
        r = self._terms
        z = np.matmul(self._ones, np.divide(factors[..., :r, :], factors[..., r:, :]))  # sum over r
        logs = z[..., :self._num_logs]
        np.log(logs, out=logs)
        return z

    def raw_features(self, packed: np.ndarray) -> np.ndarray:
        """(..., P) packed states -> (..., F) unnormalized features (same as features.raw_features)."""
        return self._z(packed)[..., self._feature_of_z]

    def features(self, packed: np.ndarray) -> np.ndarray:
        """(..., P) packed states -> (..., F) normalized features (same as features.features)."""
        return (self.raw_features(packed) - self.mean) / self.std

    def logits(self, packed: np.ndarray, partial: np.ndarray | None = None) -> np.ndarray:
        """(..., P) packed states [, (..., *decision, 3) partial placement of a student that decodes in
        steps; None: nothing given] -> (..., *decision, 3) logits (float32 without LayerNorm, else
        float64)."""
        z = self._z(packed)
        given = None
        if partial is not None and self.partial_kernel is not None:
            given = np.reshape(partial, (*z.shape[:-1], -1, 3)).astype(self.partial_kernel.dtype)
        logits = self._logits_given(self._context(z), given)
        return logits.reshape(z.shape[:-1] + (*self.decision_shape, 3))

    def _context(self, z: np.ndarray):
        """What the passes of a decision share: the first layer's pre-activation from the features
        (an MLP), `_slots_context` (a SlotNetwork)."""
        return self._slots_context(z) if self.arch == "slots" else np.matmul(z, self.kernels[0])

    def _logits_given(self, context, given: np.ndarray | None) -> np.ndarray:
        """(..., decisions * 3) or (..., decisions, 3) logits from `_context` and the partial placement
        (..., decisions, 3) one-hot (None: nothing given)."""
        if self.arch == "slots":
            return self._slots_logits(context, given)
        if given is None:  # _network modifies its input in place
            return self._network(context.copy())
        return self._network(context + np.matmul(given.reshape(*given.shape[:-2], -1), self.partial_kernel))

    def _network(self, first: np.ndarray) -> np.ndarray:
        """The network from its first layer's pre-activation on (a fresh array: modified in place)."""
        if not self.layer_norm:  # biases folded into the kernels (_fold_biases)
            h = self.activation(first)
            for kernel in self.kernels[1:]:
                h = self.activation(np.matmul(h, kernel))
            return np.matmul(h, self.head_kernel)
        h = first
        for i in range(len(self.kernels)):
            if i:
                h = h @ self.kernels[i]
                h += self.biases[i]
            # h is already centered (folded into the kernel)
            if h.ndim == 1:  # one state: the variance as a Python float is cheaper than an array op
                h *= (float(h @ h) / h.size + self.layer_norm_eps) ** -0.5
            else:
                h *= (np.add.reduce(h * h, axis=-1, keepdims=True) / h.shape[-1]
                      + self.layer_norm_eps) ** -0.5
            h *= self.scales[i]
            h += self.shifts[i]
            h = self.activation(h)
        out = h @ self.head_kernel
        out += self.head_bias
        return out

    def _real(self, packed: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """(..., *decision) bool: the decisions that are not dag padding (cycles 0)."""
        if self.scenario != "dag":
            return np.ones(shape, bool)
        return np.asarray(packed)[..., self.slices["cycles"]].reshape(shape) > 0

    def _decide_in_steps(self, packed: np.ndarray) -> np.ndarray:
        """`decoding.decide` in numpy: `decode_steps` passes, each fixing the most confident open
        decisions (the first layer's part from the features computed once)."""
        z = self._z(packed)
        lead = z.shape[:-1]
        d = self._decisions
        context = self._context(z)
        real = self._real(packed, (*lead, d))
        known = ~real
        sites = np.zeros((*lead, d), np.int64)
        take = -(-d // self.decode_steps)
        eye = np.eye(3, dtype=self.partial_kernel.dtype)
        for step in range(self.decode_steps):
            given = eye[sites] * (known & real)[..., None]
            logits = self._logits_given(context, given).reshape(*lead, d, 3)
            pick = logits.argmax(axis=-1)
            if step == self.decode_steps - 1:
                sites = np.where(known, sites, pick)
                break
            top = logits.max(axis=-1, keepdims=True)
            confidence = np.where(known, -1.0, 1.0 / np.exp(logits - top).sum(axis=-1))
            chosen = np.argsort(-confidence, axis=-1, kind="stable")[..., :take]  # equal: lower index
            fix = np.zeros_like(known)
            np.put_along_axis(fix, chosen, True, axis=-1)
            fix &= ~known
            sites = np.where(fix, pick, sites)
            known = known | fix
        return sites.astype(np.int8).reshape(*lead, *self.decision_shape)

    def _single_state_buffers(self) -> _MlpBuffers:
        """Preallocated arrays of the single-state path (`_decide_one`), views included."""
        r, width = self._terms, self._term_idx.shape[1]
        factors = np.empty((2 * r, width), np.float32)
        z = np.empty(width, np.float32)
        hidden = [np.empty(k.shape[1], np.float32) for k in self.kernels]
        out = np.empty(self.head_kernel.shape[1], np.float32)
        return _MlpBuffers(factors, factors[:r], factors[r:], np.empty((r, width), np.float32), z,
                           z[:self._num_logs], hidden, out, out.reshape(-1, 3))

    def _decide_one(self, packed: np.ndarray) -> np.ndarray:
        """`__call__` for one state of a ReLU student without LayerNorm: the same computation as
        `logits`, into preallocated arrays (no allocation, no slicing: ~20% less time at batch 1)."""
        factors, numerators, denominators, quotients, z, logs, hidden, out, out3 = self._one
        matmul, maximum = np.matmul, np.maximum
        np.copyto(self._pool_head, packed)
        # The array method, not np.take (a Python wrapper); "clip": the indices are in bounds.
        self._pool.take(self._term_idx, None, factors, "clip")
        np.divide(numerators, denominators, out=quotients)
        h = matmul(self._ones, quotients, out=z)
        np.log(logs, out=logs)
        if self.decode_steps > 1:
            return self._steps_one(packed, h)
        for kernel, buf in zip(self.kernels, hidden):  # noqa: B905 (same length by construction)
            h = maximum(matmul(h, kernel, out=buf), 0.0, out=buf)
        matmul(h, self.head_kernel, out=out)
        if self.scenario == "dag":  # padding slots (cycles 0) on 0; sites as (U, T)
            real = packed[self.slices["cycles"]] > 0
            return np.where(real, out3.argmax(1), 0).astype(np.int8).reshape(self.decision_shape)
        return out3.argmax(1).astype(np.int8)

    def _steps_one(self, packed: np.ndarray, z: np.ndarray) -> np.ndarray:
        """`_decide_in_steps` for one state of a ReLU MLP without LayerNorm, from its features z: the
        first layer's input from the decisions taken is a running sum of their rows of the partial
        kernel (`_passes_one`)."""
        hidden, out, out3 = self._one.hidden, self._one.out, self._one.out3
        matmul, maximum = np.matmul, np.maximum
        rows = self._partial_rows

        def logits_of(first):
            h = maximum(first, 0.0, out=hidden[0])
            for kernel, buf in zip(self.kernels[1:], hidden[1:]):  # noqa: B905
                h = maximum(matmul(h, kernel, out=buf), 0.0, out=buf)
            matmul(h, self.head_kernel, out=out)
            return out3

        def commit(first, chosen, sites):
            first += rows[chosen, sites].sum(0)

        return self._passes_one(packed, matmul(z, self.kernels[0]), logits_of, commit)

    def _slots_one(self, packed: np.ndarray) -> np.ndarray:
        """`_decide_in_steps` for one state of a SlotNetwork, into preallocated buffers: its context once
        (`_slots_context`) and each slot's first h for each given site (sites 0-2, none: row 4 j + site);
        then per pass the rounds from the rows of the sites taken (`_passes_one`)."""
        buffers = self._slots_buffers
        pre, mix = self._slots_context(self._z(packed), buffers)
        first = np.add(pre[:, None], self._given_rows, out=buffers.first)
        context = self._act(first).reshape(-1, first.shape[-1]), mix
        rows = np.arange(3, 4 * len(pre), 4)  # nothing given

        def commit(rows, chosen, sites):
            rows[chosen] += sites - 3

        def logits_of(rows):
            return self._slots_logits(context, rows, buffers)

        return self._passes_one(packed, rows, logits_of, commit)

    def _passes_one(self, packed: np.ndarray, first: np.ndarray, logits_of, commit) -> np.ndarray:
        """The passes of `_decide_in_steps` for one state, with few array operations a pass (each costs
        ~0.3-1 us at this size): `logits_of(first)` -> (decisions, 3) logits; `commit(first, chosen,
        sites)` adds the decisions `chosen` (distinct) on `sites` to `first`. A decision's confidence
        max softmax = 1 / sum(exp(logits - max)), so the most confident have the smallest sums (closed
        decisions get +inf); the `take` smallest by a stable sort (equal: lower index)."""
        d = self._decisions
        real = (packed[self.slices["cycles"]].reshape(-1) > 0 if self.scenario == "dag"
                else np.ones(d, bool))
        open_ = real.copy()
        remaining = np.count_nonzero(real)
        closed = _CLOSED.take(real)  # closed decisions (padding): +inf
        sites = np.zeros(d, np.int8)
        take = -(-d // self.decode_steps)
        last = self.decode_steps - 1
        for step in range(self.decode_steps):
            out3 = logits_of(first)
            pick = out3.argmax(1)
            if step == last or remaining <= take:
                np.copyto(sites, pick, casting="unsafe", where=open_)
                break
            sums = np.subtract(out3, np.maximum.reduce(out3, 1)[:, None])
            sums = np.add.reduce(np.exp(sums, out=sums), 1)
            sums += closed
            chosen = sums.argsort(kind="stable")[:take]
            picked = pick[chosen]
            sites[chosen] = picked
            closed[chosen] = np.inf
            open_[chosen] = False
            remaining -= take
            commit(first, chosen, picked)
        return sites.reshape(self.decision_shape)

    def __call__(self, packed: np.ndarray) -> np.ndarray:
        """(n, P) or (P,) packed states -> placements (n, *decision) or (*decision,) int8 (ties to the
        lowest label; dag padding slots on 0).

        Single-state calls reuse buffers: one StudentPolicy must not decide from several threads
        at once (give each thread its own)."""
        one_state = getattr(packed, "ndim", None) == 1
        if one_state and (self._one is not None or self.arch == "slots"):
            if packed.shape[0] != self.packed_size:
                self._refuse(packed)
            return self._decide_one(packed) if self._one is not None else self._slots_one(packed)
        if self.decode_steps > 1:
            return self._decide_in_steps(packed)
        x = self.logits(packed).argmax(axis=-1).astype(np.int8)
        if self.scenario == "dag":
            x = np.where(self._real(packed, x.shape), x, np.int8(0))
        return x


def load(path: str | os.PathLike, decode_steps: int | None = None) -> StudentPolicy:
    """The exported student of `path`, deciding in its own number of passes or in `decode_steps`."""
    return StudentPolicy(path, decode_steps)
