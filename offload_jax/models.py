"""Flax NNX networks from features to placement logits (one 3-way softmax per decision), and the
helpers that turn a model into a pure parameter dict and back.

* `PlacementMLP`: features (n, F) -> logits (n, *decision_shape, 3); the chain's networks, the dag's
  student. With `decode_steps` > 1 it also reads a partial placement (`decoding.py`).
* `GraphTransformer`: dag features -> logits (n, U, T, 3) by attention over the U*T sub-task slots,
  biased by the task graph (predecessor / successor / same user).
* `GraphMLP`: dag features -> logits (n, U, T, 3) by message passing along the task graph, then an
  MLP on the slots' embeddings and the flat features: the dag's default teacher (its parameters sit in
  the MLP, read once per state; a transformer spends its parameters once per slot, ~10x the work).
* `SlotNetwork`: dag features -> logits (n, U, T, 3) by message passing and a per-slot readout, every
  parameter shared by the slots: small and graph-aware, the dag's student.
`build(model_cfg, system)` makes the one a `ModelConfig` names for a system (SystemConfig or DagConfig).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from offload_jax.config import ModelConfig
from offload_jax.export_runtime import (
    DAG_SHARED_FEATURES,
    DAG_SLOT_FEATURES,
    DAG_USER_FEATURES,
    dag_adjacency_pairs,
    dag_feature_layout,
    dag_token_indices,
    slot_constant_blocks,
    slot_round_blocks,
)
from offload_jax.features import num_inputs
from offload_jax.scenarios.base import NUM_SITES

_ACTIVATIONS = {"relu": jax.nn.relu, "gelu": jax.nn.gelu, "silu": jax.nn.silu, "tanh": jnp.tanh}


def decision_shape(system) -> tuple[int, ...]:
    """(T,) for a chain system, (U, T) for a dag system."""
    users = getattr(system, "users", None)
    return (system.tasks,) if users is None else (users, system.tasks)


class PlacementMLP(nnx.Module):
    """features (n, F) [, partial placement (n, *out_shape, 3) when cfg.decode_steps > 1] -> logits
    (n, *out_shape, 3). The partial placement (`decoding.partial_placement`) enters the first layer
    beside the features; None: nothing known."""

    def __init__(self, in_features: int, out_shape: tuple[int, ...], cfg: ModelConfig, *, rngs: nnx.Rngs):
        cfg.validate()
        self.out_shape = tuple(out_shape)
        self.activation = _ACTIVATIONS[cfg.activation]
        self.decode_steps = cfg.decode_steps
        self.partial_width = int(np.prod(self.out_shape)) * NUM_SITES if cfg.decode_steps > 1 else 0
        widths = (in_features + self.partial_width, *cfg.hidden)
        pairs = zip(widths[:-1], widths[1:], strict=True)
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in pairs])
        self.norms = nnx.List(
            [nnx.LayerNorm(b, rngs=rngs) for b in cfg.hidden] if cfg.norm == "layer" else []
        )
        self.head = nnx.Linear(widths[-1], int(np.prod(self.out_shape)) * NUM_SITES, rngs=rngs)

    def __call__(self, x: jax.Array, partial: jax.Array | None = None) -> jax.Array:
        if self.partial_width:
            lead = x.shape[:-1]
            partial = (jnp.zeros((*lead, self.partial_width), x.dtype) if partial is None
                       else partial.reshape(*lead, self.partial_width).astype(x.dtype))
            x = jnp.concatenate([x, partial], axis=-1)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if len(self.norms):
                x = self.norms[i](x)
            x = self.activation(x)
        return self.head(x).reshape(*x.shape[:-1], *self.out_shape, NUM_SITES)


class _Block(nnx.Module):
    """Pre-LayerNorm transformer block whose attention logits get a learned bias per head and relation."""

    def __init__(self, width: int, heads: int, relations: int, activation, *, rngs: nnx.Rngs):
        self.heads = heads
        self.norm1 = nnx.LayerNorm(width, rngs=rngs)
        self.qkv = nnx.Linear(width, 3 * width, rngs=rngs)
        self.out = nnx.Linear(width, width, rngs=rngs)
        self.relation_bias = nnx.Param(jnp.zeros((relations, heads)))
        self.norm2 = nnx.LayerNorm(width, rngs=rngs)
        self.up = nnx.Linear(width, 4 * width, rngs=rngs)
        self.down = nnx.Linear(4 * width, width, rngs=rngs)
        self.activation = activation

    def __call__(self, h: jax.Array, relations: jax.Array) -> jax.Array:
        """h (n, S, d); relations (n, S, S, R) 0/1: which relations token j has to token i."""
        n, s, d = h.shape
        q, k, v = jnp.split(self.qkv(self.norm1(h)).reshape(n, s, 3, self.heads, d // self.heads), 3, axis=2)
        q, k, v = q[:, :, 0], k[:, :, 0], v[:, :, 0]  # (n, S, H, d/H)
        logits = jnp.einsum("nihc,njhc->nhij", q, k) / np.sqrt(d // self.heads)
        logits = logits + jnp.einsum("nijr,rh->nhij", relations, self.relation_bias[...])
        attn = jax.nn.softmax(logits, axis=-1)
        h = h + self.out(jnp.einsum("nhij,njhc->nihc", attn, v).reshape(n, s, d))
        return h + self.down(self.activation(self.up(self.norm2(h))))


class GraphTransformer(nnx.Module):
    """dag features (n, F) -> logits (n, U, T, 3).

    One token per sub-task slot: its features (`export_runtime.DAG_SLOT_FEATURES`), its user's and the
    shared ones, a learned embedding of its slot index (the dispatch priority) and of its user. The
    attention between two tokens gets a learned bias per head for each relation they have: j is a
    predecessor of i, j is a successor of i, same user (the 0/1 adjacency is read unnormalized from
    the features). Padding slots attend and are attended like others; their outputs are ignored.
    """

    RELATIONS = 3

    def __init__(self, users: int, tasks: int, cfg: ModelConfig, *, rngs: nnx.Rngs):
        cfg.validate()
        self.users, self.tasks = users, tasks
        width = cfg.hidden[0]
        token_in = len(DAG_SLOT_FEATURES) + len(DAG_USER_FEATURES) + len(DAG_SHARED_FEATURES)
        self.embed = nnx.Linear(token_in, width, rngs=rngs)
        self.slot_embedding = nnx.Param(0.02 * jax.random.normal(rngs.params(), (tasks, width)))
        self.user_embedding = nnx.Param(0.02 * jax.random.normal(rngs.params(), (users, width)))
        activation = _ACTIVATIONS[cfg.activation]
        self.blocks = nnx.List([_Block(width, cfg.heads, self.RELATIONS, activation, rngs=rngs)
                                for _ in cfg.hidden])
        self.norm = nnx.LayerNorm(width, rngs=rngs)
        self.head = nnx.Linear(width, NUM_SITES, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        u, t = self.users, self.tasks
        lead = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1])
        n = x.shape[0]
        tokens, adj = _dag_tokens(x, u, t)  # adj[., u, i, j]: i -> j
        h = (self.embed(tokens).reshape(n, u, t, -1) + self.slot_embedding[...][None, None]
             + self.user_embedding[...][None, :, None]).reshape(n, u * t, -1)
        pred = jnp.zeros((n, u * t, u * t), x.dtype)
        block = jnp.swapaxes(adj, -1, -2)  # [., u, j, i]: token j(of u) has predecessor i
        for v in range(u):
            pred = pred.at[:, v * t:(v + 1) * t, v * t:(v + 1) * t].set(block[:, v])
        same = np.kron(np.eye(u), np.ones((t, t)))
        relations = jnp.stack([pred, jnp.swapaxes(pred, -1, -2),
                               jnp.broadcast_to(jnp.asarray(same, x.dtype), pred.shape)], axis=-1)
        for blk in self.blocks:
            h = blk(h, relations)
        return self.head(self.norm(h)).reshape(*lead, u, t, NUM_SITES)


def _dag_tokens(x: jax.Array, users: int, tasks: int) -> tuple[jax.Array, jax.Array]:
    """Split dag features (n, F) into slot tokens (n, U*T, slot + user + shared features) and the task
    graph (n, U, T, T) 0/1 (adj[., u, i, j]: i -> j; read unnormalized: `features.raw_columns`)."""
    layout = dag_feature_layout(users, tasks)
    n = x.shape[0]
    tokens = x[:, dag_token_indices(users, tasks)]  # (n, U*T, K)
    rows, cols = dag_adjacency_pairs(tasks)
    upper = x[:, slice(*layout["adjacency"])].reshape(n, users, -1)
    adj = jnp.zeros((n, users, tasks, tasks), x.dtype).at[:, :, rows, cols].set(upper)
    return tokens, adj


def _setup_slots(module: nnx.Module, users: int, tasks: int, cfg: ModelConfig, rngs: nnx.Rngs) -> int:
    """What GraphMLP and SlotNetwork share: sizes, passes, activation and the slot tokens' embedding at
    `graph_width` (returned)."""
    cfg.validate()
    module.users, module.tasks = users, tasks
    module.decode_steps = cfg.decode_steps
    module.activation = _ACTIVATIONS[cfg.activation]
    token_in = len(DAG_SLOT_FEATURES) + len(DAG_USER_FEATURES) + len(DAG_SHARED_FEATURES)
    module.embed = nnx.Linear(token_in, cfg.graph_width, rngs=rngs)
    return cfg.graph_width


def _neighbour_means(adj: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The task graph (n, U, T, T) -> the matrices of the mean over each slot's predecessors and over
    its successors, within each user's graph (a slot without any: zeros)."""
    pred = jnp.swapaxes(adj, -1, -2)  # [., u, j, i]: i is a predecessor of j
    return (pred / jnp.maximum(pred.sum(-1, keepdims=True), 1.0),
            adj / jnp.maximum(adj.sum(-1, keepdims=True), 1.0))


