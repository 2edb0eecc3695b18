"""The table of README.md from the JSONs here and ../wide_graphs/students.json.

    python summary.py > table.md

Columns: the mean over three seeds of each student's J / J* on the 28 sets of
../wide_graphs/compare.py (random 6,000 steps: wide_graphs' `base0..2`; random 8,000: `r8k0..2`;
confident 6,000: `conf0..2`), and the held-out J / J* of the three sweeps (the training data's last
5,000 states, graphs of the mixture).
"""

import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ARMS = {"random, 6,000 steps": "base", "random, 8,000 steps": "r8k", "confident, 6,000 steps": "conf"}
SWEEPS = {"random, 6,000 steps": "sweep_random_6000.json", "random, 8,000 steps": "sweep_random_8000.json",
          "confident, 6,000 steps": "sweep_confident.json"}


def main() -> None:
    new = json.loads((HERE / "students.json").read_text())
    base = json.loads((HERE.parent / "wide_graphs" / "students.json").read_text())
    mean = {arm: {s: float(np.mean([{**base.get(s, {}), **row}[f"{p}{i}"] for i in range(3)]))
                  for s, row in new.items()} for arm, p in ARMS.items()}
    names = list(ARMS)
    print("| set | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for s in new:
        print(f"| {s} | " + " | ".join(f"{mean[a][s]:.4f}" for a in names) + " |")
    held = {}
    for arm, f in SWEEPS.items():
        sweep = json.loads((HERE / f).read_text())
        held[arm] = (float(np.mean([r["objective_ratio_mean"] for r in sweep["rows"]])),
                     sweep["info"]["timing"]["run_s"])
    print("| held-out (mixture), mean of 3 seeds | " + " | ".join(f"{held[a][0]:.4f}" for a in names) + " |")
    print("| sweep's training time, 3 seeds (s) | " + " | ".join(f"{held[a][1]:.0f}" for a in names) + " |")
    conf, rnd, r8 = (np.array([mean[a][s] for s in new]) for a in ("confident, 6,000 steps",
                                                                    "random, 6,000 steps",
                                                                    "random, 8,000 steps"))
    print()
    print(f"confident - random 6,000: mean {np.mean(conf - rnd):+.4f}, lower on {int(np.sum(conf < rnd))} of "
          f"{len(conf)} sets; confident - random 8,000: mean {np.mean(conf - r8):+.4f}, lower on "
          f"{int(np.sum(conf < r8))}; random 8,000 - 6,000: mean {np.mean(r8 - rnd):+.4f}, lower on "
          f"{int(np.sum(r8 < rnd))}")


if __name__ == "__main__":
    main()
