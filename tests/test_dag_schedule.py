"""The dag schedule, objective, exact search and heuristics against the slow SPEC reference.

`dag_reference` was written from SPEC.md alone, in float64; the fast code runs in float32, so values
agree to rtol 1e-5 and labels agree except where two placements' J are that close (near-ties).
"""

import functools
import itertools

import dag_reference as ref
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as chain_ref
from hypothesis import given, settings
from hypothesis import strategies as st

from offload_jax import scenarios
from offload_jax.config import SystemConfig
from offload_jax.scenarios.chain import cost, system
from offload_jax.scenarios.dag import heuristics, schedule, search
from offload_jax.scenarios.dag import state as dag_state
from offload_jax.scenarios.dag.config import DagConfig
from offload_jax.scenarios.dag.state import DagState

RTOL = 1e-5
# 10 examples a property (25 before, cut for the default test run's time: every example runs the
# plain-Python reference, exhaustive search over 3^(U*T) placements included)
SETTINGS = settings(max_examples=10, deadline=None, derandomize=True)


def to_state(d: dict) -> DagState:
    """One reference state dict -> an unbatched DagState (float32)."""
    return DagState(**{k: jnp.asarray(np.asarray(d[k]), dtype=jnp.bool_ if k in ("adj", "subcarrier_free")
                                      else jnp.int32 if k == "edge_cores_free" else jnp.float32)
                       for k in DagState._fields})


def weights(w_energy: float) -> dict:
    return {**ref.DAG_WEIGHT_DEFAULTS, "w_energy": w_energy}


def params_of(w_energy: float):
    return DagConfig(w_energy=w_energy).params()


@functools.cache
def _jitted(name: str):
    fns = {"objective": schedule.objective,
           "enumerate": lambda p, s: search.enumerate_one(p, s),
           "greedy": lambda p, s: heuristics.greedy(p, jax.tree.map(lambda a: a[None], s))[0],
           "local_search": lambda p, s: heuristics.local_search(p, jax.tree.map(lambda a: a[None], s))[0]}
    return jax.jit(fns[name])


def random_case(seed: int, users: int, tasks: int, padding: bool) -> dict:
    """A random state with `tasks` slots (with `padding`, 1 to `tasks` of them real): one compiled
    program per (users, tasks) serves every graph size."""
    return ref.random_dag_state(np.random.default_rng(seed), users, tasks, 3, padding=padding,
                                dtype=np.float32)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), users=st.integers(1, 2), padding=st.booleans(),
       w_energy=st.sampled_from([0.0, 0.5]))
def test_objective_equals_the_reference(seed, users, padding, w_energy):
    tasks = 5
    d = random_case(seed, users, tasks, padding)
    rng = np.random.default_rng(seed + 1)
    xs = rng.integers(0, 3, (8, users, tasks))
    xs[0] = 0
    j, lat, en = _jitted("objective")(params_of(w_energy), to_state(d), jnp.asarray(xs, jnp.int8))
    for k, x in enumerate(xs):
        j_ref, l_ref, e_ref = ref.objective(d, x, weights(w_energy))
        np.testing.assert_allclose(float(j[k]), j_ref, rtol=RTOL)
        np.testing.assert_allclose(np.asarray(lat[k]), l_ref, rtol=RTOL)
        np.testing.assert_allclose(np.asarray(en[k]), e_ref, rtol=RTOL)


def _assert_same_or_near_tie(d, x_fast, x_ref, w):
    """Equal placements, or two whose reference J differ by at most rtol (a float32 near-tie)."""
    if not np.array_equal(np.asarray(x_fast), np.asarray(x_ref)):
        j_fast, j_ref = ref.objective(d, np.asarray(x_fast), w)[0], ref.objective(d, np.asarray(x_ref), w)[0]
        np.testing.assert_allclose(j_fast, j_ref, rtol=RTOL)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), users=st.integers(1, 2), padding=st.booleans(),
       w_energy=st.sampled_from([0.0, 0.5]))
def test_exhaustive_search_finds_the_reference_label(seed, users, padding, w_energy):
    d = random_case(seed, users, 4, padding)
    w = weights(w_energy)
    label, j = _jitted("enumerate")(params_of(w_energy), to_state(d))
    label_ref, j_ref = ref.brute_force_label(d, w)
    np.testing.assert_allclose(float(j), j_ref, rtol=RTOL)
    _assert_same_or_near_tie(d, label, label_ref, w)
    assert np.all(np.asarray(label)[~ref.is_real(d)] == 0)


def test_exhaustive_search_value_is_the_objective_of_its_label_bit_for_bit():
    cfg = DagConfig(tasks=3, users=2, topology="layered", w_energy=0.5).validate()
    states = dag_state.sample(jax.random.key(3), cfg.static(), cfg.params(), 32)
    labels, j = jax.jit(search.solve_enumerate)(cfg.params(), states)
    j2 = jax.jit(schedule.batch_objective)(cfg.params(), states, labels)[0]
    np.testing.assert_array_equal(np.asarray(j), np.asarray(j2))


def test_unrolled_and_looped_schedules_are_the_same_numbers():
    """`schedule.run` unrolled on a split schedule and as a loop of slice updates: every field equal,
    bit for bit (the searches compare objectives computed by different programs), two users."""
    users, tasks = 2, 4
    cfg = DagConfig(tasks=tasks, users=users, topology="layered", w_energy=0.5).validate()
    states = dag_state.sample(jax.random.key(5), cfg.static(), cfg.params(), 64)
    xs = jax.random.randint(jax.random.key(6), (64, 8, users, tasks), 0, 3).astype(jnp.int8)

    def schedules(unroll):
        return jax.jit(jax.vmap(lambda s, x: schedule.run(schedule.tables(s, cfg.params()), x, unroll)))(
            states, xs)

    unrolled, looped = schedules(True), schedules(False)
    for name, a, b in zip(schedule.Partial._fields, unrolled, looped, strict=True):
        assert a.shape == b.shape == (64, 8, *np.shape(getattr(schedule.empty(users, tasks), name))), name
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)
    assert np.asarray(unrolled.latency).min() > 0  # real schedules, not two empty ones