class GraphMLP(nnx.Module):
    """dag features (n, F) -> logits (n, U, T, 3): message passing, then an MLP.

    Each slot's token (its features, its user's and the shared ones) is embedded at `graph_width`;
    `graph_layers` rounds each add to a slot act(W_self h + W_pred mean(h over its predecessors) +
    W_succ mean(h over its successors)) (LayerNorm'd), so a slot sees the graph around it (transfers,
    chains, joins). The slots' embeddings, flattened, and the flat features go through MLP layers of
    the widths `hidden` to the (U, T, 3) logits.
    """

    def __init__(self, users: int, tasks: int, cfg: ModelConfig, *, rngs: nnx.Rngs):
        width = _setup_slots(self, users, tasks, cfg, rngs)
        self.rounds = nnx.List([nnx.Linear(3 * width, width, rngs=rngs) for _ in range(cfg.graph_layers)])
        self.round_norms = nnx.List([nnx.LayerNorm(width, rngs=rngs) for _ in range(cfg.graph_layers)])
        flat_in = users * tasks * width + dag_feature_layout(users, tasks)["shared"][1]
        self.head = PlacementMLP(flat_in, (users, tasks), cfg, rngs=rngs)

    def __call__(self, x: jax.Array, partial: jax.Array | None = None) -> jax.Array:
        return self.decode(self.encode(x), partial, x.shape[:-1])

    def encode(self, x: jax.Array) -> jax.Array:
        """Features (..., F) -> the head's input (n, U*T*graph_width + F): what does not depend on the
        partial placement, so deciding in steps computes it once (`decoder`)."""
        x = x.reshape(-1, x.shape[-1])
        tokens, adj = _dag_tokens(x, self.users, self.tasks)
        n, u, t = x.shape[0], self.users, self.tasks
        h = self.embed(tokens)  # (n, U*T, d)
        pred, succ = _neighbour_means(adj)
        for layer, norm in zip(self.rounds, self.round_norms, strict=True):
            hu = h.reshape(n, u, t, -1)
            from_pred = jnp.einsum("nuji,nuid->nujd", pred, hu).reshape(n, u * t, -1)
            from_succ = jnp.einsum("nuji,nuid->nujd", succ, hu).reshape(n, u * t, -1)
            h = h + self.activation(norm(layer(jnp.concatenate([h, from_pred, from_succ], axis=-1))))
        return jnp.concatenate([h.reshape(n, -1), x], axis=-1)

    def decode(self, context: jax.Array, partial: jax.Array | None, lead: tuple[int, ...]) -> jax.Array:
        """The MLP head on `encode`'s output (and the partial placement, decode_steps > 1) -> logits
        (*lead, U, T, 3)."""
        if partial is not None:  # the head reads it (decode_steps > 1)
            partial = partial.reshape(context.shape[0], -1)
        return self.head(context, partial).reshape(*lead, self.users, self.tasks, NUM_SITES)


