"""The list schedule of SPEC "Scenario `dag`": the one home of the dag objective.

Sub-tasks are dispatched one at a time in the order (t=0,u=0), (t=0,u=1), ..., (t=1,u=0), ...
(`dispatch_order`); each reserves its input transfers, its processor and its result transfer before
the next one is dispatched. A `Partial` is the schedule of a prefix of that order for a batch of
placements (any leading axes): the `free_at` of every resource, the finish time and site of every
dispatched sub-task, and each user's latency and energy so far. `dispatch` extends it by one
sub-task, so placements that share a prefix share its schedule (the exact searches expand the
placement tree level by level with it).

Bit-for-bit reproducibility. A placement's objective must be the same float32 number whichever
program computes it (enumeration, pruned search, evaluation, a batch of 1 or of 1000): the pruned
searches compare their values with each other. XLA contracts a * b + c into a fused multiply-add
when both land in one kernel and turns x / broadcast(y) into x * (1 / y), both depending on
fusion. So every quotient is computed once per state in `tables` as a true division (`_div`), the
schedule then only adds, compares and selects, and the few products of the objective (energy,
weights) are rounded on their own before they are added (`_sum_of_products`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from offload_jax.scenarios.dag.config import DagParams
from offload_jax.scenarios.dag.state import DagState

LOCAL, EDGE, CLOUD = 0, 1, 2
NUM_SITES = 3


def dispatch_order(users: int, tasks: int) -> list[tuple[int, int]]:
    """(u, t) of every slot in dispatch order: t-major, then users."""
    return [(u, t) for t in range(tasks) for u in range(users)]


def _div(num: jax.Array, den: jax.Array) -> jax.Array:
    """num / den as an IEEE division whatever the broadcasting (see the module docstring)."""
    shape = jnp.broadcast_shapes(jnp.shape(num), jnp.shape(den))
    return num / jax.lax.optimization_barrier(jnp.broadcast_to(den, shape))


def _sum_of_products(*pairs: tuple[jax.Array, jax.Array]) -> jax.Array:
    """a1 * b1 + a2 * b2 + ... (left to right), each product rounded on its own: no fused multiply-add.

    XLA removes optimization barriers before it fuses, and LLVM contracts an add of a product into
    an FMA; a select between the product and 0 (kept unless the product is not finite, which it
    always is here) sits between them and keeps them apart (tests/test_dag_schedule.py checks it).
    """
    total = None
    for a, b in pairs:
        product = a * b
        product = jnp.where(jnp.isfinite(product), product, 0.0)
        total = product if total is None else total + product
    return total


class Tables(NamedTuple):
    """Per-state durations (seconds) and constants of the schedule, computed once per state."""

    real: jax.Array  # (U, T) bool, slot holds a sub-task
    adj: jax.Array  # (U, T, T) bool
    has_in: jax.Array  # (U, T) bool, in_bits > 0
    has_out: jax.Array  # (U, T) bool, out_bits > 0
    compute: jax.Array  # (U, T, 3) cycles / f of each site
    cycles: jax.Array  # (U, T)
    in_up: jax.Array  # (U, T) in_bits / rate_up
    in_backhaul: jax.Array  # (U, T) in_bits / backhaul_rate + cloud_delay
    out_backhaul: jax.Array  # (U, T)
    out_down: jax.Array  # (U, T) out_bits / rate_down
    edge_up: jax.Array  # (U, T, T) edge_bits / rate_up
    edge_backhaul: jax.Array  # (U, T, T)
    edge_down: jax.Array  # (U, T, T)
    local_energy_per_cycle: jax.Array  # (U,) kappa * f_local^2, J / cycle


def tables(state: DagState, params: DagParams) -> Tables:
    """The schedule's tables of one state (unbatched; vmap for a batch)."""
    f = jnp.stack([state.f_local, jnp.broadcast_to(state.f_edge, state.f_local.shape),
                   jnp.broadcast_to(state.f_cloud, state.f_local.shape)], axis=-1)  # (U, 3)
    compute = _div(state.cycles[:, :, None], f[:, None, :])
    up, down = state.rate_up[:, None], state.rate_down[:, None]
    tau = state.cloud_delay

    def backhaul(bits):
        return _div(bits, state.backhaul_rate) + tau

    return Tables(
        real=state.cycles > 0, adj=state.adj, has_in=state.in_bits > 0, has_out=state.out_bits > 0,
        compute=compute, cycles=state.cycles,
        in_up=_div(state.in_bits, up), in_backhaul=backhaul(state.in_bits),
        out_backhaul=backhaul(state.out_bits), out_down=_div(state.out_bits, down),
        edge_up=_div(state.edge_bits, up[..., None]), edge_backhaul=backhaul(state.edge_bits),
        edge_down=_div(state.edge_bits, down[..., None]),
        local_energy_per_cycle=params.kappa * (state.f_local * state.f_local))


