"""Exact labels by pruned search: a level-synchronous branch and bound over a batch's placement trees.

The tree is the one `search.enumerate_one` walks (levels = sub-tasks in dispatch order, 3 children
per node, prefix schedules shared through `schedule.dispatch`), but each level keeps only the nodes
that may still hold the label: a node is dropped when a lower bound on the J of every leaf below it
exceeds its state's incumbent J, or equals it while every such leaf is lexicographically larger than
the incumbent (the tie rule: nothing that could be the label is ever dropped).

The live nodes of all states of a batch share one pool (each node knows its state), compacted after
every level into a fixed size, so the search is one static-shape program for a CPU or a GPU whose
work follows the batch's total frontier, not its largest one: a few states with wide frontiers
borrow the room the others leave. A state whose survivors overflow the pool is reported, and the
`Solver` searches it again with a larger pool or, past a memory budget, as several jobs that each
cover a subtree (a prefix of fixed sites) and share one incumbent: the labels never depend on the
pool sizes, and no state needs more memory than the budget.

Lower bounds (each never exceeds the float32 J that the leaves' own schedule computes):
* the prefix's: each user's latency and energy so far only grow as sub-tasks are added (the same
  floats, added and maxed: monotone), so J of the prefix's schedule is a bound exactly;
* the remaining work's, ignoring contention: every undispatched sub-task j can start on site s no
  earlier than its dispatched predecessors' data can be there (`Node.earliest`), its processor is
  free and its device input is up; it then runs and is followed by the chains of its successors and
  its result's way back, each at its best site (`Bounds.tail`); every undispatched sub-task costs at
  least its cheapest energy. Computed with other float roundings, this bound is scaled by
  (1 - BOUND_SLACK) (float32 sums of <= 3 T terms are off by far less).
The incumbent starts as the greedy placement and improves at every level by greedily completing each
state's most promising node ("dives"), valued by the same schedule.
"""

from __future__ import annotations

import collections
import functools
import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from offload_jax import shapes
from offload_jax.scenarios.dag import heuristics, schedule, search
from offload_jax.scenarios.dag.config import DagParams
from offload_jax.scenarios.dag.schedule import LOCAL, NUM_SITES, Norm, Partial, Tables
from offload_jax.scenarios.dag.state import DagState

BOUND_SLACK = np.float32(2.0**-15)  # ~3e-5 relative
INT_MAX = np.iinfo(np.int32).max


class Bounds(NamedTuple):
    """Per-state constants of the remaining-work bound (contention ignored: each is a least time)."""

    move: jax.Array  # (U, T, T, 3, 3) time to move edge i -> j's data from site a to site b
    tail: jax.Array  # (U, T, 3) least time from starting j on site s to the end of j's descendants
    in_ready: jax.Array  # (U, T, 3) least arrival time of j's device input on site s
    energy_left: jax.Array  # (L + 1, U) least energy of the sub-tasks dispatched at levels >= k


def _hops(up, backhaul, down) -> jax.Array:
    """(..., 3, 3) least time of a move from site a to site b given its hop durations (...)."""
    z = jnp.zeros_like(up)
    return jnp.stack([jnp.stack([z, up, up + backhaul], -1), jnp.stack([down, z, backhaul], -1),
                      jnp.stack([backhaul + down, backhaul, z], -1)], -2)