def test_unrolled_normalizers_candidates_and_heuristics_are_the_same_numbers(monkeypatch):
    """Where `schedule.unrolls` (U*T <= UNROLL_MAX_SLOTS) the all-local normalizers, the candidates'
    values (`candidate_values`), greedy and local search run unrolled: the looped programs' numbers and
    placements, bit for bit."""
    users, tasks = 2, 4
    cfg = DagConfig(tasks=tasks, users=users, topology="layered", w_energy=0.5).validate()
    scenario = scenarios.of(cfg)
    params = cfg.params()
    states = dag_state.sample(jax.random.key(7), cfg.static(), params, 64)
    xs = jax.random.randint(jax.random.key(8), (64, 8, users, tasks), 0, 3).astype(jnp.int8)
    norms = jax.jit(jax.vmap(lambda s, unroll: schedule.norm(schedule.tables(s, params), params, unroll),
                             in_axes=(0, None)), static_argnums=1)
    for a, b in zip(norms(states, True), norms(states, False), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert schedule.unrolls(users * tasks)
    values = np.asarray(jax.jit(scenario.candidate_values)(params, states, xs))
    np.testing.assert_array_equal(values, np.asarray(jax.jit(scenario.objective)(params, states, xs).value))

    def heuristic_placements():  # new functions: traced anew (jax.jit of the same one reuses its trace)
        jitted = [jax.jit(lambda p, s, f=f: f(p, s)) for f in (heuristics.greedy, heuristics.local_search)]
        loops = jitted[0].lower(params, states).as_text().count("while")
        return loops, [np.asarray(f(params, states)) for f in jitted]

    unrolled_loops, unrolled = heuristic_placements()
    monkeypatch.setattr(schedule, "UNROLL_MAX_SLOTS", 0)
    assert not schedule.unrolls(users * tasks)
    looped_loops, looped = heuristic_placements()
    assert looped_loops > unrolled_loops  # two programs (greedy's normalizers a loop, then not)
    for a, b in zip(unrolled, looped, strict=True):
        np.testing.assert_array_equal(a, b)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), users=st.integers(1, 2), padding=st.booleans(),
       w_energy=st.sampled_from([0.0, 0.5]))
def test_greedy_and_local_search_equal_the_reference(seed, users, padding, w_energy):
    d = random_case(seed, users, 5, padding)
    w = weights(w_energy)
    p, s = params_of(w_energy), to_state(d)
    g = np.asarray(_jitted("greedy")(p, s))
    g_ref = ref.greedy(d, w)
    _assert_same_or_near_tie(d, g, g_ref, w)
    if np.array_equal(g, g_ref):  # local search from the same start
        _assert_same_or_near_tie(d, _jitted("local_search")(p, s), ref.local_search(d, w, g_ref), w)


def test_chain_graph_reproduces_the_chain_latency():
    """U = 1, edges t-1 -> t, w_energy = 0: L is the chain scenario's latency of every placement."""
    t = 4
    cfg = SystemConfig(tasks=t)
    chain_states = system.sample(jax.random.key(7), cfg, 6)
    xs = jnp.asarray(list(itertools.product(range(3), repeat=t)), jnp.int8)
    dag_obj = jax.jit(schedule.objective)
    for i in range(6):
        c = chain_ref.one_state(system.to_numpy(chain_states), i)
        d = {k: np.asarray(v, np.float32) if k not in ("adj", "subcarrier_free", "edge_cores_free")
             else np.asarray(v) for k, v in ref.dag_state_from_chain(c).items()}
        many = jax.tree.map(lambda a, i=i: jnp.broadcast_to(a[i], (len(xs), *a.shape[1:])), chain_states)
        chain_lat = cost.latency(many, xs)
        _, lat, _ = dag_obj(params_of(0.0), to_state(d), xs[:, None, :])
        np.testing.assert_allclose(np.asarray(lat[:, 0]), np.asarray(chain_lat), rtol=RTOL)


def test_local_search_refuses_rounds_below_one():
    with pytest.raises(ValueError, match=r"rounds must be >= 1 or None \(until no change lowers J\), got 0"):
        heuristics.local_search(DagConfig(tasks=3).validate().params(), None, rounds=0)


@pytest.mark.parametrize("users,tasks", [pytest.param(1, 6, marks=pytest.mark.slow), (2, 3)])
def test_local_search_result_is_a_local_optimum_and_beats_greedy(users, tasks):
    cfg = DagConfig(tasks=tasks, users=users, w_energy=0.5).validate()
    states = dag_state.sample(jax.random.key(1), cfg.static(), cfg.params(), 16)
    p = cfg.params()
    g = jax.jit(heuristics.greedy)(p, states)
    ls = jax.jit(heuristics.local_search)(p, states)
    objective = jax.jit(schedule.batch_objective)
    jg, jl = objective(p, states, g)[0], objective(p, states, ls)[0]
    assert np.all(np.asarray(jl) <= np.asarray(jg))
    for i in range(4):
        d = {k: np.asarray(v[i]) for k, v in states._asdict().items()}
        x = np.asarray(ls[i])
        j0 = ref.objective(d, x, weights(0.5))[0]
        for u, t, s in itertools.product(range(users), range(tasks), range(3)):
            y = x.copy()
            y[u, t] = s
            assert ref.objective(d, y, weights(0.5))[0] >= j0 * (1 - RTOL)