class SlotNetwork(nnx.Module):
    """dag features (n, F) [, partial placement (n, U, T, 3) when cfg.decode_steps > 1] -> logits
    (n, U, T, 3) by one small network that every sub-task slot shares.

    Each slot's token (its features, its user's and the shared ones) is embedded at `graph_width`, plus
    learned embeddings of its slot index (the dispatch priority) and its user, plus (decode_steps > 1)
    an embedding of its site where it is given; `graph_layers` rounds each add to a slot
    act(W [h, mean(h over its predecessors), mean(h over its successors), mean(h over every slot)
    (, mean(h over the slots dispatched before it): `earlier_mean`)]);
    a linear readout gives each slot its three logits. Its parameters do not grow with the slots, so
    it is small, and what it learns of a slot it applies to every slot: the dag student (a flat MLP on
    the features spends its parameters per slot position). Padding slots are computed like others and
    ignored. `encode` computes what does not read the partial placement (once for the passes of
    `decoding.decide`), `decode` the rest.
    """

    def __init__(self, users: int, tasks: int, cfg: ModelConfig, *, rngs: nnx.Rngs):
        width = _setup_slots(self, users, tasks, cfg, rngs)
        scale = (1.0 / self.embed.in_features) ** 0.5  # as a one-hot input's rows of the embedding start
        self.slot_embedding = nnx.Param(scale * jax.random.normal(rngs.params(), (tasks, width)))
        self.user_embedding = nnx.Param(scale * jax.random.normal(rngs.params(), (users, width)))
        self.given = (nnx.Linear(NUM_SITES, width, use_bias=False, rngs=rngs) if cfg.decode_steps > 1
                      else None)
        self.earlier_mean = cfg.earlier_mean
        blocks = slot_round_blocks(cfg.earlier_mean)  # [h, its means]
        self.rounds = nnx.List([nnx.Linear(blocks * width, width, rngs=rngs)
                                for _ in range(cfg.graph_layers)])
        self.readout = nnx.Linear(width, NUM_SITES, rngs=rngs)

    def __call__(self, x: jax.Array, partial: jax.Array | None = None) -> jax.Array:
        return self.decode(self.encode(x), partial, x.shape[:-1])

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Features (..., F) -> (the slots' embeddings before the partial placement (n, U*T, width), the
        rounds' aggregations as matrices over the slots, interleaved (n, K U*T, U*T): row K i + k is row
        i of the identity (k = 0), of the mean over the predecessors (1), over the successors (2; within
        each user's graph), over every slot (3) [and over the slots dispatched before it (4):
        `earlier_mean`; K = 5, else 4])."""
        x = x.reshape(-1, x.shape[-1])
        n, u, t = x.shape[0], self.users, self.tasks
        tokens, adj = _dag_tokens(x, u, t)
        place = self.slot_embedding[...][None, :] + self.user_embedding[...][:, None]  # (U, T, width)
        pre = self.embed(tokens) + place.reshape(u * t, -1)[None]
        pred, succ = _neighbour_means(adj)
        eye_u = jnp.eye(u, dtype=x.dtype)

        def over_slots(m):  # (n, U, T, T) per user -> (n, U*T, U*T) block-diagonal
            return jnp.einsum("uv,nuij->nuivj", eye_u, m).reshape(n, u * t, u * t)

        blocks = {k: jnp.broadcast_to(jnp.asarray(m, x.dtype), (n, u * t, u * t))
                  for k, m in slot_constant_blocks(u, t, self.earlier_mean).items()}
        blocks.update({1: over_slots(pred), 2: over_slots(succ)})
        mix = jnp.stack([blocks[k] for k in range(len(blocks))], axis=2)  # (n, U*T, K, U*T)
        return pre, mix.reshape(n, len(blocks) * u * t, u * t)

    def decode(self, context: tuple[jax.Array, jax.Array], partial: jax.Array | None,
               lead: tuple[int, ...]) -> jax.Array:
        """`encode`'s output [and the partial placement] -> logits (*lead, U, T, 3). A round's input
        [h, its means] is one product with the interleaved matrices, (n, K U*T, width) viewed as
        (n, U*T, K width) (row K i + k of the product is the k-th block of slot i's input; the identity
        rows copy h exactly): at batch 1 each kernel call is the time, and this is one where slices and a
        concatenation were four."""
        pre, mix = context
        n, u, t = pre.shape[0], self.users, self.tasks
        slots = u * t
        if partial is not None and self.given is not None:  # the sum over the 3 sites written out, not a
            given = partial.reshape(n, slots, NUM_SITES).astype(pre.dtype)  # dot or a reduce: it fuses
            kernel = self.given.kernel[...]  # with the activation into one loop
            for site in range(NUM_SITES):
                pre = pre + given[..., site, None] * kernel[site]
        h = self.activation(pre)
        for layer in self.rounds:
            m = (mix @ h).reshape(n, slots, -1)  # (n, U*T, K width): [h, predecessors', successors',
            h = h + self.activation(layer(m))  # every slot's[, earlier slots'] means]
        return self.readout(h).reshape(*lead, u, t, NUM_SITES)


def build(model_cfg: ModelConfig, system, *, rngs: nnx.Rngs) -> nnx.Module:
    """The network `model_cfg` names for the system `system` (SystemConfig or DagConfig)."""
    model_cfg.validate()
    if model_cfg.arch != "mlp":
        if not hasattr(system, "users"):
            raise ValueError(f"arch {model_cfg.arch!r} reads a task graph: it needs a dag system")
        network = {"graph": GraphTransformer, "gnn": GraphMLP, "slots": SlotNetwork}[model_cfg.arch]
        return network(system.users, system.tasks, model_cfg, rngs=rngs)
    return PlacementMLP(num_inputs(model_cfg.inputs, system), decision_shape(system), model_cfg, rngs=rngs)


def abstract_model(model_cfg: ModelConfig, system) -> nnx.Module:
    """The model's structure with ShapeDtypeStruct leaves (no allocation)."""
    return nnx.eval_shape(lambda: build(model_cfg, system, rngs=nnx.Rngs(0)))