def bounds(tab: Tables, params: DagParams) -> Bounds:
    """The bound's constants of one state."""
    users, tasks = tab.real.shape
    move = _hops(tab.edge_up, tab.edge_backhaul, tab.edge_down)  # (U, T, T, 3, 3)
    zero = jnp.zeros_like(tab.out_down)
    ret = jnp.where(tab.has_out[..., None], _hops(zero, tab.out_backhaul, tab.out_down)[..., :, LOCAL], 0.0)
    tail = jnp.zeros((users, tasks, NUM_SITES), jnp.float32)
    for t in range(tasks - 1, -1, -1):  # successors have larger slots
        via = jnp.min(move[:, t] + tail[:, :, None, :], axis=-1)  # (U, T(k), 3(s)): t on s, then k at best
        succ = jnp.max(jnp.where(tab.adj[:, t, :, None], via, 0.0), axis=1)  # (U, 3)
        tail_t = tab.compute[:, t] + jnp.maximum(ret[:, t], succ)
        tail = tail.at[:, t].set(jnp.where(tab.real[:, t, None], tail_t, 0.0))
    in_ready = jnp.where(tab.has_in[..., None], _hops(tab.in_up, tab.in_backhaul, zero)[..., LOCAL, :], 0.0)
    local_e = tab.local_energy_per_cycle[:, None] * tab.cycles
    remote_e = (params.p_tx * jnp.where(tab.has_in, tab.in_up, 0.0)
                + params.p_rx * jnp.where(tab.has_out, tab.out_down, 0.0))
    least_e = jnp.where(tab.real, jnp.minimum(local_e, remote_e), 0.0)  # (U, T)
    order = schedule.dispatch_order(users, tasks)
    per_level = jnp.stack([jnp.zeros(users).at[u].set(least_e[u, t]) for u, t in order])  # (L, U)
    left = jnp.concatenate([jnp.cumsum(per_level[::-1], axis=0)[::-1], jnp.zeros((1, users))], axis=0)
    return Bounds(move=move, tail=tail, in_ready=in_ready, energy_left=left)


class Node(NamedTuple):
    """Search nodes: the prefix's schedule and, per sub-task and site, the least time its dispatched
    predecessors' data can be there (its earliest possible start on that site)."""

    sched: Partial
    earliest: jax.Array  # (..., U, T, 3)


class Result(NamedTuple):
    label: jax.Array  # (n, U, T) int8
    objective: jax.Array  # (n,) float32, J of the label
    overflow: jax.Array  # (n,) bool: the job lost survivors to a full pool; its label is not certified
    frontier: jax.Array  # (L,) int32 nodes kept after each level, over the batch (what the pool needs)
    index: jax.Array  # (n,) int32 lexicographic index of the label


class Jobs(NamedTuple):
    """What each of a batch's searches covers (leading axis n). Without jobs, job k is state k's whole
    tree. A job's `prefix` fixes the sites of the first levels (-1: free), so several jobs can split one
    state's tree; jobs with the same `group` (the batch position of their group's first job) search the
    same state and share their incumbent at every level. Each job starts from the better of its greedy
    placement and (`j`, `index`), the J and lexicographic index of a placement of its state found before
    (inf, INT_MAX: none). An inactive job searches nothing (padding of a batch)."""

    prefix: jax.Array  # (n, L) int8
    active: jax.Array  # (n,) bool
    j: jax.Array  # (n,) float32
    index: jax.Array  # (n,) int32
    group: jax.Array  # (n,) int32

    @staticmethod
    def whole(n: int, levels: int) -> Jobs:
        return Jobs(jnp.full((n, levels), -1, jnp.int8), jnp.ones((n,), bool),
                    jnp.full((n,), jnp.inf, jnp.float32), jnp.full((n,), INT_MAX, jnp.int32),
                    jnp.arange(n, dtype=jnp.int32))


class _PerState(NamedTuple):
    tab: Tables
    nrm: Norm
    bnd: Bounds


class _Level(NamedTuple):
    """What one level of the search reads of a state (gathered per node: only this, not the tables)."""

    slot: schedule.Slot  # the dispatched sub-task (u, t)
    succ: jax.Array  # (T,) bool adj[u, t, :]
    moves: jax.Array  # (3, T, 3): t's output from site a to successor j on site b
    local_energy_per_cycle: jax.Array  # (U,)
    nrm: Norm
    energy_left: jax.Array  # (U,) after this level
    tail: tuple  # per user: (m_u, 3) of the slots pending after this level
    in_ready: tuple
    real: tuple  # per user: (m_u,)


def _pending_slices(users: int, tasks: int, level: int) -> list[slice | None]:
    """Per user, the slots still to dispatch after `level` dispatches (consecutive), or None."""
    out = []
    for u in range(users):
        ts = [t for v, t in schedule.dispatch_order(users, tasks)[level:] if v == u]
        out.append(slice(ts[0], ts[-1] + 1) if ts else None)
    return out


