"""Score run directories on the sets of compare.py.

    python compare_runs.py OUT.json NAME=RUN_DIR [NAME=RUN_DIR ...]

Results merge into OUT.json ({set: {NAME: J / J*}}); a rerun skips what is there.
"""

import os

from compare import arguments, evaluation_sets, save

from offload_jax import evaluate as ev


def main() -> None:
    out, runs, res = arguments()
    for name, d in evaluation_sets().items():
        row = res.setdefault(name, {})
        todo = [(k, v) for k, v in runs.items() if k not in row]
        if todo:
            r = ev.evaluate_cli(d, [v for _, v in todo], "", None, progress=False)["runs"]
            for k, v in todo:
                row[k] = r[os.path.basename(os.path.abspath(v))]["objective_ratio_mean"]
        save(out, res)
    print("done", out)


if __name__ == "__main__":
    main()
