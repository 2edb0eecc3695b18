"""Graph families of the dag scenario (SPEC: `topology` chain | layered | file), as jittable samplers.

A graph is `(adj (T, T) bool, tasks () int32)`: `adj[i, j]` means sub-task j needs the output of i
(only i < j: the slot index is a topological order and the dispatch priority); slots >= `tasks`
are padding.

Layered graphs (`layered`), in the style of daggen (Suter; the generator MRLCO's DAGs come from),
defined here exactly:
1. Layer widths: the mean width is m = T**fat (daggen's `fat`: 0 gives a chain, 1 one wide layer);
   each layer's width is drawn uniformly from {1, ..., W}, W = max(1, round(2m - 1)), and layers are
   filled in slot order until all T slots are placed (the last one is cut). Slots are numbered
   layer by layer, so every edge goes from a lower to a higher slot.
2. Edges: i -> j exists with probability `density`, independently, when j's layer is 1 to 1 + jump
   layers after i's (an edge skips at most `jump` layers).
3. Every sub-task outside the first layer without a predecessor gets one, drawn uniformly from the
   layer just before its own.
Layered graphs have exactly T sub-tasks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from offload_jax.scenarios.dag.config import Graph


def chain(tasks: int) -> tuple[jax.Array, jax.Array]:
    """Edges t-1 -> t."""
    adj = np.eye(tasks, k=1, dtype=bool)
    return jnp.asarray(adj), jnp.int32(tasks)


def layer_of_slots(u_widths: jax.Array, fat) -> jax.Array:
    """(T,) layer index of each slot, from T uniforms (one per potential layer)."""
    t = u_widths.shape[-1]
    mean_width = jnp.power(jnp.float32(t), fat)
    max_width = jnp.maximum(jnp.round(2.0 * mean_width - 1.0), 1.0)
    widths = jnp.minimum(jnp.floor(u_widths * max_width), max_width - 1.0).astype(jnp.int32) + 1
    ends = jnp.cumsum(widths)  # layer l holds slots [ends[l-1], ends[l])
    return jnp.sum(ends[None, :] <= jnp.arange(t)[:, None], axis=1).astype(jnp.int32)


def layered(key: jax.Array, tasks: int, fat, density, jump) -> tuple[jax.Array, jax.Array]:
    """A random layered DAG with exactly `tasks` sub-tasks (module docstring)."""
    k_width, k_edge, k_parent = jax.random.split(key, 3)
    layer = layer_of_slots(jax.random.uniform(k_width, (tasks,)), fat)
    gap = layer[None, :] - layer[:, None]  # gap[i, j] = layer(j) - layer(i)
    allowed = (gap >= 1) & (gap <= 1 + jump)
    adj = allowed & (jax.random.uniform(k_edge, (tasks, tasks)) < density)
    orphan = (layer > 0) & ~jnp.any(adj, axis=0)
    previous = gap == 1
    score = jnp.where(previous, jax.random.uniform(k_parent, (tasks, tasks)), -1.0)
    parent = jnp.argmax(score, axis=0)  # uniform among the previous layer's slots
    adj = adj | (orphan[None, :] & (jnp.arange(tasks)[:, None] == parent[None, :]))
    return adj, jnp.int32(tasks)


def bank(graphs: tuple[Graph, ...], tasks: int) -> tuple[np.ndarray, np.ndarray]:
    """(adj (G, T, T) bool, tasks (G,) int32) of graphs with at most `tasks` sub-tasks, padded to T slots."""
    adj = np.zeros((len(graphs), tasks, tasks), bool)
    sizes = np.zeros(len(graphs), np.int32)
    for k, g in enumerate(graphs):
        if g.tasks > tasks:
            raise ValueError(f"graph {g.name!r} has {g.tasks} sub-tasks, more than T={tasks}")
        sizes[k] = g.tasks
        for i, j in g.edges:
            adj[k, i, j] = True
    return adj, sizes


def from_bank(u: jax.Array, adj_bank: np.ndarray, sizes: np.ndarray) -> tuple[jax.Array, jax.Array]:
    """The graph drawn uniformly from the bank by the uniform `u`."""
    g = adj_bank.shape[0]
    k = jnp.minimum(jnp.floor(u * g).astype(jnp.int32), g - 1)
    return jnp.asarray(adj_bank)[k], jnp.asarray(sizes)[k]