def _level_data(ps: _PerState, u: int, t: int, level: int) -> _Level:
    """One state's `_Level` for dispatching (u, t) as the `level`-th sub-task (0-based)."""
    users, tasks = ps.tab.real.shape
    pend = [sl for sl in _pending_slices(users, tasks, level + 1) if sl is not None]
    users_pending = [v for v, sl in enumerate(_pending_slices(users, tasks, level + 1)) if sl is not None]
    return _Level(
        slot=schedule.slot(ps.tab, u, t), succ=ps.tab.adj[u, t], moves=jnp.moveaxis(ps.bnd.move[u, t], 1, 0),
        local_energy_per_cycle=ps.tab.local_energy_per_cycle, nrm=ps.nrm,
        energy_left=ps.bnd.energy_left[level + 1],
        tail=tuple(ps.bnd.tail[v, sl] for v, sl in zip(users_pending, pend, strict=True)),
        in_ready=tuple(ps.bnd.in_ready[v, sl] for v, sl in zip(users_pending, pend, strict=True)),
        real=tuple(ps.tab.real[v, sl] for v, sl in zip(users_pending, pend, strict=True)))


def lower_bound(params: DagParams, lv: _Level, nodes: Node, level: int) -> jax.Array:
    """(n,) lower bound on J of every leaf below each node after `level` dispatches; `lv` holds the
    nodes' own states' data of this level (leading axis n)."""
    p = nodes.sched
    users, tasks = p.site.shape[-2:]
    en = schedule.energy(lv.local_energy_per_cycle, params, p)
    exact = schedule.value(params, lv.nrm, p.latency, en)
    pend = [(v, sl) for v, sl in enumerate(_pending_slices(users, tasks, level)) if sl is not None]
    if not pend:
        return exact
    latency = p.latency
    n = p.free_edge.shape[0]
    for k, (v, sl) in enumerate(pend):
        m = sl.stop - sl.start
        free = jnp.stack([jnp.broadcast_to(p.free_local[:, v, None], (n, m)),
                          jnp.broadcast_to(p.free_edge[:, None], (n, m)), jnp.zeros((n, m))], axis=-1)
        start = jnp.maximum(jnp.maximum(nodes.earliest[:, v, sl], free), lv.in_ready[k])  # (n, m, 3)
        end = jnp.where(lv.real[k], jnp.min(start + lv.tail[k], axis=-1), 0.0)  # (n, m)
        latency = latency.at[:, v].max(jnp.max(end, axis=-1))
    strong = schedule.value(params, lv.nrm, latency, en + lv.energy_left) * (1 - BOUND_SLACK)
    return jnp.maximum(exact, strong)


def _expand(lv: _Level, nodes: Node, u: int, t: int) -> Node:
    """Every node (leading axis n) -> its 3 children (3n, node-major); `lv` is per child (3n)."""
    n = nodes.earliest.shape[0]
    parents = jax.tree.map(lambda a: jnp.repeat(a, NUM_SITES, axis=0), nodes)
    site = jnp.tile(jnp.arange(NUM_SITES, dtype=jnp.int8), n)
    sched = schedule.dispatch_slot(lv.slot, parents.sched, u, t, site)
    site_of = site.astype(jnp.int32)[:, None, None, None]
    moves = jnp.take_along_axis(lv.moves, site_of, axis=1)[:, 0]  # (3n, T, 3): to each successor and site
    arrive = jnp.where(lv.succ[:, :, None], sched.finish[:, u, t, None, None] + moves, 0.0)
    return Node(sched, parents.earliest.at[:, u].max(arrive))


def _segment_best(j: jax.Array, lex: jax.Array, owner: jax.Array, states: int, is_sorted: bool = True
                  ) -> tuple[jax.Array, jax.Array]:
    """Per state, the least (J, lex) among its entries (owner: state of each entry; ties: least lex)."""
    best = jax.ops.segment_min(j, owner, num_segments=states, indices_are_sorted=is_sorted)
    best_lex = jax.ops.segment_min(jnp.where(j == best[owner], lex, INT_MAX), owner, num_segments=states,
                                   indices_are_sorted=is_sorted)
    return best, best_lex


