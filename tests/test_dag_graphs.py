"""Synthetic training graphs (graphs.mixture), topological relabeling and topology-file writing."""

import collections
import json

import jax
import numpy as np
import pytest

from offload_jax import cli
from offload_jax.config import ConfigError
from offload_jax.scenarios.dag import config as dag_config
from offload_jax.scenarios.dag import graphs


def _adj(g) -> np.ndarray:
    adj = np.zeros((g.tasks, g.tasks), bool)
    for i, j in g.edges:
        adj[i, j] = True
    return adj


def _is_topological(adj: np.ndarray, order: np.ndarray) -> bool:
    position = np.empty(len(order), int)
    position[order] = np.arange(len(order))
    return all(position[i] < position[j] for i, j in zip(*np.nonzero(adj), strict=True))


def test_random_topological_orders_are_topological_and_vary():
    adj = np.asarray(graphs.layered(jax.random.key(3), 9, 0.6, 0.5, 2)[0])
    rng = np.random.default_rng(0)
    orders = {tuple(graphs.random_topological_order(adj, rng)) for _ in range(50)}
    assert len(orders) > 5
    for order in orders:
        order = np.asarray(order)
        assert sorted(order) == list(range(9)) and _is_topological(adj, order)
        relabeled = graphs.relabel(adj, order)
        assert relabeled.sum() == adj.sum() and not np.tril(relabeled).any()
        # the same graph: edge (order[a], order[b]) of adj is edge (a, b) of the relabeled one
        assert all(adj[order[a], order[b]] for a, b in zip(*np.nonzero(relabeled), strict=True))
    with pytest.raises(ValueError, match="not a topological order"):
        graphs.relabel(adj, np.arange(9)[::-1])


def test_mixture_graphs_are_valid_varied_and_prefix_stable():
    mix = graphs.mixture(7, 300, 6, 2)
    sizes = collections.Counter(g.tasks for g in mix)
    assert set(sizes) == set(range(2, 7))
    assert 0.4 < sizes[6] / len(mix) < 0.6  # full_share 0.5
    late_source = 0
    for g in mix:
        assert all(0 <= i < j < g.tasks for i, j in g.edges) and len(set(g.edges)) == len(g.edges)
        indegree = _adj(g).sum(axis=0)
        sources = np.flatnonzero(indegree == 0)
        late_source += bool(sources.max() > np.flatnonzero(indegree > 0).min()) if (indegree > 0).any() else 0
    assert late_source > 15  # the random topological order moves sources past non-sources
    edges = [len(g.edges) for g in mix if g.tasks == 6]
    assert min(edges) <= 5 and max(edges) >= 10  # knobs drawn per graph: chains and trees to dense graphs
    assert graphs.mixture(7, 50, 6, 2) == mix[:50]  # graph k depends on (seed, k) only
    assert graphs.mixture(8, 50, 6, 2) != mix[:50]
    assert {g.tasks for g in graphs.mixture(0, 20, 6, 6)} == {6}
    with pytest.raises(ValueError, match="min_tasks"):
        graphs.mixture(0, 5, 4, 5)
    with pytest.raises(ValueError, match="count"):
        graphs.mixture(0, 0, 4)
    for seed in (-1, 2**32, 1.5):  # a JAX key keeps 32 bits: a larger seed would repeat another's graphs
        with pytest.raises(ConfigError, match="seed must be an integer in"):
            graphs.mixture(seed, 5, 4)


def test_mirrored_mixture_swaps_sources_and_sinks():
    """mirror_share = 1: each graph is the same draw with its edges reversed (its sources the original's
    sinks, its in-degrees the original's out-degrees), renumbered in a topological order; 0 changes
    nothing; a share outside [0, 1] is refused."""
    mix, mirrored = graphs.mixture(3, 60, 7, 2), graphs.mixture(3, 60, 7, 2, mirror_share=1.0)
    assert graphs.mixture(3, 60, 7, 2, mirror_share=0.0) == mix
    for g, m in zip(mix, mirrored, strict=True):
        assert g.tasks == m.tasks and len(g.edges) == len(m.edges)
        assert all(0 <= i < j < m.tasks for i, j in m.edges)
        a, b = _adj(g), _adj(m)
        assert sorted(a.sum(axis=1)) == sorted(b.sum(axis=0))  # out-degrees became in-degrees
        assert sorted(a.sum(axis=0)) == sorted(b.sum(axis=1))
    half = graphs.mixture(3, 60, 7, 2, mirror_share=0.5)
    changed = sum(h != g for h, g in zip(half, mix, strict=True))
    assert 10 < changed < 50
    with pytest.raises(ValueError, match=r"mirror_share must be in \[0, 1\], got 1.5"):
        graphs.mixture(3, 5, 7, mirror_share=1.5)


