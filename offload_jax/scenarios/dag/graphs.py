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

`mixture` draws synthetic training graphs (layered graphs of every size up to T and of many shapes, in
a random topological order); they reach a dataset as a topology file (`write_mixture`, `offload-jax
topologies`), so datasets stay within the SPEC's families.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from offload_jax import shapes
from offload_jax.config import MAX_SEED, ConfigError
from offload_jax.scenarios.dag.config import Graph, write_topology_file


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


# Synthetic training graphs: layered graphs of every size and shape, in a random topological order.
MIXTURE_FAT = (0.1, 0.9)
MIXTURE_DENSITY = (0.1, 0.9)
MIXTURE_JUMP = (1, 3)
MIXTURE_FULL_SHARE = 0.5  # the share of the mixture's graphs with all max_tasks sub-tasks


def relabel(adj: np.ndarray, order: np.ndarray) -> np.ndarray:
    """The same graph with sub-task order[k] renamed k (order must be a topological order)."""
    out = adj[np.ix_(order, order)]
    if np.any(np.tril(out)):
        raise ValueError("order is not a topological order of the graph")
    return out


def random_topological_order(adj: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A topological order drawn by Kahn's algorithm, taking a uniformly chosen ready sub-task each step."""
    n = adj.shape[0]
    indegree = adj.sum(axis=0).astype(int)
    done = np.zeros(n, bool)
    order = []
    for _ in range(n):
        ready = np.flatnonzero((indegree == 0) & ~done)
        k = int(ready[rng.integers(len(ready))])
        order.append(k)
        done[k] = True
        indegree -= adj[k].astype(int)
    return np.asarray(order)


_layered_batch = jax.jit(jax.vmap(layered, in_axes=(0, None, 0, 0, 0)), static_argnums=1)


def mixture(seed: int, count: int, max_tasks: int, min_tasks: int = 2, *,
            full_share: float = MIXTURE_FULL_SHARE,
            fat: tuple[float, float] = MIXTURE_FAT, density: tuple[float, float] = MIXTURE_DENSITY,
            jump: tuple[int, int] = MIXTURE_JUMP, mirror_share: float = 0.0,
            tree_share: float = 0.0, ordered_share: float = 0.0) -> tuple[Graph, ...]:
    """`count` synthetic graphs for training students that must hold on graphs they never saw.

    Each graph is a layered graph (`layered`, the daggen-style family) with its own knobs: sub-task count
    `max_tasks` with probability `full_share`, else uniform in [min_tasks, max_tasks - 1]; `fat` and
    `density` uniform in their ranges, `jump` uniform in its integer range; its sub-tasks are then
    renumbered in a random topological order (so sources and sinks need not be first and last, as in
    real job graphs). With probability `mirror_share` a graph is mirrored first (every edge reversed:
    its sources become sinks, a fan-out a fan-in; drawn from its own generator, so mirror_share = 0
    gives the same graphs as before it existed). With probability `tree_share` a graph is instead a
    random recursive tree of the same size (`random_tree`: each sub-task but the first hangs under a
    uniformly chosen earlier one), half of them out-trees (fan-outs), half in-trees (fan-ins); its own
    generator too. With probability `ordered_share` a graph keeps its layer order instead of the random
    topological one (sources first, as `layered` numbers the graphs it draws per state; its own
    generator, and the same edges). Graph k depends on (seed, k) alone (numpy for its knobs and order,
    JAX keys for its edges), so a longer mixture of the same seed starts with the shorter one.
    """
    for name, value, low in (("count", count, 1), ("max_tasks", max_tasks, 1), ("min_tasks", min_tasks, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if min_tasks > max_tasks:
        raise ValueError(f"min_tasks ({min_tasks}) must be <= max_tasks ({max_tasks})")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed must be an integer in [0, {MAX_SEED}], got {seed!r}")
    for name, share in (("full_share", full_share), ("mirror_share", mirror_share),
                        ("tree_share", tree_share), ("ordered_share", ordered_share)):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {share!r}")
    rngs = [np.random.default_rng((seed, k)) for k in range(count)]  # graph k depends on (seed, k) only
    sizes = np.empty(count, np.int64)
    fats, densities = np.empty(count, np.float32), np.empty(count, np.float32)
    jumps = np.empty(count, np.int32)
    for k, rng in enumerate(rngs):
        full = max_tasks == min_tasks or rng.random() < full_share
        sizes[k] = max_tasks if full else rng.integers(min_tasks, max_tasks)
        fats[k], densities[k] = rng.uniform(*fat), rng.uniform(*density)
        jumps[k] = rng.integers(jump[0], jump[1] + 1)
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.key(seed), np.arange(count))
    adjs: dict[int, np.ndarray] = {}
    for n in np.unique(sizes):
        idx = np.flatnonzero(sizes == n)
        padded = np.resize(idx, shapes.padded_size(len(idx), least=64))  # few batch shapes, few compiles
        drawn = _layered_batch(keys[padded], int(n), fats[padded], densities[padded], jumps[padded])[0]
        adjs.update(zip(idx.tolist(), np.asarray(drawn)[:len(idx)], strict=True))
    out = []
    for k, rng in enumerate(rngs):
        adj = adjs[k]
        if mirror_share and np.random.default_rng((seed, k, 1)).random() < mirror_share:
            adj = adj.T
        if tree_share:
            tree_rng = np.random.default_rng((seed, k, 2))
            if tree_rng.random() < tree_share:
                adj = random_tree(int(sizes[k]), tree_rng)
        order = random_topological_order(adj, rng)  # drawn either way: graph k's other draws stay
        if not (ordered_share and np.random.default_rng((seed, k, 3)).random() < ordered_share):
            adj = relabel(adj, order)
        edges = tuple((int(i), int(j)) for i, j in zip(*np.nonzero(adj), strict=True))
        out.append(Graph(name=f"mix-{seed}-{k}", tasks=int(sizes[k]), edges=edges))
    return tuple(out)


def random_tree(tasks: int, rng: np.random.Generator) -> np.ndarray:
    """(tasks, tasks) bool adjacency of a random recursive tree: sub-task j > 0 hangs under a uniformly
    chosen i < j (an out-tree: one source, edges away from it); reversed (an in-tree: one sink) with
    probability 1/2."""
    adj = np.zeros((tasks, tasks), bool)
    for j in range(1, tasks):
        adj[rng.integers(0, j), j] = True
    return adj.T.copy() if rng.random() < 0.5 else adj


def write_mixture(path: str | os.PathLike, seed: int, count: int, max_tasks: int, min_tasks: int = 2,
                  mirror_share: float = 0.0, tree_share: float = 0.0,
                  full_share: float = MIXTURE_FULL_SHARE, ordered_share: float = 0.0) -> Path:
    """`mixture(seed, count, max_tasks, min_tasks, full_share=..., mirror_share=..., tree_share=...,
    ordered_share=...)` as a topology file (its call recorded as "generator")."""
    mix = mixture(seed, count, max_tasks, min_tasks, full_share=full_share, mirror_share=mirror_share,
                  tree_share=tree_share, ordered_share=ordered_share)
    shares = (f", full_share={full_share}" if full_share != MIXTURE_FULL_SHARE else "") + (
        f", mirror_share={mirror_share}" if mirror_share else "") + (
        f", tree_share={tree_share}" if tree_share else "") + (
        f", ordered_share={ordered_share}" if ordered_share else "")
    return write_topology_file(path, mix, generator=f"offload_jax.scenarios.dag.graphs.mixture(seed={seed}, "
                               f"count={count}, max_tasks={max_tasks}, min_tasks={min_tasks}{shares})")