def _share(incumbent: tuple[jax.Array, jax.Array], group: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Every job gets its group's best incumbent (the jobs of a group search one state)."""
    j, i = _segment_best(*incumbent, group, group.shape[0], is_sorted=False)
    return j[group], i[group]


def _dive(params: DagParams, per_state: _PerState, kids: Node, key: jax.Array, kid_owner: jax.Array,
          level: int, dives: int, incumbent: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """Complete each state's `dives` live children of least bound `key` greedily; return the per-state
    incumbent (J, lex index), replaced where a completion beats it."""
    n = incumbent[0].shape[0]
    picks = []
    for _ in range(dives):
        least = jax.ops.segment_min(key, kid_owner, num_segments=n, indices_are_sorted=True)
        first = jnp.where(jnp.isfinite(key) & (key == least[kid_owner]), jnp.arange(key.shape[0]), INT_MAX)
        pick = jax.ops.segment_min(first, kid_owner, num_segments=n, indices_are_sorted=True)
        picks.append(pick)
        key = key.at[pick].set(jnp.inf, mode="drop")
    pick = jnp.stack(picks, axis=1)  # (n, dives)
    has = pick < INT_MAX
    start = jax.tree.map(lambda a: a[jnp.where(has, pick, 0)], kids.sched)

    def complete(ps: _PerState, q: Partial):
        done = jax.vmap(lambda q: heuristics.greedy_complete(ps.tab, params, ps.nrm, q, level))(q)
        return schedule.objective_of(ps.tab, params, ps.nrm, done)[0], search.lex_index(done.site)

    j, i = jax.vmap(complete)(per_state, start)  # (n, dives)
    j, i = jax.vmap(search._first_minimum)(jnp.where(has, j, jnp.inf), i)
    better = search._better(j, i, *incumbent)
    return jnp.where(better, j, incumbent[0]), jnp.where(better, i, incumbent[1])


def _compact(kids: Node, keep: jax.Array, kid_owner: jax.Array, size: int, last: int):
    """The kept children in the first slots of a pool of `size`, in order (grouped by state); free
    slots belong to state `last` and are dead. Returns (nodes, owner, alive)."""
    count = jnp.sum(keep)
    slot_of = jnp.where(keep, jnp.cumsum(keep) - 1, size)
    nodes = jax.tree.map(lambda a: jnp.zeros((size, *a.shape[1:]), a.dtype).at[slot_of].set(a, mode="drop"),
                         kids)
    alive = jnp.arange(size) < count
    owner = jnp.full((size,), last, jnp.int32).at[slot_of].set(kid_owner, mode="drop")
    return nodes, jnp.where(alive, owner, last), alive


def search_batch(params: DagParams, states: DagState, pool: tuple[int, ...], dives: int = 2,
                 jobs: Jobs | None = None) -> Result:
    """Branch and bound for a batch of n jobs (`jobs`; default: state k's whole tree for each k);
    `pool[k]` is the number of nodes kept after level k (over the batch). Jittable (`pool` and `dives`
    static). A job that loses nodes to a full pool is flagged in `overflow`; the others are exact (jobs
    are independent but for their pool room and their group's incumbent)."""
    n, users, tasks = states.cycles.shape
    order = schedule.dispatch_order(users, tasks)
    if len(pool) != len(order) - 1:
        raise ValueError(f"pool needs one size per level but the last ({len(order) - 1}), got {len(pool)}")
    if jobs is None:
        jobs = Jobs.whole(n, len(order))

    def prepare(s):
        tab = schedule.tables(s, params)
        nrm = schedule.norm(tab, params)
        x = heuristics.greedy_from(tab, params, nrm)
        j = schedule.objective_of(tab, params, nrm, schedule.run(tab, x))[0]
        return _PerState(tab, nrm, bounds(tab, params)), j, search.lex_index(x)

    per_state, j_inc, i_inc = jax.vmap(prepare)(states)
    given = search._better(jobs.j, jobs.index, j_inc, i_inc)
    j_inc, i_inc = _share((jnp.where(given, jobs.j, j_inc), jnp.where(given, jobs.index, i_inc)), jobs.group)
    owner = jnp.arange(n, dtype=jnp.int32)
    nodes = Node(schedule.empty(users, tasks, (n,)), jnp.zeros((n, users, tasks, NUM_SITES), jnp.float32))
    alive = jobs.active
    overflow = jnp.zeros((n,), bool)
    frontier = []
    for level, (u, t) in enumerate(order):
        kid_owner = jnp.repeat(owner, NUM_SITES)
        lv = jax.vmap(functools.partial(_level_data, u=u, t=t, level=level))(per_state)
        lv = jax.tree.map(lambda a, kid_owner=kid_owner: a[kid_owner], lv)
        kids = _expand(lv, nodes, u, t)
        site = kids.sched.site[:, u, t]
        fixed = jobs.prefix[kid_owner, level]
        ok = jnp.repeat(alive, NUM_SITES) & (lv.slot.real | (site == LOCAL)) & ((fixed < 0) | (site == fixed))
        lb = lower_bound(params, lv, kids, level + 1)
        lex_min = search.lex_index(kids.sched.site)  # undispatched slots hold 0

        def live(incumbent, lb=lb, lex_min=lex_min, kid_owner=kid_owner, ok=ok):
            j, i = incumbent[0][kid_owner], incumbent[1][kid_owner]
            return ok & ~((lb > j) | ((lb == j) & (lex_min > i)))

        if level + 1 == len(order):  # leaves: lb is their J
            keep = live((j_inc, i_inc))
            frontier.append(jnp.sum(keep))
            j_leaf, i_leaf = _segment_best(jnp.where(keep, lb, jnp.inf), lex_min, kid_owner, n)
            better = search._better(j_leaf, i_leaf, j_inc, i_inc)
            j_inc, i_inc = _share((jnp.where(better, j_leaf, j_inc), jnp.where(better, i_leaf, i_inc)),
                                  jobs.group)
            break
        if dives:
            key = jnp.where(live((j_inc, i_inc)), lb, jnp.inf)
            dived = _dive(params, per_state, kids, key, kid_owner, level + 1, dives, (j_inc, i_inc))
            j_inc, i_inc = _share(dived, jobs.group)
        keep = live((j_inc, i_inc))
        frontier.append(jnp.sum(keep))
        lost = keep & (jnp.cumsum(keep) > pool[level])
        overflow = overflow | (jax.ops.segment_max(lost.astype(jnp.int32), kid_owner, num_segments=n,
                                                   indices_are_sorted=True) > 0)
        nodes, owner, alive = _compact(kids, keep, kid_owner, pool[level], n - 1)
    return Result(search.from_lex_index(i_inc, users, tasks), j_inc, overflow, jnp.stack(frontier), i_inc)


def pool_sizes(states: int, users: int, tasks: int, per_state: int) -> tuple[int, ...]:
    """Pool sizes for `states` states: every node while a level has at most `per_state` per state,
    then `per_state` per state."""
    levels = users * tasks
    return tuple(states * min(NUM_SITES ** (k + 1), per_state) for k in range(levels - 1))


# Most nodes a search holds at a level (children: 3x that): bounds memory (~100-400 bytes a node).
POOL_BUDGET = 1 << 18
# Levels a job's prefix grows by when a job too large for the pool is split (3^2 = 9 smaller jobs).
SPLIT_LEVELS = 2


class Solver:
    """Exact labels for batches of states by `search_batch`, growing the pool, then splitting the trees
    that still do not fit it.

    The pool gives each job `cap` nodes on average at each level (every node of the first levels); a call
    searches up to `budget // cap` jobs (at first one per state, its whole tree), so its pool holds at
    most `budget` nodes a level. Jobs that overflow are searched again, the others are done: while `cap` <
    `max_cap` with `growth` times the cap (twice by default; kept for the next batches, so a long job
    compiles the search a few times at most), then by splitting the first overflowing job's tree into the
    3^SPLIT_LEVELS subtrees of its next free levels (its prefix), searched as separate jobs that start
    from the best placement found so far and share their incumbent: a depth-first walk over subtrees that
    needs no more memory, whatever the state. With a `mesh` of D devices, a call's jobs (a multiple of D)
    are cut in D parts, each searched on its device with its own pool. Labels never depend on the cap, the
    budget, the batch or the devices. The default `max_cap` (512 at the default budget) is what T = 12
    settles at; U = 3 x T = 6 labels about 2x faster at 512 (with a few splits per 256 states) than at
    4096 (no splits, but 8x the pool per state to compute).
    """

    def __init__(self, cap: int = 32, dives: int = 2, mesh: jax.sharding.Mesh | None = None,
                 budget: int = POOL_BUDGET, max_cap: int | None = None, growth: int = 2):
        if isinstance(growth, bool) or not isinstance(growth, int) or growth < 2:
            raise ValueError(f"growth must be an integer >= 2, got {growth!r}")
        self.cap, self.dives, self.mesh, self.budget, self.growth = cap, dives, mesh, budget, growth
        self.max_cap = max(1, budget // 512) if max_cap is None else max_cap
        self.kept: np.ndarray | None = None  # (L,) nodes kept after each level, all calls of the last batch
        self._states = 0  # states of the last batch
        self.splits = 0  # jobs split in the last batch

    @property
    def frontier(self) -> np.ndarray | None:
        """(L,) nodes kept after each level per state of the last batch (its reruns included)."""
        return None if self.kept is None else self.kept / self._states

    def _devices(self, n: int) -> int:
        devices = 1 if self.mesh is None else self.mesh.devices.size
        if n % devices:
            raise ValueError(f"a batch of {n} states does not split over {devices} devices")
        return devices

    def _call_size(self, n: int, devices: int) -> int:
        """Jobs a call searches at the current cap (its pool then holds at most `budget` nodes a level): a
        power of two a device, inactive jobs padding the batch's, so that batches of other sizes share
        the compiled search (~25 s a program at T = 10 on a 2-core CPU): a dataset's and the `optimal`
        policy's on another one of another size, say."""
        return devices * max(1, min(shapes.padded_size(n // devices), self.budget // self.cap))

    def __call__(self, params: DagParams, states: DagState) -> tuple[jax.Array, jax.Array]:
        n, users, tasks = states.cycles.shape
        if users * tasks == 1:  # one slot: nothing to search below the root
            return search.solve_enumerate(params, states)
        devices = self._devices(n)
        levels = users * tasks
        best_j = np.full(n, np.inf, np.float32)
        best_i = np.full(n, INT_MAX, np.int32)
        queue = collections.deque((k, ()) for k in range(n))  # jobs: (state, prefix of sites)
        self.kept, self._states, self.splits = np.zeros(levels, np.int64), n, 0
        while queue:
            size = self._call_size(n, devices)
            batch = [queue.popleft() for _ in range(min(size, len(queue)))]
            part, jobs = self._jobs(states, batch, size, devices, levels, best_j, best_i)
            r = self._search(params, part, jobs, devices)
            self.kept += np.asarray(r.frontier, np.int64).reshape(devices, -1).sum(0)
            j, i, over = (np.asarray(a)[:len(batch)] for a in (r.objective, r.index, r.overflow))
            redo = []
            for p, (k, prefix) in enumerate(batch):
                if search._better(j[p], i[p], best_j[k], best_i[k]):
                    best_j[k], best_i[k] = j[p], i[p]
                if over[p]:
                    redo.append((k, prefix))
            if redo:
                if self.cap < self.max_cap:
                    self.cap *= self.growth
                else:
                    (k, prefix), rest = redo[0], redo[1:]
                    grow = min(SPLIT_LEVELS, levels - 1 - len(prefix))
                    tails = itertools.product(range(NUM_SITES), repeat=grow)
                    redo = [(k, prefix + tail) for tail in tails] + rest
                    self.splits += 1
                queue.extendleft(reversed(redo))
        return search.from_lex_index(jnp.asarray(best_i), users, tasks), jnp.asarray(best_j)

    def precompile(self, params: DagParams, states: DagState) -> None:
        """Compile the programs that batches shaped like `states` may need: one per cap from the current
        one up to `max_cap` (past it the Solver splits, with no new shape), so that no compile lands in
        a later call (a timed one, say). The cap itself is left as it is."""
        n, users, tasks = states.cycles.shape
        if users * tasks == 1:
            return
        devices, cap = self._devices(n), self.cap
        none_j, none_i = np.full(n, np.inf, np.float32), np.full(n, INT_MAX, np.int32)
        try:
            while True:
                size = self._call_size(n, devices)
                batch = [(k, ()) for k in range(min(size, n))]
                part, jobs = self._jobs(states, batch, size, devices, users * tasks, none_j, none_i)
                jax.block_until_ready(self._search(params, part, jobs, devices))
                if self.cap >= self.max_cap:
                    break
                self.cap *= self.growth
        finally:
            self.cap = cap

    @staticmethod
    def _jobs(states: DagState, batch: list, size: int, devices: int, levels: int, best_j: np.ndarray,
              best_i: np.ndarray) -> tuple[DagState, Jobs]:
        """The states and `Jobs` of a call of `size` jobs (the batch's, then inactive padding); groups are
        positions within each device's part."""
        idx = np.array([k for k, _ in batch] + [batch[0][0]] * (size - len(batch)))
        prefix = np.full((size, levels), -1, np.int8)
        for p, (_, pre) in enumerate(batch):
            prefix[p, :len(pre)] = pre
        per = size // devices
        group = np.empty(size, np.int32)
        for d in range(devices):
            first: dict[int, int] = {}
            for p in range(d * per, (d + 1) * per):
                group[p] = first.setdefault(int(idx[p]), p - d * per)
        jobs = Jobs(jnp.asarray(prefix), jnp.asarray(np.arange(size) < len(batch)), jnp.asarray(best_j[idx]),
                    jnp.asarray(best_i[idx]), jnp.asarray(group))
        # Gathered on the host: a labeler's batch arrives committed to its mesh, and a committed input
        # is another cache key for `search_jit` than the same shapes uncommitted (the `optimal`
        # policy's): one compile (~15 s on this CPU) serves both, the arrays are the same.
        return jax.tree.map(lambda a: np.asarray(a)[idx], states), jobs

    def _search(self, params: DagParams, states: DagState, jobs: Jobs, devices: int) -> Result:
        n, users, tasks = states.cycles.shape
        pool = pool_sizes(n // devices, users, tasks, self.cap)
        if devices == 1:
            return search_jit(params, states, pool, self.dives, jobs)
        # As host arrays, which jit places part d on device d: a labeler's batch arrives sharded, and the
        # jobs gathered from it come out replicated, a committed layout jit would refuse.
        split = jax.tree.map(lambda a: np.asarray(a).reshape(devices, n // devices, *a.shape[1:]),
                             (states, jobs))
        r = _sharded(self.mesh, pool, self.dives)(params, *split)
        return Result(r.label.reshape(n, users, tasks), r.objective.reshape(n), r.overflow.reshape(n),
                      r.frontier.reshape(-1), r.index.reshape(n))


@functools.partial(jax.jit, static_argnames=("pool", "dives"))
def search_jit(params: DagParams, states: DagState, pool: tuple[int, ...], dives: int = 2,
               jobs: Jobs | None = None) -> Result:
    return search_batch(params, states, pool, dives, jobs)


@functools.lru_cache(maxsize=16)
def _sharded(mesh: jax.sharding.Mesh, pool: tuple[int, ...], dives: int):
    """`search_batch` over (D, n / D) states and jobs, part d on device d (no communication between parts)."""
    axis = mesh.axis_names[0]
    parts = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axis))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return jax.jit(jax.vmap(lambda p, s, j: search_batch(p, s, pool, dives, j), in_axes=(None, 0, 0)),
                   in_shardings=(replicated, parts, parts), out_shardings=parts)
