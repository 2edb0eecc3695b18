"""Policies: valid placements, optimal == labels, greedy by hand and against a slow reference."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from offload_jax import config, features, models, policies, scenarios
from offload_jax.config import ConfigError
from offload_jax.scenarios.chain import cost, system

# The policy, DROO and evaluation tests share this system and batches of N states, so the
# compiled programs (keyed by function and shape) are reused within one pytest process.
CFG = config.SystemConfig(tasks=4, subcarriers=3)
SCENARIO = scenarios.of(CFG)
N = 256
CHAIN_BASELINES = ["local", "edge", "cloud", "random", "greedy", "optimal_dp", "optimal_enumerate"]
DAG_BASELINES = ["local", "edge", "cloud", "random", "greedy", "local_search", "optimal"]


@functools.cache
def _pool():
    """4096 states of CFG as numpy arrays (one compiled sampler; tests slice it)."""
    states = jax.jit(system.sample, static_argnums=(1, 2))(jax.random.key(0), CFG, 4096)
    return jax.tree.map(np.asarray, states)


def _states(start=0, n=N):
    return jax.tree.map(lambda v: v[start:start + n], _pool())


SMALL_MODEL = config.ModelConfig(hidden=(16,), activation="relu", norm="none")


@functools.cache
def _model_and_stats(seed=0):
    stats = features.compute_stats(jax.jit(features.raw_features)(_states(0)))
    model = models.PlacementMLP(features.num_features(CFG), (CFG.tasks,), SMALL_MODEL,
                                rngs=nnx.Rngs(seed))
    return model, stats


class _Run:
    """Stands in for run_dirs.LoadedRun (same attributes) without touching the disk."""

    def __init__(self, kind="student", seed=0, droo_cfg=None):
        self.model, self.stats = _model_and_stats(seed)
        self.system = CFG
        self.scenario = scenarios.of(CFG)
        self.model_cfg = SMALL_MODEL
        self.meta = {"kind": kind}
        if droo_cfg is not None:
            self.meta["droo"] = droo_cfg.to_dict()


@functools.cache
def _all_policies():
    from offload_jax import droo

    runs = {name: _Run(seed=i) for i, name in enumerate(("teacher", "student_kd", "student_ce"))}
    runs["droo"] = _Run(kind="droo", seed=7, droo_cfg=droo.DROOConfig())
    return {name: policies.make_policy(name, scenario=SCENARIO, runs=runs)
            for name in policies.policy_names(SCENARIO)}


def _baseline(name, scenario=SCENARIO):
    return policies.make_policy(name, scenario=scenario)


def test_every_policy_returns_valid_placements():
    states = _states()
    pols = _all_policies()
    assert list(pols) == [*CHAIN_BASELINES, *policies.LEARNED_NAMES]
    for name, pol in pols.items():
        x = jax.jit(pol.fn)(jax.random.key(1), states)
        assert x.shape == (N, CFG.tasks) and x.dtype == jnp.int8, name
        assert set(np.unique(np.asarray(x))) <= {0, 1, 2}, name
        if name in ("greedy", "droo"):  # a batch of one state works too (scan; learned + candidates)
            x1 = jax.jit(pol.fn)(jax.random.key(1), _states(0, 1))
            np.testing.assert_array_equal(x1, np.asarray(x)[:1], err_msg=name)
        if name in ("teacher", "student_kd", "student_ce", "droo"):
            assert pol.params > 0
        else:
            assert pol.params is None
        assert not pol.host


@jax.jit
def _brute_force(states):
    """Optimal labels by trying every placement (lexicographic order; first minimum wins)."""
    costs = cost.stage_costs(states)
    t_len = cost.num_tasks(costs)
    xs = jnp.asarray(list(itertools.product(range(3), repeat=t_len)), jnp.int32)
    lat = jax.vmap(lambda x: cost.path_latency(costs, jnp.broadcast_to(x, (costs.first.shape[0], t_len))))(xs)
    return xs[jnp.argmin(lat, axis=0)].astype(jnp.int8)


def test_optimal_policies_equal_dataset_labels(tmp_path):
    from offload_jax import dataset

    # Labels by exhaustive enumeration (the dataset's own pipeline), held to both optimal policies.
    dataset.generate(tmp_path / "ds", CFG, N, seed=3, solver="enumerate", progress=False)
    ds = dataset.load(tmp_path / "ds")
    for name in ("optimal_dp", "optimal_enumerate"):
        x = jax.jit(_baseline(name).fn)(jax.random.key(0), ds.states)
        np.testing.assert_array_equal(np.asarray(x), ds.label, err_msg=name)
    np.testing.assert_array_equal(_brute_force(ds.states), ds.label)


HAND = scenarios.of(config.SystemConfig(tasks=3, subcarriers=1))


def _hand_state(cycles, data_bits, f, rate_up, rate_down, backhaul, tau):
    """A batch of one state, every field given by hand (sub-carrier fields are unused by the cost)."""
    f32 = lambda v: jnp.asarray([v], jnp.float32)
    return system.SystemState(
        cycles=f32(cycles), data_bits=f32(data_bits), f_local=f32(f[0]),
        edge_cores_free=jnp.asarray([2], jnp.int32), f_edge=f32(f[1]), f_cloud=f32(f[2]),
        snr=f32([1.0]), subcarrier_free=jnp.asarray([[True]]), rate_up=f32(rate_up),
        rate_down=f32(rate_down), backhaul_rate=f32(backhaul), cloud_delay=f32(tau))


def test_greedy_on_a_hand_built_state():
    # f = (1e9, 4e9, 1e10) Hz; Ru = 1e6, Rd = 2e6, Rb = 1e6 bit/s; tau = 0.1 s.
    state = _hand_state(cycles=[2e9, 1e8, 4e10], data_bits=[1e6, 1e5, 5e6, 1e6], f=(1e9, 4e9, 1e10),
                        rate_up=1e6, rate_down=2e6, backhaul=1e6, tau=0.1)
    # t=0 from local, D=1e6:  local 0 + 2e9/1e9 = 2.0;  edge 1e6/1e6 + 2e9/4e9 = 1.5;
    #                         cloud 1e6*(1/1e6+1/1e6) + 0.1 + 2e9/1e10 = 2.3        -> edge
    # t=1 from edge, D=1e5:   local 1e5/2e6 + 1e8/1e9 = 0.15;  edge 0 + 1e8/4e9 = 0.025;
    #                         cloud 1e5/1e6 + 0.1 + 1e8/1e10 = 0.21                   -> edge
    # t=2 from edge, D=5e6:   local 5e6/2e6 + 4e10/1e9 = 42.5;  edge 0 + 4e10/4e9 = 10;
    #                         cloud 5e6/1e6 + 0.1 + 4e10/1e10 = 9.1                   -> cloud
    x = jax.jit(_baseline("greedy", HAND).fn)(None, state)
    np.testing.assert_array_equal(np.asarray(x), [[1, 1, 2]])
    # Its latency adds the return hop it ignored: 1e6*(1/1e6 + 1/2e6) + 0.1 = 1.6, total 12.225 s.
    np.testing.assert_allclose(jax.jit(cost.latency)(state, x), [1.5 + 0.025 + 9.1 + 1.6], rtol=1e-6)
    # Myopia costs: going to the cloud at t=1 (0.21) keeps the 5e6 bits off the backhaul:
    # (edge, cloud, cloud) = 1.5 + 0.21 + (0 + 4e10/1e10) + 1.6 = 7.31 s, which is the optimum.
    best = jax.jit(_baseline("optimal_dp", HAND).fn)(None, state)
    np.testing.assert_array_equal(np.asarray(best), [[1, 2, 2]])
    np.testing.assert_allclose(jax.jit(cost.latency)(state, best), [7.31], rtol=1e-6)


def test_greedy_ties_go_to_the_lowest_label():
    # No data, no work: local and edge cost 0 at every step, the cloud costs tau -> all local.
    state = _hand_state(cycles=[0.0, 0.0, 0.0], data_bits=[0.0] * 4, f=(1e9, 2e9, 3e9),
                        rate_up=1e6, rate_down=1e6, backhaul=1e6, tau=0.1)
    np.testing.assert_array_equal(np.asarray(jax.jit(_baseline("greedy", HAND).fn)(None, state)), [[0, 0, 0]])


def _greedy_reference(s):
    """Straight from the greedy rule, in float64 Python (one state as a dict of numpy arrays)."""
    ru, rd, rb, tau = (float(s[k]) for k in ("rate_up", "rate_down", "backhaul_rate", "cloud_delay"))
    k = [[0, 1 / ru, 1 / ru + 1 / rb], [1 / rd, 0, 1 / rb], [1 / rb + 1 / rd, 1 / rb, 0]]
    f = [[0, 0, tau], [0, 0, tau], [tau, tau, 0]]
    speed = [float(s["f_local"]), float(s["f_edge"]), float(s["f_cloud"])]
    prev, out = 0, []
    for t in range(len(s["cycles"])):
        d = float(s["data_bits"][t])
        c = [d * k[prev][b] + f[prev][b] + float(s["cycles"][t]) / speed[b] for b in range(3)]
        prev = int(np.argmin(c))
        out.append(prev)
    return out, c


def test_greedy_matches_slow_reference():
    states = _states(N)
    x = np.asarray(jax.jit(_baseline("greedy").fn)(None, states))
    for i in range(N):
        s = {k: v[i] for k, v in states._asdict().items()}
        ref, last_costs = _greedy_reference(s)
        if list(x[i]) != ref:  # only a float32 near-tie may differ
            c = np.sort(last_costs)
            assert c[1] - c[0] < 1e-5 * c[1], (i, list(x[i]), ref)


def test_fixed_site_policies():
    states = _states()
    for name, site in (("local", 0), ("edge", 1), ("cloud", 2)):
        x = _baseline(name)(None, states)
        assert x.dtype == jnp.int8
        np.testing.assert_array_equal(np.asarray(x), np.full((N, CFG.tasks), site, np.int8))


def test_random_is_deterministic_per_key_and_uniform():
    states = _states()
    pol = jax.jit(_baseline("random").fn)
    a, b = np.asarray(pol(jax.random.key(0), states)), np.asarray(pol(jax.random.key(0), states))
    c = np.asarray(pol(jax.random.key(1), states))
    np.testing.assert_array_equal(a, b)
    assert np.mean(a != c) > 0.5  # independent draws differ w.p. 2/3 per sub-task
    shares = np.bincount(a.ravel(), minlength=3) / a.size
    np.testing.assert_allclose(shares, 1 / 3, atol=0.05)  # 1024 draws: 3.4 standard deviations


def test_learned_policy_is_argmax_of_logits():
    model, stats = _model_and_stats(seed=1)
    pol = _all_policies()["student_kd"]  # built from this model (seed 1)
    states = _states()
    x = jax.jit(pol.fn)(None, states)  # compiled already by test_every_policy_returns_valid_placements
    logits = jax.jit(lambda s: model(features.features(s, stats)))(states)
    np.testing.assert_array_equal(np.asarray(x), np.argmax(np.asarray(logits), axis=-1))
    assert pol.params == models.count_params(model)


def test_packed_policy_equals_direct():
    states = _states()
    vec = jax.jit(SCENARIO.pack)(states)
    for name in ("greedy", "random"):
        pol = _baseline(name)
        np.testing.assert_array_equal(jax.jit(policies.packed(pol, SCENARIO))(jax.random.key(1), vec),
                                      jax.jit(pol.fn)(jax.random.key(1), states))


def test_make_policy_errors():
    dag = scenarios.make("dag", {"tasks": 4, "users": 2, "subcarriers": 3})
    with pytest.raises(ConfigError, match="unknown policy 'best' for scenario 'chain'; allowed: local, edge"):
        policies.make_policy("best", scenario=SCENARIO)
    with pytest.raises(ConfigError, match="unknown policy 'optimal_dp' for scenario 'dag'; allowed: local, "
                                          "edge, cloud, random, greedy, local_search, optimal, teacher"):
        policies.make_policy("optimal_dp", scenario=dag)
    with pytest.raises(ConfigError, match="needs a trained run"):
        policies.make_policy("teacher", scenario=SCENARIO)
    with pytest.raises(ConfigError, match="policy 'teacher': run has scenario=chain, tasks=4, subcarriers=3, "
                                          "but the data has scenario=chain, tasks=5, subcarriers=3"):
        policies.make_policy("teacher", scenario=scenarios.make("chain", {"tasks": 5, "subcarriers": 3}),
                             runs={"teacher": _Run()})
    with pytest.raises(ConfigError, match="run has scenario=chain, tasks=4, subcarriers=3, "
                                          "but the data has scenario=dag, users=2, tasks=4, subcarriers=3"):
        policies.make_policy("teacher", scenario=dag, runs={"teacher": _Run()})
    with pytest.raises(ConfigError, match="kind 'droo'"):
        policies.make_policy("droo", scenario=SCENARIO, runs={"droo": _Run()})
    with pytest.raises(ConfigError, match="allowed"):
        policies.parse_policy_names("local,teacher", SCENARIO)
    assert policies.parse_policy_names("all", SCENARIO) == CHAIN_BASELINES
    assert policies.parse_policy_names("all", SCENARIO, learned=True) == [*CHAIN_BASELINES,
                                                                         *policies.LEARNED_NAMES]
    assert policies.parse_policy_names("all", dag) == DAG_BASELINES
    assert policies.parse_policy_names(" greedy,optimal ", dag) == ["greedy", "optimal"]
    with pytest.raises(ConfigError, match=r"--policies: unknown or unsupported \['optimal_dp'\] for scenario "
                                          "'dag'; allowed: local, edge, cloud, random, greedy, local_search, "
                                          "optimal$"):
        policies.parse_policy_names("greedy,optimal_dp", dag)
    assert policies.make_policy("optimal", scenario=dag).host
    assert policies.policy_names(dag)[-2:] == ("student_kd_ls", "student_kd_ls1")
    assert "student_kd_ls" not in policies.policy_names(SCENARIO)
    with pytest.raises(ConfigError, match=r"policy 'student_kd_ls' starts from policy 'student_kd': it needs "
                                          r"runs\['student_kd'\]"):
        policies.make_policy("student_kd_ls", scenario=dag, runs={"teacher": _Run()})
    with pytest.raises(ConfigError, match="policy 'student_kd_ls': run has scenario=chain"):
        policies.make_policy("student_kd_ls", scenario=dag, runs={"student_kd": _Run()})
    with pytest.raises(ConfigError, match="unknown policy 'student_kd_ls' for scenario 'chain'"):
        policies.make_policy("student_kd_ls", scenario=SCENARIO, runs={"student_kd": _Run()})


@pytest.mark.parametrize("name, rounds", [("student_kd_ls", None), ("student_kd_ls1", 1)])
def test_hybrid_is_local_search_from_the_students_placement(name, rounds):
    """student_kd_ls (student_kd_ls1) = the reference local search (tests/dag_reference.py, float64)
    started from the student's placement (for one round): never worse than the student, equal to the
    reference up to near-ties."""
    import dag_reference as ref

    dag = scenarios.make("dag", {"tasks": 4, "users": 2, "subcarriers": 3, "topology": "file",
                                 "topology_file": "/work/shared/data/alibaba_dags.json", "w_energy": 0.5})
    states = dag.sample(jax.random.key(5), dag.params, jnp.arange(24, dtype=jnp.uint32))
    stats = features.compute_stats(jax.jit(features.raw_features)(states))
    model_cfg = config.ModelConfig(hidden=(16,), activation="relu", norm="none")
    run = _Run()
    run.model, run.stats, run.system, run.scenario, run.model_cfg = (
        models.build(model_cfg, dag.cfg, rngs=nnx.Rngs(3)), stats, dag.cfg, dag, model_cfg)
    student = policies.make_policy("student_kd", scenario=dag, runs={"student_kd": run})
    hybrid = policies.make_policy(name, scenario=dag, runs={"student_kd": run})
    assert hybrid.params == student.params
    key = jax.random.key(0)
    x0, x = (np.asarray(jax.jit(p.fn)(key, states)) for p in (student, hybrid))
    j0, j = (np.asarray(dag.objective(dag.params, states, jnp.asarray(v)).value) for v in (x0, x))
    assert np.all(j <= j0) and np.mean(j < j0) > 0.3  # a random student leaves much to improve
    assert np.all(x[np.asarray(states.cycles) == 0] == 0)  # padding slots stay on 0
    if rounds == 1:  # one move at most
        assert np.all((x != x0).reshape(len(x), -1).sum(axis=1) <= 1)
    w = {**ref.DAG_WEIGHT_DEFAULTS, "w_energy": 0.5}
    arrays = {k: np.asarray(v) for k, v in states._asdict().items()}
    for i in range(len(x)):
        d = {k: v[i] for k, v in arrays.items()}
        want = ref.local_search(d, w, x0[i], rounds)
        j_ref, j_mine = ref.objective(d, want, w)[0], ref.objective(d, x[i], w)[0]
        assert np.array_equal(x[i], want) or abs(j_mine - j_ref) <= 1e-5 * j_ref, i


def test_dag_optimal_policy_starts_each_call_from_the_first_pool_size():
    """A hard state grows the exact search's pool; the policy's next call starts small again (the
    labels do not depend on the pool size)."""
    dag = scenarios.make("dag", {"tasks": 3, "users": 1, "subcarriers": 2})
    states = dag.sample(jax.random.key(2), dag.params, jnp.arange(8, dtype=jnp.uint32))
    optimal = dag.baselines()["optimal"]
    first = optimal._solver.cap
    want = np.asarray(optimal(dag.params, None, states))
    optimal._solver.cap = 8 * first  # as a hard state leaves it
    np.testing.assert_array_equal(np.asarray(optimal(dag.params, None, states)), want)
    assert optimal._solver.cap == first  # T = 3: 27 placements never overflow the first pool
    # One state at a time it starts at its own first size (the faster one at batch 1). Recorded by a
    # stand-in solver (a batch-1 program would cost a compile here; test_timing runs the real one, a
    # single-state call against the batch's labels).
    caps = []

    class Recorder:
        cap = 0

        def __call__(self, params, state):
            caps.append(self.cap)
            return jnp.zeros(state.cycles.shape, jnp.int8), None

    optimal._solver = Recorder()
    for n in (1, 8, 1):
        optimal(dag.params, None, jax.tree.map(lambda a, n=n: a[:n], states))
    assert caps == [optimal.ONE_STATE_CAP, first, optimal.ONE_STATE_CAP] and optimal.ONE_STATE_CAP != first