class Partial(NamedTuple):
    """The schedule of a dispatched prefix, for a batch of placements (leading axes "...")."""

    free_local: jax.Array  # (..., U) free_at of each device's processor
    free_up: jax.Array  # (..., U) free_at of each uplink
    free_down: jax.Array  # (..., U) free_at of each downlink
    free_edge: jax.Array  # (...) free_at of the shared edge processor
    finish: jax.Array  # (..., U, T) finish time of dispatched sub-tasks (0 before)
    site: jax.Array  # (..., U, T) int8, site of dispatched slots (0 before)
    latency: jax.Array  # (..., U) latest finish / arrival at the device so far
    up_time: jax.Array  # (..., U) summed uplink transmission durations
    down_time: jax.Array  # (..., U) summed downlink transmission durations
    local_cycles: jax.Array  # (..., U) cycles run on the device


def empty(users: int, tasks: int, batch_shape: tuple[int, ...] = ()) -> Partial:
    """The schedule before any dispatch."""
    z = jnp.zeros((*batch_shape, users), jnp.float32)
    return Partial(free_local=z, free_up=z, free_down=z, free_edge=jnp.zeros(batch_shape, jnp.float32),
                   finish=jnp.zeros((*batch_shape, users, tasks), jnp.float32),
                   site=jnp.zeros((*batch_shape, users, tasks), jnp.int8), latency=z, up_time=z, down_time=z,
                   local_cycles=z)


def _get(a: jax.Array | tuple, *index) -> jax.Array:
    """a[..., *index] for static or traced integer indices; of a split field (`split`: nested tuples,
    static indices) the element itself."""
    if isinstance(a, tuple):
        for i in index:
            a = a[i]
        return a
    return a[(Ellipsis, *index)]


def _set(a: jax.Array | tuple, value: jax.Array, *index) -> jax.Array | tuple:
    """a with a[..., *index] = value; of a split field a new tuple with that element replaced."""
    if isinstance(a, tuple):
        i, rest = index[0], index[1:]
        return (*a[:i], _set(a[i], value, *rest) if rest else value, *a[i + 1:])
    return a.at[(Ellipsis, *index)].set(value)


def split(users: int, tasks: int, batch_shape: tuple[int, ...] = ()) -> Partial:
    """`empty` with every per-user and per-slot field split into its own array of the batch's shape
    (nested tuples: field[u] or field[u][t]), for a dispatch order unrolled with static indices
    (`run`): the schedule is then elementwise over the batch, no slice updates (`stacked` joins it)."""
    z = jnp.zeros(batch_shape, jnp.float32)
    per_user = (z,) * users
    return Partial(free_local=per_user, free_up=per_user, free_down=per_user, free_edge=z,
                   finish=((z,) * tasks,) * users,
                   site=((jnp.zeros(batch_shape, jnp.int8),) * tasks,) * users,
                   latency=per_user, up_time=per_user, down_time=per_user, local_cycles=per_user)