def init_params(key: jax.Array, model_cfg: ModelConfig, system) -> dict:
    """Fresh parameters as a pure dict (jittable and vmappable in `key`)."""
    return nnx.to_pure_dict(nnx.state(build(model_cfg, system, rngs=nnx.Rngs(params=key))))


def graphdef_of(model_cfg: ModelConfig, system) -> nnx.GraphDef:
    return nnx.split(abstract_model(model_cfg, system))[0]


def model_from_params(params: dict, model_cfg: ModelConfig, system) -> nnx.Module:
    return nnx.merge(graphdef_of(model_cfg, system), params)


def params_of(model: nnx.Module) -> dict:
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def input_count(model: nnx.Module) -> int:
    """How many features (the first ones of `features.raw_features`) the model reads."""
    if isinstance(model, (GraphTransformer, GraphMLP, SlotNetwork)):
        return dag_feature_layout(model.users, model.tasks)["shared"][1]
    return (model.layers[0] if len(model.layers) else model.head).in_features - model.partial_width


def decode_steps(model: nnx.Module) -> int:
    """The passes the model decides in (`ModelConfig.decode_steps`; 1 for a model that reads no partial
    placement)."""
    return getattr(model, "decode_steps", 1)


def call(model: nnx.Module, x: jax.Array, partial: jax.Array | None = None) -> jax.Array:
    """model(x), or model(x, partial) for a model that reads a partial placement (decode_steps > 1)."""
    return model(x) if partial is None else model(x, partial)


def decoder(model: nnx.Module, x: jax.Array) -> Callable[[jax.Array | None], jax.Array]:
    """partial -> `call(model, x, partial)`, with what does not read the partial placement (a GraphMLP's
    message passing) computed once, for the passes of `decoding.decide`."""
    if isinstance(model, (GraphMLP, SlotNetwork)):
        context = model.encode(x)
        return lambda partial: model.decode(context, partial, x.shape[:-1])
    return lambda partial: call(model, x, partial)


def count_params(model: nnx.Module) -> int:
    return sum(int(p.size) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
