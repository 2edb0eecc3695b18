"""Score run directories on the sets of compare.py.

    python compare_runs.py OUT.json NAME=RUN_DIR [NAME=RUN_DIR ...]

Results merge into OUT.json ({set: {NAME: J / J*}}); a rerun skips what is there.
"""

import json
import os
import sys

from compare import evaluation_sets

from offload_jax import evaluate as ev


def main() -> None:
    out = sys.argv[1]
    runs = dict(a.split("=", 1) for a in sys.argv[2:])
    res = json.load(open(out)) if os.path.exists(out) else {}
    for name, d in evaluation_sets().items():
        row = res.setdefault(name, {})
        todo = [(k, v) for k, v in runs.items() if k not in row]
        if todo:
            r = ev.evaluate_cli(d, [v for _, v in todo], "", None, progress=False)["runs"]
            for k, v in todo:
                row[k] = r[os.path.basename(os.path.abspath(v))]["objective_ratio_mean"]
        with open(out + ".tmp", "w") as f:
            json.dump(res, f, indent=1)
        os.replace(out + ".tmp", out)
    print("done", out)


if __name__ == "__main__":
    main()