def stacked(p: Partial, batch_shape: tuple[int, ...]) -> Partial:
    """A split schedule (`split`) as `empty`'s arrays: (..., U) and (..., U, T)."""
    def stack(field):
        if not isinstance(field, tuple):
            return jnp.broadcast_to(field, batch_shape)
        return jnp.stack([stack(f) for f in field], axis=-1 if not isinstance(field[0], tuple) else -2)

    return Partial(*(stack(field) for field in p))


def _move(p: Partial, u, src, dst, t0, d_up, d_backhaul, d_down, go) -> tuple[jax.Array, Partial]:
    """Move user u's data from site `src` to `dst` starting at `t0`, hop by hop (SPEC); `go` is False
    when there is nothing to move (no data, or src == dst): it then arrives at t0 and uses nothing.
    The d_* are this datum's hop durations. Returns (arrival, updated schedule)."""
    free_up, free_down = _get(p.free_up, u), _get(p.free_down, u)
    up = go & (src == LOCAL)
    up_end = jnp.maximum(t0, free_up) + d_up
    t1 = jnp.where(up, up_end, t0)
    t2 = jnp.where(go & ((src == CLOUD) | (dst == CLOUD)), t1 + d_backhaul, t1)
    down = go & (dst == LOCAL)
    down_end = jnp.maximum(t2, free_down) + d_down
    arrival = jnp.where(down, down_end, t2)
    p = p._replace(
        free_up=_set(p.free_up, jnp.where(up, up_end, free_up), u),
        up_time=_set(p.up_time, _get(p.up_time, u) + jnp.where(up, d_up, 0.0), u),
        free_down=_set(p.free_down, jnp.where(down, down_end, free_down), u),
        down_time=_set(p.down_time, _get(p.down_time, u) + jnp.where(down, d_down, 0.0), u))
    return arrival, p


class Slot(NamedTuple):
    """What dispatching sub-task (u, t) reads of a state's tables (leading axes: per state or per node)."""

    real: jax.Array  # () bool
    has_in: jax.Array
    in_up: jax.Array
    in_backhaul: jax.Array
    has_out: jax.Array
    out_backhaul: jax.Array
    out_down: jax.Array
    cycles: jax.Array
    compute: jax.Array  # (3,)
    pred: jax.Array  # (T,) bool: adj[u, :, t]
    edge_up: jax.Array  # (T,) of the edges i -> t
    edge_backhaul: jax.Array
    edge_down: jax.Array


def slot(tab: Tables, u, t) -> Slot:
    return Slot(real=tab.real[u, t], has_in=tab.has_in[u, t], in_up=tab.in_up[u, t],
                in_backhaul=tab.in_backhaul[u, t], has_out=tab.has_out[u, t],
                out_backhaul=tab.out_backhaul[u, t], out_down=tab.out_down[u, t], cycles=tab.cycles[u, t],
                compute=tab.compute[u, t], pred=tab.adj[u, :, t], edge_up=tab.edge_up[u, :, t],
                edge_backhaul=tab.edge_backhaul[u, :, t], edge_down=tab.edge_down[u, :, t])


def dispatch(tab: Tables, p: Partial, u, t, site: jax.Array) -> Partial:
    """Dispatch sub-task (u, t) (static or traced indices) on `site` (int array of the batch shape):
    SPEC steps 1-3. A padding slot reserves nothing; its site is recorded (searches keep only site 0
    there)."""
    return dispatch_slot(slot(tab, u, t), p, u, t, site)


