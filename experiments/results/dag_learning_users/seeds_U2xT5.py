"""Two users x 5 on seeds 1 and 2 (data and networks), the pipeline of `dag_learning.py --part users`
with passes that grow with the users, as run from the repository root (the seed-0 run is DIR/U2xT5):

    python experiments/results/dag_learning_users/seeds_U2xT5.py
"""
import sys
from pathlib import Path

sys.path.insert(0, "experiments")
import dag_learning  # noqa: E402

for seed in (1, 2):
    r = dag_learning._pipeline(Path("/tmp/dls_users"), f"U2xT5_seed{seed}", users=2, tasks=5, seed=seed)
    p = r["policies"]
    names = ("teacher", "student_kd", "local_search")
    print(seed, {k: round(p[k]["objective_ratio_mean"], 4) for k in names}, flush=True)
