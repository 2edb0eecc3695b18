"""The table of README.md from the JSONs here and ../wide_graphs/students.json.

    python summary.py > table.md

Columns: the mean over three seeds of each student's J / J* on the 28 sets of
../wide_graphs/compare.py (random 6,000 steps at the committed peak learning rate 8e-3: wide_graphs'
`base0..2`; random 8,000: `r8k0..2`; confident 6,000: `conf0..2`; peak rates 1.2e-2 and 1.6e-2:
students_lr.json's `lr0.012_0..2`, `lr0.016_0..2`; batch 256 x 12,000 steps, objective term on 64 states:
students_b256.json's `b256_0..2`), and the held-out J / J* of the sweeps (the
training data's last 5,000 states, graphs of the mixture).
"""

import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ARMS = {"random, 6,000 steps": "base", "random, 8,000 steps": "r8k", "confident, 6,000 steps": "conf",
        "random, lr 1.2e-2": "lr0.012_", "random, lr 1.6e-2": "lr0.016_",
        "random, batch 256 x 12,000": "b256_"}
SWEEPS = {"random, 6,000 steps": "sweep_random_6000.json", "random, 8,000 steps": "sweep_random_8000.json",
          "confident, 6,000 steps": "sweep_confident.json", "random, lr 1.2e-2": "sweep_lr_0.012.json",
          "random, lr 1.6e-2": "sweep_lr_0.016.json",
          "random, batch 256 x 12,000": "sweep_batch256_12000.json"}


def main() -> None:
    new = json.loads((HERE / "students.json").read_text())
    lr = json.loads((HERE / "students_lr.json").read_text())
    for s, row in json.loads((HERE / "students_b256.json").read_text()).items():
        lr.setdefault(s, {}).update(row)
    base = json.loads((HERE.parent / "wide_graphs" / "students.json").read_text())
    scores = {s: {**base.get(s, {}), **lr.get(s, {}), **row} for s, row in new.items()}
    mean = {arm: {s: float(np.mean([row[f"{p}{i}"] for i in range(3)])) for s, row in scores.items()}
            for arm, p in ARMS.items()}
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
    for arm in ("random, lr 1.2e-2", "random, lr 1.6e-2", "random, batch 256 x 12,000"):
        other = np.array([mean[arm][s] for s in new])
        print(f"{arm} - random 6,000 (lr 8e-3): mean {np.mean(other - rnd):+.4f}, lower on "
              f"{int(np.sum(other < rnd))} of {len(rnd)} sets")
    print(f"confident - random 6,000: mean {np.mean(conf - rnd):+.4f}, lower on {int(np.sum(conf < rnd))} of "
          f"{len(conf)} sets; confident - random 8,000: mean {np.mean(conf - r8):+.4f}, lower on "
          f"{int(np.sum(conf < r8))}; random 8,000 - 6,000: mean {np.mean(r8 - rnd):+.4f}, lower on "
          f"{int(np.sum(r8 < rnd))}")


if __name__ == "__main__":
    main()
