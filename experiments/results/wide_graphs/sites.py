"""Site shares of the labels and of each policy on a dag dataset, and the student's worst states.

    python sites.py DATA RUN [RUN ...]

The first run's six worst states (J / J*) are printed with their fields, labels and decisions.
"""

import sys

import jax
import numpy as np

from offload_jax import dataset as dl
from offload_jax import evaluate as ev
from offload_jax import policies as pl


def shares(x: np.ndarray, real: np.ndarray) -> list[float]:
    return [round(float(((x == s) & real).sum() / real.sum()), 3) for s in range(3)]


def main() -> None:
    data, runs = sys.argv[1], sys.argv[2:]
    ds = dl.load(data, max_states=1000)
    sc = ds.scenario
    loaded = ev.load_runs(runs, sc)
    pols = {n: pl.run_policy(r, n) for n, r in loaded.items()}
    for b in ("greedy", "local_search"):
        pols[b] = pl.make_policy(b, scenario=sc)
    st, lab, opt = ds.states, np.asarray(ds.label), np.asarray(ds.objective)
    real = np.asarray(st.cycles) > 0
    print("label", shares(lab, real))
    decided = {}
    for n, p in pols.items():
        fn = p.fn if p.host else jax.jit(p.fn)
        x = decided[n] = np.asarray(fn(jax.random.key(0), st))
        r = np.asarray(sc.objective(sc.params, st, x).value) / opt
        agree = ((x == lab) | ~real).all(axis=(1, 2)).mean()
        print(n, shares(x, real), "ratio", round(float(r.mean()), 4), "exact", round(float(agree), 3),
              "p90", round(float(np.quantile(r, 0.9)), 3), "max", round(float(r.max()), 3))
    x = decided[next(iter(loaded))]
    r = np.asarray(sc.objective(sc.params, st, x).value) / opt
    for i in np.argsort(-r)[:6]:
        names = ("f_local", "f_edge", "edge_cores_free", "rate_up", "rate_down", "backhaul_rate",
                 "cloud_delay")
        fields = {k: float(np.ravel(getattr(st, k)[i])[0]) for k in names}
        print(f"--- state {i} ratio {r[i]:.3f}", {k: f"{v:.3g}" for k, v in fields.items()})
        print("cycles (G)", np.round(np.asarray(st.cycles[i, 0]) / 1e9, 2))
        print("in (Mb)   ", np.round(np.asarray(st.in_bits[i, 0]) / 1e6, 2))
        print("out (Mb)  ", np.round(np.asarray(st.out_bits[i, 0]) / 1e6, 2))
        print("label", lab[i, 0], " decided", x[i, 0])


if __name__ == "__main__":
    main()
