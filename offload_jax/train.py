"""The training program, PureJaxRL style: `make_train(config) -> Trainer` whose `train(rng, weights,
consts)` is one whole run as one jittable function, so `jax.jit(jax.vmap(trainer.train))` trains a
population (seeds, loss weights) in one program (`sweep.py`); `fit.py` drives the same steps in
checkpointed chunks. Any scenario: the data (`data.Prepared`) carries it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from offload_jax import scenarios
from offload_jax.config import ConfigError, ModelConfig, TrainConfig
from offload_jax.decoding import confidence, decide, most_confident, partial_placement, real_or_all
from offload_jax.features import FeatureStats, num_inputs
from offload_jax.losses import LossWeights, sampled_objective_loss, total_loss
from offload_jax.models import call, decode_steps, decoder, graphdef_of, init_params, input_count, params_of
from offload_jax.runs import LoadedRun
from offload_jax.scenarios.base import NUM_SITES, Scenario
from offload_jax.splits import Split

# Placements drawn per state for the objective term of a scenario without a closed-form expectation.
OBJECTIVE_SAMPLES = 4


class Consts(NamedTuple):
    """Everything big a training program reads. Passed as an argument, never closed over, so the
    arrays are not baked into the compiled program as constants."""

    train: Split  # its `label`: the run's targets (`targets`)
    eval: Split
    values: Any  # the scenario's params (its values: weights of J, ...), for the objective
    teacher_logits: Any = None  # (n, *decision_shape, 3) the teacher's logits on the training split, or None
    regret: Any = None  # (n, *decision_shape, 3) the training targets' single-change regrets, or None


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    perm: jax.Array  # (n,) int32, the current epoch's shuffle


@dataclasses.dataclass(frozen=True)
class Trainer:
    """The jittable pieces of one training configuration (see `make_train`)."""

    init: Callable  # (rng) -> TrainState at step 0
    epoch_perm: Callable  # (rng, step) -> (n,) shuffle of the epoch that `step` falls in
    run: Callable  # (TrainState, rng, LossWeights, Consts, k0, k1) -> (TrainState, (mean loss, mean acc))
    evaluate: Callable  # (params, Consts) -> held-out metrics (`held_out_metrics`)
    train: Callable  # (rng, LossWeights, Consts) -> (params, held-out metrics): the whole run
    optimizer: optax.GradientTransformation
    steps_per_epoch: int
    jitted: dict  # jax.jit of init, epoch_perm, run, evaluate (kept here so repeated fits reuse them)


def _kernel_mask(params):
    """Weight decay on kernels only (not biases, not LayerNorm, not embeddings or attention biases)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) == "kernel", params)


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    warmup = int(round(cfg.warmup_frac * cfg.steps))
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=cfg.learning_rate, warmup_steps=warmup,
        decay_steps=max(cfg.steps, warmup + 1), end_value=cfg.learning_rate * cfg.end_lr_frac)
    return optax.chain(
        optax.clip_by_global_norm(cfg.clip_norm),
        optax.adamw(schedule, weight_decay=cfg.weight_decay, mask=_kernel_mask),
    )


def check_partials(cfg: TrainConfig, model_cfg: ModelConfig) -> None:
    """`cfg.partials` other than "random" needs a network that decides in passes."""
    if cfg.partials != "random" and model_cfg.decode_steps == 1:
        raise ConfigError(f"partials {cfg.partials!r} picks what a network deciding in passes is given: "
                          f"it needs decode_steps > 1, got decode_steps 1 (use partials 'random')")


def given_decisions(key: jax.Array, real: jax.Array, partials: str,
                    first_logits: jax.Array | None = None) -> jax.Array:
    """(n, *D) bool: the decisions a conditional network is given on each training state (their
    targets' sites; its loss counts the others). Each state its own share of its real decisions,
    uniform in [0, 1), as decoding passes go from none given to most: drawn at random (`partials`
    "random"), or ("confident") the floor(share * real decisions) that the network's logits with nothing
    given, `first_logits` (n, *D, 3), are most confident of (`decoding.confidence`; equal ones by lower
    index): the subsets `decoding.decide`'s passes fix first."""
    share_key, pick_key = jax.random.split(key)
    share = jax.random.uniform(share_key, (real.shape[0],) + (1,) * (real.ndim - 1))
    if partials == "random":
        return (jax.random.uniform(pick_key, real.shape) < share) & real
    if partials != "confident" or first_logits is None:
        raise ValueError(f"partials must be 'random', or 'confident' with first_logits; got {partials!r}")
    n = real.shape[0]
    flat_real = real.reshape(n, -1)
    take = jnp.floor(share.reshape(n, 1) * jnp.sum(flat_real, axis=-1, keepdims=True)).astype(jnp.int32)
    sure = jnp.where(flat_real, confidence(first_logits).reshape(n, -1), -1.0)
    return (most_confident(sure, take) & flat_real).reshape(real.shape)


