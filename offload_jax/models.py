"""Flax NNX networks: an MLP from features to T x 3 logits (one 3-way softmax per sub-task)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from offload_jax.config import ModelConfig
from offload_jax.scenarios.chain.cost import NUM_SITES

_ACTIVATIONS = {"relu": jax.nn.relu, "gelu": jax.nn.gelu, "silu": jax.nn.silu, "tanh": jnp.tanh}


class PlacementMLP(nnx.Module):
    """features (n, F) -> logits (n, T, 3)."""

    def __init__(self, in_features: int, tasks: int, cfg: ModelConfig, *, rngs: nnx.Rngs):
        cfg.validate()
        self.tasks = tasks
        self.activation = _ACTIVATIONS[cfg.activation]
        widths = (in_features, *cfg.hidden)
        pairs = zip(widths[:-1], widths[1:], strict=True)
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in pairs])
        self.norms = nnx.List(
            [nnx.LayerNorm(b, rngs=rngs) for b in cfg.hidden] if cfg.norm == "layer" else []
        )
        self.head = nnx.Linear(widths[-1], tasks * NUM_SITES, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if len(self.norms):
                x = self.norms[i](x)
            x = self.activation(x)
        return self.head(x).reshape(*x.shape[:-1], self.tasks, NUM_SITES)


def input_count(model: PlacementMLP) -> int:
    """How many features (the first ones of `features.raw_features`) the model reads."""
    return (model.layers[0] if len(model.layers) else model.head).in_features


def count_params(model: nnx.Module) -> int:
    return sum(int(p.size) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