def test_ordered_share_keeps_the_layer_order():
    """ordered_share = 1: each graph is the same draw (its degrees) numbered in its layer order: its
    sources first, as the layered graphs drawn per state are; 0 changes nothing; a share outside
    [0, 1] is refused."""
    mix, ordered = graphs.mixture(5, 80, 8, 2), graphs.mixture(5, 80, 8, 2, ordered_share=1.0)
    assert graphs.mixture(5, 80, 8, 2, ordered_share=0.0) == mix
    renumbered = 0
    for g, o in zip(mix, ordered, strict=True):
        assert o.tasks == g.tasks and len(o.edges) == len(g.edges)
        assert all(0 <= i < j < o.tasks for i, j in o.edges)
        a, b = _adj(g), _adj(o)
        assert sorted(a.sum(axis=0)) == sorted(b.sum(axis=0))
        assert sorted(a.sum(axis=1)) == sorted(b.sum(axis=1))
        sources = np.flatnonzero(b.sum(axis=0) == 0)
        assert np.array_equal(sources, np.arange(len(sources)))  # sources first
        renumbered += g != o
    assert renumbered > 20
    with pytest.raises(ValueError, match=r"ordered_share must be in \[0, 1\], got -0.1"):
        graphs.mixture(5, 5, 7, ordered_share=-0.1)


def test_tree_share_replaces_graphs_by_random_trees_of_their_size():
    """tree_share = 1: every graph is a tree of the mixture's size (n - 1 edges, connected, one source
    or one sink), out-trees and in-trees both, in a topological order; 0 changes nothing; a share
    outside [0, 1] is refused."""
    mix, trees = graphs.mixture(4, 80, 8, 2), graphs.mixture(4, 80, 8, 2, tree_share=1.0)
    assert graphs.mixture(4, 80, 8, 2, tree_share=0.0) == mix
    kinds = set()
    for g, t in zip(mix, trees, strict=True):
        assert t.tasks == g.tasks and len(t.edges) == t.tasks - 1
        assert all(0 <= i < j < t.tasks for i, j in t.edges)
        a = _adj(t)
        ins, outs = a.sum(axis=0), a.sum(axis=1)
        out_tree = (ins <= 1).all() and (ins == 0).sum() == 1
        in_tree = (outs <= 1).all() and (outs == 0).sum() == 1
        assert out_tree or in_tree
        if t.tasks >= 3 and out_tree != in_tree:
            kinds.add("out" if out_tree else "in")
    assert kinds == {"out", "in"}
    with pytest.raises(ValueError, match=r"tree_share must be in \[0, 1\], got -0.1"):
        graphs.mixture(3, 5, 7, tree_share=-0.1)


def test_topology_file_round_trip_and_cli(tmp_path, capsys):
    mix = graphs.mixture(1, 30, 6)
    path = dag_config.write_topology_file(tmp_path / "mix.json", mix, generator="test")
    assert dag_config.read_topology_file(str(path)) == mix
    assert json.loads(path.read_text())["generator"] == "test"
    out = tmp_path / "cli.json"
    assert cli.main(["topologies", "--out", str(out), "--count", "30", "--tasks", "6", "--seed", "1"]) == 0
    assert dag_config.read_topology_file(str(out)) == mix
    assert "30 graphs" in capsys.readouterr().out
    # a dag system reads it: every graph has <= T sub-tasks
    cfg = dag_config.DagConfig(tasks=6, topology="file", topology_file=str(out)).validate()
    assert len(cfg.static().graphs) == 30
    with pytest.raises(SystemExit):
        cli.main(["topologies", "--out", str(out), "--tasks", "4", "--min-tasks", "5"])
    assert "--min-tasks (5) must be <= --tasks (4)" in capsys.readouterr().err
    assert dag_config.read_topology_file(str(out)) == mix  # the refused command left the file alone
    with pytest.raises(ConfigError):
        cli._cmd_topologies(type("A", (), {"min_tasks": 2, "tasks": 4, "seed": -1, "count": 3,
                                           "out": str(out)})())