def masked_argmax(logits: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Placements from logits (ties to the lowest label); decisions outside `mask` (padding) on 0."""
    pred = jnp.argmax(logits, axis=-1).astype(jnp.int8)
    return pred if mask is None else jnp.where(mask, pred, jnp.int8(0))


def decide_each(graphdef, params, x: jax.Array, real: jax.Array, steps: int, batch: int,
                inputs: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """(n, *decision_shape) decisions of the network (graphdef, params) on the states' features x (n, F),
    state by state under jax.lax.map(batch_size=batch), in `steps` passes (`decoding.decide`; one pass:
    the masked argmax), padding (real False) on 0. `inputs` maps one state's row of x to what the
    network reads (e.g. its first inputs, normalized)."""
    def decide_one(a):  # one state: features (F,), real (*D,)
        logits_of = decoder(nnx.merge(graphdef, params), inputs(a[0])[None])
        if steps == 1:
            return masked_argmax(logits_of(None), a[1][None])[0]
        return decide(logits_of, a[1][None], steps)[0]

    return jax.lax.map(decide_one, (x, real), batch_size=batch)


def held_out_metrics(scenario: Scenario, values, split: Split, pred: jax.Array) -> dict:
    """Scalars on a split: accuracy and exact match over the decisions that matter, the mean of the
    per-state objective ratios J(pred) / J*, and for the chain its latency metrics (J is latency)."""
    mask = real_or_all(split.mask, pred.shape)
    hit = (pred == split.label) | ~mask
    value = scenario.objective(values, split.state, pred).value
    ratio = value / split.optimal
    axes = tuple(range(1, pred.ndim))
    out = {"accuracy": jnp.sum(hit & mask) / jnp.sum(mask), "exact_match": jnp.mean(jnp.all(hit, axis=axes)),
           "objective_ratio_mean": jnp.mean(ratio)}
    if split.mask is None:  # the chain: J is the latency
        out.update(per_task_accuracy=jnp.mean(hit, axis=0), latency_ratio_mean=jnp.mean(ratio),
                   latency_ratio_of_means=jnp.mean(value) / jnp.mean(split.optimal),
                   latency_mean_s=jnp.mean(value))
    return out


def make_train(cfg: TrainConfig, model_cfg: ModelConfig, scenario: Scenario, num_train: int, *,
               use_teacher: bool = False, use_latency: bool = False, use_regret: bool = False,
               eval_batch: int = 8192) -> Trainer:
    """Build the training program of one configuration.

    `trainer.train(rng, weights, consts)` is the whole run (a fori_loop over steps, then a held-out
    evaluation) as one jittable function, so `jax.jit(jax.vmap(trainer.train, in_axes=(0, 0, None)))`
    trains a population in one program. `trainer.run` executes steps [k0, k1) of the same loop; the
    checkpointing driver (`fit`) calls it in chunks. Step k's batch (and its objective samples) are a
    pure function of (rng, k). The seed and the loss weights of `cfg` are not used here: they are the
    `rng` and `weights` inputs. With `use_teacher`, `consts.teacher_logits` holds the teacher's logits
    on the training split (`teacher_logits`, computed once, not every step). With `use_latency`, the
    loss adds the objective-aware term: the exact expected objective where the scenario has it (the
    chain's latency), else the sampled one (`losses.sampled_objective_loss`, OBJECTIVE_SAMPLES draws).
    With `cfg.objective_states` > 0 the term scores only that many states of each batch.
    With `use_regret`, it adds `losses.regret_loss` over `consts.regret` (`single_change_regret`).
    A student that decodes in steps is distilled from the teacher's logits with nothing given (one pass
    over the split): a teacher run on each batch, given the student's decisions, cost twice the
    student's training time on the dag quickstart and did not help it (1.188 vs 1.193).
    """
    cfg.validate()
    check_partials(cfg, model_cfg)
    # Settings that are inputs of the program do not key the cache: such runs share compilations.
    program_cfg = dataclasses.replace(cfg, seed=0, alpha=1.0, temperature=1.0, latency_weight=0.0,
                                      regret_weight=0.0, eval_every=0)
    return _make_train(program_cfg, model_cfg, scenarios.as_scenario(scenario), num_train, use_teacher,
                       use_latency, use_regret, eval_batch)


@functools.lru_cache(maxsize=16)  # same settings -> same jitted functions -> no recompilation
def _make_train(cfg: TrainConfig, model_cfg: ModelConfig, scenario: Scenario, num_train: int,
                use_teacher: bool, use_latency: bool, use_regret: bool, eval_batch: int) -> Trainer:
    batch = cfg.batch_size
    steps_per_epoch = num_train // batch
    if steps_per_epoch < 1:
        raise ConfigError(f"--batch-size ({batch}) must be <= the number of training states ({num_train})")
    system = scenario.cfg
    graphdef = graphdef_of(model_cfg, system)
    tx = make_optimizer(cfg)
    n_in = num_inputs(model_cfg.inputs, system)

    steps_to_decide = model_cfg.decode_steps
    objective_states = cfg.objective_states or batch  # batches are random: the first ones are a sample

    def apply(params, x, partial=None):  # x holds every feature; the model reads the first n_in
        return call(nnx.merge(graphdef, params), x[..., :n_in], partial)

    def given_labels(key, labels, mask, params, x):
        """A conditional network's training input and its loss's mask (`given_decisions`; the
        "confident" share by the network's current `params`, given nothing). (None, None, mask) for a
        network that reads no placement."""
        if steps_to_decide == 1:
            return None, None, mask
        real = real_or_all(mask, labels.shape)
        first = None
        if cfg.partials == "confident":
            nothing = jnp.zeros((*labels.shape, NUM_SITES), jnp.float32)
            first = jax.lax.stop_gradient(apply(params, x, nothing))
        known = given_decisions(key, real, cfg.partials, first)
        return partial_placement(labels, known), known, real & ~known

    def split_key(rng):
        init_key, shuffle_key = jax.random.split(rng)
        return init_key, shuffle_key

    def epoch_perm(rng, step):
        epoch = step // steps_per_epoch
        key = jax.random.fold_in(split_key(rng)[1], epoch)
        return jax.random.permutation(key, num_train).astype(jnp.int32)

    def init(rng):
        params = init_params(split_key(rng)[0], model_cfg, system)
        return TrainState(params=params, opt_state=tx.init(params), perm=epoch_perm(rng, 0))

    def objective_term(values, logits, state, optimal, mask, key):
        exact = scenario.expected_objective(values, state, jax.nn.softmax(logits, axis=-1))
        if exact is not None:
            return jnp.mean(exact / optimal)
        value = lambda x: scenario.objective(values, state, x).value  # noqa: E731
        return sampled_objective_loss(logits, key, value, optimal, OBJECTIVE_SAMPLES, mask)[0]

    def one_step(k, carry, rng, weights: LossWeights, consts: Consts):
        state, loss_sum, acc_sum = carry
        perm = jax.lax.cond(k % steps_per_epoch == 0, lambda: epoch_perm(rng, k), lambda: state.perm)
        idx = jax.lax.dynamic_slice_in_dim(perm, (k % steps_per_epoch) * batch, batch)
        data = consts.train
        x, labels = data.x[idx], data.label[idx]
        mask = None if data.mask is None else data.mask[idx]
        regret = consts.regret[idx] if use_regret else None
        scored = idx[:objective_states]  # the states the objective term scores (a batch's first ones)
        batch_state = jax.tree.map(lambda v: v[scored], data.state) if use_latency else None
        sample_key = jax.random.fold_in(jax.random.fold_in(rng, 2), k)
        partial, known, mask = given_labels(jax.random.fold_in(jax.random.fold_in(rng, 3), k), labels, mask,
                                            state.params, x)
        teacher = consts.teacher_logits[idx] if use_teacher else None

        def loss_fn(params):
            logits = apply(params, x, partial)
            # Given decisions keep their label's site in the sampled placements (their logits do not
            # enter the term: it scores completions of the given part).
            sampled = logits if known is None else jnp.where(
                known[..., None], jnp.where(partial > 0, 1e4, -1e4), logits)
            term = (objective_term(consts.values, sampled[:objective_states], batch_state,
                                   data.optimal[scored], None if mask is None else mask[:objective_states],
                                   sample_key) if use_latency else None)
            loss = total_loss(logits, labels, weights, teacher_logits=teacher, objective_term=term,
                              regret=regret, mask=mask)
            return loss, logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        hit = jnp.argmax(logits, axis=-1) == labels
        acc = jnp.mean(hit) if mask is None else jnp.sum(hit & mask) / jnp.maximum(jnp.sum(mask), 1)
        return TrainState(params, opt_state, perm), loss_sum + loss, acc_sum + acc

    def run(state: TrainState, rng, weights: LossWeights, consts: Consts, k0, k1):
        body = functools.partial(one_step, rng=rng, weights=weights, consts=consts)
        zero = jnp.zeros((), jnp.float32)
        state, loss_sum, acc_sum = jax.lax.fori_loop(k0, k1, body, (state, zero, zero))
        count = jnp.maximum(k1 - k0, 1).astype(jnp.float32)
        return state, (loss_sum / count, acc_sum / count)

    def evaluate(params, consts: Consts):
        ev = consts.eval
        if steps_to_decide == 1:
            logits = jax.lax.map(lambda x: apply(params, x), ev.x, batch_size=eval_batch)
            return held_out_metrics(scenario, consts.values, ev, masked_argmax(logits, ev.mask))
        pred = decide_each(graphdef, params, ev.x, real_or_all(ev.mask, ev.label.shape), steps_to_decide,
                           eval_batch, lambda f: f[:n_in])
        return held_out_metrics(scenario, consts.values, ev, pred)

    def train(rng, weights: LossWeights, consts: Consts):
        state, _ = run(init(rng), rng, weights, consts, 0, cfg.steps)
        return state.params, evaluate(state.params, consts)

    jitted = {"init": jax.jit(init), "epoch_perm": jax.jit(epoch_perm), "run": jax.jit(run),
              "evaluate": jax.jit(evaluate)}
    return Trainer(init=init, epoch_perm=epoch_perm, run=run, evaluate=evaluate, train=train, optimizer=tx,
                   steps_per_epoch=steps_per_epoch, jitted=jitted)


def loss_weights(cfg: TrainConfig) -> LossWeights:
    return LossWeights(alpha=jnp.float32(cfg.alpha), temperature=jnp.float32(cfg.temperature),
                       latency_weight=jnp.float32(cfg.latency_weight),
                       regret_weight=jnp.float32(cfg.regret_weight))


def single_change_regret(scenario: Scenario, values, split: Split, batch: int = 4096) -> jax.Array:
    """(n, *decision_shape, 3) float32: J(label with that one decision moved to site s) / J(label) - 1.

    Both J from the same function (`scenario.objective`); 0 at the label's own site and on padding
    decisions (their site changes nothing); for an optimal label >= 0 elsewhere (clipped at 0 against
    float rounding). Computed once per training split (n * D * 3 placements scored, in
    batches of `batch` states), for `losses.regret_loss`.
    """
    scenario = scenarios.as_scenario(scenario)
    label = split.label.astype(jnp.int8)
    shape = label.shape[1:]
    d = int(np.prod(shape))

    def one_batch(state, lab):
        flat = lab.reshape(lab.shape[0], d)
        moved = jnp.repeat(flat[:, None, :], d * NUM_SITES, axis=1)  # (b, d*3, d): row d*3+s moves d to s
        rows = jnp.arange(d * NUM_SITES)
        moved = moved.at[:, rows, rows // NUM_SITES].set((rows % NUM_SITES).astype(jnp.int8))
        value = scenario.objective(values, state, moved.reshape(lab.shape[0], d * NUM_SITES, *shape)).value
        base = jnp.take_along_axis(value, flat[:, :1].astype(jnp.int32), axis=1)  # row label[0]: the label
        ratio = jnp.maximum(value / base - 1.0, 0.0).reshape(lab.shape[0], *shape, NUM_SITES)
        # Exact zeros where nothing moves (rows of one placement can differ in the last bit).
        same = jax.nn.one_hot(lab, NUM_SITES, dtype=jnp.bool_) | ~scenario.real_mask(state)[..., None]
        return jnp.where(same, 0.0, ratio).astype(jnp.float32)

    run = jax.jit(one_batch)
    n = label.shape[0]
    parts = [run(jax.tree.map(lambda v, a=a: v[a:a + batch], split.state), label[a:a + batch])
             for a in range(0, n, batch)]
    return jnp.concatenate(parts, axis=0)


def teacher_consts(teacher: LoadedRun, stats: FeatureStats) -> tuple[dict, jax.Array, jax.Array]:
    """(teacher params, scale, shift) mapping features normalized with `stats` to the teacher's input."""
    scale = stats.std / teacher.stats.std
    shift = (stats.mean - teacher.stats.mean) / teacher.stats.std
    return params_of(teacher.model), scale, shift


def teacher_logits(teacher: LoadedRun, stats: FeatureStats, x: jax.Array, batch: int = 8192) -> jax.Array:
    """(n, *decision_shape, 3) logits of the teacher on features `x` (n, F) normalized with `stats`."""
    params, scale, shift = teacher_consts(teacher, stats)
    graphdef = nnx.split(teacher.model)[0]
    count = input_count(teacher.model)

    @jax.jit
    def run(params, x):
        return jax.lax.map(lambda xb: nnx.merge(graphdef, params)((xb * scale + shift)[..., :count]), x,
                           batch_size=batch)

    return run(params, x)


def teacher_placements(teacher: LoadedRun, stats: FeatureStats, split: Split, batch: int = 2048) -> jax.Array:
    """(n, *decision_shape) int8: the teacher's decisions on `split` (features normalized with `stats`),
    in its own `decode_steps` passes, padding on 0: what its policy decides (`policies.model_policy`)."""
    params, scale, shift = teacher_consts(teacher, stats)
    graphdef = nnx.split(teacher.model)[0]
    count = input_count(teacher.model)
    steps = decode_steps(teacher.model)

    @jax.jit
    def run(params, x, real):  # as the trainer's `evaluate` decides
        return decide_each(graphdef, params, x, real, steps, batch, lambda f: (f * scale + shift)[:count])

    return run(params, split.x, real_or_all(split.mask, split.label.shape))


def targets(cfg: TrainConfig, scenario: Scenario, split: Split, teacher: LoadedRun | None,
            stats: FeatureStats, batch: int = 2048) -> jax.Array:
    """(n, *decision_shape) int8: what the CE term imitates on `split` (`TrainConfig.targets`): its
    labels; the teacher's placements ("teacher"); or those improved by the scenario's local search
    ("teacher_ls": sequence-level distillation, Kim & Rush 2016, whose targets are one function of the
    state that a small network fits more easily than exact labels, which jump between near-equal
    optima, and close to them: `Scenario.improve`, never worse than the teacher's placement)."""
    if cfg.targets == "labels":
        return split.label
    if teacher is None:
        raise ConfigError(f"targets {cfg.targets!r} need a teacher (distill with --teacher RUN)")
    if cfg.targets == "teacher_ls" and not scenario.has_local_search:
        raise ConfigError(f"targets 'teacher_ls' need a local search, which scenario {scenario.name!r} "
                          f"has not; allowed: 'labels', 'teacher'")
    x = teacher_placements(teacher, stats, split, batch)
    if cfg.targets == "teacher":
        return x
    values = scenario.params
    improve = jax.jit(lambda state, x: scenario.improve(values, state, x))
    n = x.shape[0]
    return jnp.concatenate([improve(jax.tree.map(lambda v, a=a: v[a:a + batch], split.state), x[a:a + batch])
                            for a in range(0, n, batch)], axis=0).astype(jnp.int8)


def make_consts(cfg: TrainConfig, data: Any, teacher: LoadedRun | None) -> Consts:
    """The `Consts` of a run on `data` (a `splits.Prepared`): the training split with the run's targets,
    the teacher's logits on it when distilling, the targets' regrets when the regret term is on."""
    train = data.train._replace(label=targets(cfg, data.scenario, data.train, teacher, data.stats))
    return Consts(train, data.eval, data.scenario.params,
                  teacher_logits(teacher, data.stats, train.x) if teacher else None,
                  single_change_regret(data.scenario, data.scenario.params, train)
                  if cfg.regret_weight > 0 else None)
