"""DROO-style deep reinforcement learning baseline (Huang, Bi, Zhang, IEEE TMC 2019), three sites.

DROO learns online, without labels: a DNN maps a state's features to a relaxed placement, a
quantizer turns it into K candidate placements, the cost model scores them, the best one goes into
a replay memory, and every few states the DNN trains on a random minibatch of the memory.

Adaptation to three sites (the paper's actions are binary):

* DNN: a `PlacementMLP` (`config.DROO_MODEL` by default: 4x64 GELU + LayerNorm) -> logits (T, 3); the relaxed
  placement is `probs = softmax(logits)` per sub-task.
* Order-preserving quantization into K candidates (`quantize`), K = T by default:
  candidate 1 is the per-sub-task argmax of `probs` (ties to the lowest label). Per sub-task, the
  margin is top-1 prob minus top-2 prob and the runner-up site is the second entry of the sites
  sorted by decreasing prob (ties to the lowest label). Sub-tasks are ordered by increasing margin
  (ties to the lower sub-task index). With `quantizer="single"` candidate k
  (2 <= k <= K) is candidate 1 with the (k-1)-th sub-task of that order moved to its runner-up
  site: each candidate k > 1 differs from candidate 1 in exactly one sub-task, the least confident
  ones first. With `quantizer="nested"` (the default) candidate k moves the first k-1 sub-tasks
  of that order together, as the paper's binary quantizer flips every entry between 0.5 and its
  threshold.
  Measured (T=4, N=3, 3000 training states): "single" gets stuck (mean latency ratio 12.5, worse
  than all-local 1.31) because leaving a bad contiguous block of sites needs several flips at once;
  "nested" reaches 1.78. At the default system (T=10, 20k states): 1.51 vs 1.25.
* The cost model (`cost.path_latency`) scores the K candidates; the cheapest wins (ties to the
  lowest k, so the choice is never worse than candidate 1). This is also the policy at decision
  time (`decide`): DNN -> K candidates -> the best by the cost model.
* Replay memory: a FIFO ring of `memory_size` (features, best placement) pairs.
* Training: the stream is processed in chunks of `train_every` states; the DNN is fixed within a
  chunk (exactly the paper's "train every delta states"), so a chunk is decided as one batch. After
  each chunk, one Optax Adam step on the cross-entropy between the DNN's logits and the stored best
  placements of `batch_size` entries drawn uniformly (with replacement) from the filled memory.
  A trailing partial chunk (< train_every states) is not used.
* Feature normalization statistics come from the stream's own states (no labels), like the
  student's come from its training states.

Everything derives from explicit keys; the online loop is one jitted `lax.scan` over chunks,
called in segments so a progress bar can follow. A trained DNN is saved with `runs.save_run`
(`meta["kind"] == "droo"`, the DROO config in `meta["droo"]`); `policies.make_policy("droo", ...)`
rebuilds the decision rule from it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from offload_jax import scenarios
from offload_jax.config import DROO_MODEL, ConfigError, ModelConfig, SystemConfig
from offload_jax.features import FeatureStats, compute_stats, features, num_inputs, raw_columns, raw_features
from offload_jax.losses import cross_entropy
from offload_jax.models import build
from offload_jax.scenarios.base import NUM_SITES

QUANTIZERS = ("single", "nested")


@dataclasses.dataclass(frozen=True)
class DROOConfig:
    """DROO hyper-parameters. `candidates=0` means K = T (the issue's setting)."""

    model: ModelConfig = DROO_MODEL
    candidates: int = 0
    quantizer: str = "nested"
    memory_size: int = 1024
    batch_size: int = 128
    train_every: int = 10
    learning_rate: float = 1e-3

    def num_candidates(self, decisions: int) -> int:
        """K: `candidates`, or by default one per decision (T for the chain, U * T for dag)."""
        return self.candidates or decisions

    def validate(self, decisions: int | None = None) -> DROOConfig:
        self.model.validate()
        if self.model.decode_steps != 1:
            raise ConfigError(f"droo model decode_steps must be 1 (DROO decodes by its quantizer), got "
                              f"{self.model.decode_steps}")
        for name in ("memory_size", "batch_size", "train_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"droo {name} must be an integer >= 1, got {value!r}")
        if self.memory_size < self.train_every:
            raise ConfigError(f"droo memory_size ({self.memory_size}) must be >= train_every "
                              f"({self.train_every})")
        if self.quantizer not in QUANTIZERS:
            raise ConfigError(f"droo quantizer must be one of {QUANTIZERS}, got {self.quantizer!r}")
        if not isinstance(self.candidates, int) or self.candidates < 0:
            raise ConfigError(f"droo candidates must be an integer >= 0 (0: one per decision), got "
                              f"{self.candidates!r}")
        if decisions is not None and self.num_candidates(decisions) > decisions:
            raise ConfigError(f"droo candidates must be at most the decisions per state ({decisions}), got "
                              f"{self.candidates}")
        if not (isinstance(self.learning_rate, (int, float)) and 0 < self.learning_rate < np.inf):
            raise ConfigError(f"droo learning_rate must be a finite number > 0, got {self.learning_rate!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["model"] = self.model.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DROOConfig:
        allowed = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - allowed)
        if unknown:
            raise ConfigError(f"unknown droo key(s) {unknown}; allowed: {sorted(allowed)}")
        d = dict(d)
        if "model" in d:
            d["model"] = ModelConfig.from_dict(d["model"])
        return cls(**d).validate()


def quantize(probs: jax.Array, num_candidates: int, quantizer: str = "nested") -> jax.Array:
    """Order-preserving quantization: probs (..., T, 3) -> candidates (..., K, T) int8 (module doc).

    `quantizer="single"`: candidate k flips only the (k-1)-th least confident sub-task;
    `"nested"`: candidate k flips the k-1 least confident sub-tasks together.
    """
    tasks = probs.shape[-2]
    if not 1 <= num_candidates <= tasks:
        raise ValueError(f"num_candidates must be in [1, T={tasks}], got {num_candidates}")
    if quantizer not in QUANTIZERS:
        raise ValueError(f"quantizer must be one of {QUANTIZERS}, got {quantizer!r}")
    site_order = jnp.argsort(-probs, axis=-1, stable=True)  # sites by decreasing prob
    best, runner_up = site_order[..., 0], site_order[..., 1]  # (..., T)
    top2 = jnp.take_along_axis(probs, site_order[..., :2], axis=-1)
    margin = top2[..., 0] - top2[..., 1]
    # rank[t] = position of sub-task t when sorted by increasing margin (ties: lower index first)
    rank = jnp.argsort(jnp.argsort(margin, axis=-1, stable=True), axis=-1)
    k = jnp.arange(num_candidates)[:, None]  # candidate k+1 (0-based k) ...
    if quantizer == "single":
        flip_mask = rank[..., None, :] == k - 1  # ... flips the sub-task of rank k-1 (none for k=0)
    else:
        flip_mask = rank[..., None, :] < k  # ... flips the sub-tasks of ranks 0..k-1
    return jnp.where(flip_mask, runner_up[..., None, :], best[..., None, :]).astype(jnp.int8)


def decide(logits: jax.Array, score: Callable[[jax.Array], jax.Array], num_candidates: int,
           quantizer: str = "nested", mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """DROO's decision: logits (n, *D, 3) -> (best placement (n, *D) int8, its objective (n,)).

    The decisions are quantized together (flattened: for dag the U*T slots); the K candidates of
    `quantize` are scored by `score` (placements (n, *D) -> J (n,): the scenario's objective); ties go
    to the lowest k. Decisions outside `mask` (dag padding) are 0 in every candidate.
    """
    n, shape = logits.shape[0], logits.shape[1:-1]
    chex.assert_shape(logits, (n, *shape, NUM_SITES))
    flat = logits.reshape(n, -1, NUM_SITES)
    cands = quantize(jax.nn.softmax(flat, axis=-1), num_candidates, quantizer)  # (n, K, d)
    cands = cands.reshape(n, num_candidates, *shape)
    if mask is not None:
        cands = jnp.where(mask[:, None], cands, jnp.int8(0))
    value = jax.vmap(score, in_axes=1, out_axes=1)(cands)  # (n, K)
    k = jnp.argmin(value, axis=-1)
    best = jnp.take_along_axis(cands, k.reshape(n, 1, *([1] * len(shape))), axis=1)[:, 0]
    return best, jnp.take_along_axis(value, k[:, None], axis=1)[:, 0]


class OnlineState(NamedTuple):
    """Carry of the online loop."""

    params: Any  # nnx.State of the DNN's parameters
    opt_state: Any
    memory_features: jax.Array  # (M, F) float32
    memory_placements: jax.Array  # (M, *decision_shape) int8
    memory_masks: jax.Array | None  # (M, *decision_shape) bool: the decisions that matter (dag); None (chain)
    stored: jax.Array  # () int32, entries written so far (the ring's write position is stored % M)


def make_online_step(graphdef: Any, stats: FeatureStats, droo_cfg: DROOConfig, system):
    """(carry, (key, chunk of states)) -> (carry, (loss, mean chosen objective, share improved)).

    One chunk of `train_every` states: decide with the current DNN (candidates scored by the scenario's
    objective), store, one Adam step on the cross-entropy with the stored placements.
    """
    scenario = scenarios.of(system)
    values = scenario.params
    optimizer = optax.adam(droo_cfg.learning_rate)
    k_cands = droo_cfg.num_candidates(scenario.decisions)
    mem_size = droo_cfg.memory_size
    n_in = num_inputs(droo_cfg.model.inputs, system)
    padded = scenario.name != "chain"  # dag slots can be padding: masked out of decisions and loss

    def loss_fn(params, feats, placements, mask):
        logits = nnx.merge(graphdef, params)(feats)
        return cross_entropy(logits, placements, mask)

    def step(carry: OnlineState, xs):
        key, states = xs
        feats = features(states, stats, n_in)
        logits = nnx.merge(graphdef, carry.params)(feats)
        mask = scenario.real_mask(states) if padded else None
        score = lambda x: scenario.objective(values, states, x).value  # noqa: E731
        best, best_value = decide(logits, score, k_cands, droo_cfg.quantizer, mask)
        first = jnp.argmax(logits, axis=-1)
        first = first if mask is None else jnp.where(mask, first, 0)
        improved = jnp.mean(jnp.any((best != first).reshape(best.shape[0], -1), axis=-1))
        slots = (carry.stored + jnp.arange(feats.shape[0])) % mem_size
        mem_f = carry.memory_features.at[slots].set(feats)
        mem_p = carry.memory_placements.at[slots].set(best)
        mem_m = None if mask is None else carry.memory_masks.at[slots].set(mask)
        stored = carry.stored + feats.shape[0]
        idx = jax.random.randint(key, (droo_cfg.batch_size,), 0, jnp.minimum(stored, mem_size))
        loss, grads = jax.value_and_grad(loss_fn)(carry.params, mem_f[idx], mem_p[idx],
                                                  None if mem_m is None else mem_m[idx])
        updates, opt_state = optimizer.update(grads, carry.opt_state, carry.params)
        params = optax.apply_updates(carry.params, updates)
        carry = OnlineState(params, opt_state, mem_f, mem_p, mem_m, stored)
        return carry, (loss, jnp.mean(best_value), improved)

    return optimizer, step


@functools.cache
def _initializer(system: SystemConfig, model_cfg: ModelConfig):
    """(graphdef, jitted key -> params) of the DNN (an eager init would compile op by op)."""
    make = lambda k: build(model_cfg, system, rngs=nnx.Rngs(params=k))
    graphdef = nnx.split(nnx.eval_shape(lambda: make(jax.random.key(0))))[0]
    return graphdef, jax.jit(lambda k: nnx.split(make(k))[1])


def _init(key: jax.Array, system: SystemConfig, model_cfg: ModelConfig):
    graphdef, init = _initializer(system, model_cfg)
    return graphdef, init(key)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _run_segment(graphdef, droo_cfg: DROOConfig, system: SystemConfig, stats: FeatureStats,
                 key_loop: jax.Array, carry: OnlineState, chunk_ids: jax.Array, seg_states):
    """The online loop over chunks `chunk_ids` (states (chunks, train_every, ...)); chunk i uses
    key fold_in(key_loop, i), so the result does not depend on how the stream is cut in segments."""
    _, step = make_online_step(graphdef, stats, droo_cfg, system)
    keys = jax.vmap(lambda i: jax.random.fold_in(key_loop, i))(chunk_ids)
    return jax.lax.scan(step, carry, (keys, seg_states))


def _slice_states(states, start: int, stop: int):
    return type(states)(*(np.asarray(v)[start:stop] for v in states))


def _stats_of(states, system, batch_size: int = 8192) -> FeatureStats:
    raw_fn = jax.jit(raw_features)
    n = states.cycles.shape[0]
    raw = np.concatenate([np.asarray(raw_fn(_slice_states(states, i, i + batch_size)))
                          for i in range(0, n, batch_size)])
    return compute_stats(raw, keep=raw_columns(system))


def train_droo(key: jax.Array, states, cfg, droo_cfg: DROOConfig = DROOConfig(),
               *, segment_chunks: int = 500,
               progress: bool = True) -> tuple[nnx.Module, FeatureStats, dict]:
    """Train DROO online over the stream `states` (n states, numpy or JAX; labels are never used).

    Returns (DNN, feature stats, info) where info holds `train_states` (states used: a multiple of
    train_every) and per-chunk `loss`, `chosen_objective` (J; the chain's: latency in seconds), `improved`
    (share of states where the
    chosen candidate is not candidate 1). Deterministic in (key, states, configs).
    """
    scenario = scenarios.of(cfg)
    droo_cfg.validate(scenario.decisions)
    every = droo_cfg.train_every
    chunks = states.cycles.shape[0] // every
    if chunks < 1:
        raise ConfigError(f"droo needs at least train_every={every} training states, "
                          f"got {states.cycles.shape[0]}")
    used = chunks * every
    stats = _stats_of(_slice_states(states, 0, used), cfg)
    key_init, key_loop = jax.random.split(key)
    in_features = num_inputs(droo_cfg.model.inputs, cfg)
    graphdef, params = _init(key_init, cfg, droo_cfg.model)
    optimizer, _ = make_online_step(graphdef, stats, droo_cfg, cfg)
    carry = OnlineState(
        params=params, opt_state=optimizer.init(params),
        memory_features=jnp.zeros((droo_cfg.memory_size, in_features), jnp.float32),
        memory_placements=jnp.zeros((droo_cfg.memory_size, *scenario.decision_shape), jnp.int8),
        memory_masks=(None if scenario.name == "chain"
                      else jnp.zeros((droo_cfg.memory_size, *scenario.decision_shape), bool)),
        stored=jnp.int32(0))

    history = {"loss": [], "chosen_objective": [], "improved": []}
    bar = _progress_bar(chunks, progress)
    for start in range(0, chunks, segment_chunks):
        stop = min(start + segment_chunks, chunks)
        seg = _slice_states(states, start * every, stop * every)
        seg = type(seg)(*(v.reshape(stop - start, every, *v.shape[1:]) for v in seg))
        carry, (loss, lat, improved) = _run_segment(graphdef, droo_cfg, cfg, stats, key_loop, carry,
                                                    jnp.arange(start, stop, dtype=jnp.uint32), seg)
        for name, values in zip(history, (loss, lat, improved), strict=True):
            history[name].append(np.asarray(values))
        if bar is not None:
            bar.update(stop - start)
            bar.set_postfix(loss=f"{float(loss[-1]):.3f}", improved=f"{float(improved.mean()):.2f}")
    if bar is not None:
        bar.close()
    model = nnx.merge(graphdef, carry.params)
    info = {"train_states": used, **{k: np.concatenate(v) for k, v in history.items()}}
    return model, stats, info


def _progress_bar(total: int, progress: bool):
    if not progress:
        return None
    from tqdm.auto import tqdm  # noqa: PLC0415

    return tqdm(total=total, desc="droo", unit="chunk")


def save_droo(run_dir: str | os.PathLike, model: nnx.Module, stats: FeatureStats, cfg: SystemConfig,
              droo_cfg: DROOConfig, meta: Mapping[str, Any] | None = None, *,
              identity: dict | None = None) -> None:
    """Persist a trained DROO DNN as a run (`runs.save_run`, meta kind "droo")."""
    from offload_jax.runs import save_run  # noqa: PLC0415 (orbax is heavy)

    full_meta = {**(meta or {}), "kind": "droo", "droo": droo_cfg.to_dict()}
    save_run(run_dir, model, stats, droo_cfg.model, cfg, full_meta, identity=identity)


def config_of(meta: Mapping[str, Any]) -> DROOConfig:
    """The DROOConfig a run was trained with (from its meta)."""
    if meta.get("kind") != "droo" or "droo" not in meta:
        raise ConfigError(f"not a DROO run (meta kind {meta.get('kind')!r})")
    return DROOConfig.from_dict(meta["droo"])


def train_droo_cli(data: str | os.PathLike, out: str | os.PathLike, *, seed: int = 0,
                   train_states: int | None = None, holdout: int | None = None,
                   droo_cfg: DROOConfig = DROOConfig(), progress: bool = True) -> dict:
    """`offload-jax train-droo`: train on the first states of a dataset (its labels unused); save a run.

    Uses states [0, train_states) with train_states defaulting to all but the last `holdout`
    (default `splits.default_holdout`, as for the student), so DROO sees the student's training
    states. A run of this very command in `out` is left as is; anything else there is refused
    (`runs.check_run_dir`). Returns the run's meta.
    """
    from offload_jax import dataset as dataset_lib  # noqa: PLC0415
    from offload_jax import locking  # noqa: PLC0415
    from offload_jax.runs import check_run_dir, finished_meta, run_status  # noqa: PLC0415
    from offload_jax.splits import default_holdout  # noqa: PLC0415

    manifest = dataset_lib.read_manifest(data)
    total = int(manifest["num_states"])
    holdout = default_holdout(total) if holdout is None else holdout
    if not 0 <= holdout < total:
        raise ConfigError(f"--holdout must be in [0, {total}) for this dataset, got {holdout}")
    limit = total - holdout
    train_states = limit if train_states is None else train_states
    if not 1 <= train_states <= limit:
        raise ConfigError(
            f"--states must be in [1, {limit}] (dataset size minus holdout), got {train_states}")
    # The command: what decides the DNN (the data by content: the states used are its first train_states).
    identity = {"kind": "droo", "droo": droo_cfg.to_dict(), "seed": seed,
                "data": {"dataset": dataset_lib.fingerprint(manifest), "states": train_states}}
    with locking.hold(out, "train-droo"):
        done = finished_meta(out, check_run_dir(out, identity), 0)  # saved once, when done
        if done is not None:
            return done
        ds = dataset_lib.load(data, max_states=train_states)
        cfg = dataset_lib.scenario_of(manifest).cfg
        model, stats, info = train_droo(jax.random.key(seed), ds.states, cfg, droo_cfg, progress=progress)
        tail = max(1, len(info["loss"]) // 10)
        meta = {"seed": seed, "train_states": info["train_states"], "data": os.path.abspath(data),
                "step": len(info["loss"]),
                "final": {"loss": float(info["loss"][-tail:].mean()),
                          "chosen_objective": float(info["chosen_objective"][-tail:].mean()),
                          "improved": float(info["improved"][-tail:].mean())}}
        save_droo(out, model, stats, cfg, droo_cfg, meta, identity=identity)
        return run_status(out)
