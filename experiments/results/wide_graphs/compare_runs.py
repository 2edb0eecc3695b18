"""Score run directories on the sets of compare.py.

    python compare_runs.py OUT.json NAME=RUN_DIR [NAME=RUN_DIR ...]

Results merge into OUT.json ({set: {NAME: J / J*}}); a rerun skips what is there.
"""

from compare import arguments, evaluation_sets, load, score

from offload_jax import atomic


def main() -> None:
    out, run_dirs, res = arguments()
    loaded = load(run_dirs)
    for name, d in evaluation_sets().items():
        row = res.setdefault(name, {})
        row.update(score(d, {k: run for k, run in loaded.items() if k not in row}))
        atomic.write_json(out, res, indent=1)
    print("done", out)


if __name__ == "__main__":
    main()