def dispatch_slot(sl: Slot, p: Partial, u, t, site: jax.Array) -> Partial:
    """`dispatch` from the slot's data `sl` (whose leading axes broadcast against the batch's)."""
    site = site.astype(jnp.int8)
    # 1. Inputs: the device's input from time 0, then each predecessor's output in increasing i.
    ready, p = _move(p, u, LOCAL, site, 0.0, sl.in_up, sl.in_backhaul, 0.0, sl.has_in & (site != LOCAL))

    def predecessor(i, carry):
        ready, p = carry
        edge = _get(sl.pred, i)
        src = _get(p.site, u, i)
        arrival, p = _move(p, u, src, site, _get(p.finish, u, i), _get(sl.edge_up, i),
                           _get(sl.edge_backhaul, i), _get(sl.edge_down, i), edge & (src != site))
        return jnp.maximum(ready, jnp.where(edge, arrival, 0.0)), p

    carry = (jnp.broadcast_to(ready, site.shape), p)
    if isinstance(t, int):  # a tree level: static indices, one fused kernel
        for i in range(t):
            carry = predecessor(i, carry)
        ready, p = carry
    else:
        ready, p = jax.lax.fori_loop(0, t, predecessor, carry)
    # 2. The processor: the device's or the shared edge's after its free_at; the cloud at once.
    on_local, on_edge = sl.real & (site == LOCAL), sl.real & (site == EDGE)
    free_local = _get(p.free_local, u)
    free = jnp.where(site == LOCAL, free_local, jnp.where(site == EDGE, p.free_edge, 0.0))
    c = sl.compute
    duration = jnp.where(site == LOCAL, c[..., LOCAL], jnp.where(site == EDGE, c[..., EDGE], c[..., CLOUD]))
    finish = jnp.maximum(ready, free) + duration
    latency = jnp.maximum(_get(p.latency, u), jnp.where(sl.real, finish, 0.0))
    local_cycles = _get(p.local_cycles, u) + jnp.where(on_local, sl.cycles, 0.0)
    p = p._replace(
        free_local=_set(p.free_local, jnp.where(on_local, finish, free_local), u),
        free_edge=jnp.where(on_edge, finish, p.free_edge), local_cycles=_set(p.local_cycles, local_cycles, u),
        finish=_set(p.finish, finish, u, t), site=_set(p.site, site, u, t))
    # 3. The result back to the device.
    arrival, p = _move(p, u, site, LOCAL, finish, 0.0, sl.out_backhaul, sl.out_down,
                       sl.has_out & (site != LOCAL))
    latency = jnp.maximum(latency, jnp.where(sl.has_out, arrival, 0.0))
    return p._replace(latency=_set(p.latency, latency, u))


# Schedules are unrolled where speed at small batches matters (`unrolls`: local search, the heuristics'
# normalizers, candidates scored at decision time) up to this many slots (U * T). XLA's compile time
# grows faster than the unrolled program: the objective of 30 placements compiled in 1.8 / 2.8 /
# 5.7 / 15.1 s at T = 8 / 10 / 12 / 14 unrolled (1.4 s looped at T = 10), local search at T = 14 in
# over 10 minutes.
UNROLL_MAX_SLOTS = 10


def unrolls(slots: int) -> bool:
    """Whether schedules of this many slots (U * T) are unrolled where speed at small batches matters
    (the heuristics, candidates scored at decision time): `UNROLL_MAX_SLOTS`."""
    return slots <= UNROLL_MAX_SLOTS


def run(tab: Tables, x: jax.Array, unroll: bool = False) -> Partial:
    """The whole schedule of placements x (..., U, T) for one state's tables: a loop of `dispatch` on
    `empty`'s arrays, or with `unroll` the dispatch order unrolled with static indices on a split
    schedule (`split`): elementwise arithmetic over the batch of placements, no slice updates. Both
    do the same operations in the same order: the same numbers (tests/test_dag_schedule.py).

    Unrolled is faster where it was measured alone (T = 10, the 2-core CPU,
    benchmarks/profile_objective.py): 0.12 vs 0.54 us a schedule over 8,192, one state's 30
    candidates 62 vs 214 us, local search at batch 1 112 vs 366 us. But inside the student's training
    step it was slower (12.6 vs 8.3 ms a step; XLA's fusion of the whole step), and its compile time
    grows fast with U * T: not the default; the heuristics' normalizers and local search's candidates
    (`heuristics`) and the candidates scored at decision time (`DagScenario.candidate_values`) take it
    where `unrolls`."""
    users, tasks = tab.real.shape
    batch_shape = x.shape[:-2]
    if unroll:
        p = split(users, tasks, batch_shape)
        for u, t in dispatch_order(users, tasks):
            p = dispatch(tab, p, u, t, _get(x, u, t))
        return stacked(p, batch_shape)

    def step(k, p):
        u, t = k % users, k // users
        return dispatch(tab, p, u, t, _get(x, u, t))

    return jax.lax.fori_loop(0, users * tasks, step, empty(users, tasks, batch_shape))


def energy(local_energy_per_cycle: jax.Array, params: DagParams, p: Partial) -> jax.Array:
    """(..., U) device energy (J): kappa f_local^2 local cycles + p_tx uplink time + p_rx downlink time
    (`local_energy_per_cycle` = `Tables.local_energy_per_cycle`, kappa f_local^2)."""
    return _sum_of_products((local_energy_per_cycle, p.local_cycles), (params.p_tx, p.up_time),
                            (params.p_rx, p.down_time))


class Norm(NamedTuple):
    """1 / L_u(0) and 1 / E_u(0) of one state (all sub-tasks local; 0 for a user without sub-tasks)."""

    inv_latency: jax.Array  # (U,)
    inv_energy: jax.Array  # (U,)


def norm(tab: Tables, params: DagParams, unroll: bool = False) -> Norm:
    """The all-local schedule's normalizers; `unroll`: that schedule as `run` unrolled (the same numbers;
    at batch 1 the loop's 10 iterations cost ~70 us of a ~75 us objective, unrolled ~2 us)."""
    users, tasks = tab.real.shape
    local = run(tab, jnp.zeros((users, tasks), jnp.int8), unroll)
    lat0, en0 = local.latency, energy(tab.local_energy_per_cycle, params, local)
    return Norm(inv_latency=jnp.where(lat0 > 0, 1.0 / jnp.where(lat0 > 0, lat0, 1.0), 0.0),
                inv_energy=jnp.where(en0 > 0, 1.0 / jnp.where(en0 > 0, en0, 1.0), 0.0))


def value(params: DagParams, nrm: Norm, latency: jax.Array, en: jax.Array) -> jax.Array:
    """J = mean_u [w_latency L_u / L_u(0) + w_energy E_u / E_u(0)] from per-user (..., U) values."""
    per_user = _sum_of_products((params.w_latency * latency, nrm.inv_latency),
                                (params.w_energy * en, nrm.inv_energy))
    users = per_user.shape[-1]
    total = per_user[..., 0]
    for u in range(1, users):
        total = total + per_user[..., u]
    return total * np.float32(1.0 / users)


def objective_of(tab: Tables, params: DagParams, nrm: Norm, p: Partial) -> tuple[jax.Array, jax.Array,
                                                                                   jax.Array]:
    """(J (...), latency (..., U), energy (..., U)) of a (partial or complete) schedule."""
    en = energy(tab.local_energy_per_cycle, params, p)
    return value(params, nrm, p.latency, en), p.latency, en


def objective(params: DagParams, state: DagState, x: jax.Array,
              unroll: bool = False) -> tuple[jax.Array, jax.Array, jax.Array]:
    """SPEC objective of placements x (..., U, T) of ONE state: (J (...), latency, energy (..., U));
    `unroll`: their schedules and the all-local one (`norm`) as `run` unrolled (the same numbers)."""
    tab = tables(state, params)
    return objective_of(tab, params, norm(tab, params, unroll), run(tab, x, unroll))


def batch_objective(params: DagParams, state: DagState, x: jax.Array, unroll: bool = False):
    """`objective` for a batch of states (n, ...) and their placements (n, *extra, U, T) (each state's
    tables built once for all its placements)."""
    return jax.vmap(functools.partial(objective, unroll=unroll), in_axes=(None, 0, 0))(params, state, x)
