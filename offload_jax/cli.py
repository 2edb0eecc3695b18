"""`offload-jax` command line: thin wrappers over the modules.

Each subcommand has an `_add_<name>(subparsers)` that declares its flags and a
handler that calls into the library.
"""

from __future__ import annotations

import argparse
import sys

from offload_jax.config import ConfigError


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="offload-jax", description="Learned edge computation offloading in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)  # noqa: F841 (filled below)
    # --- subcommands (one _add_* call per subcommand, in pipeline order) ---
    _add_generate(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except ConfigError as exc:
        parser.exit(2, f"offload-jax {args.command}: error: {exc}\n")


def _generate_count(text: str) -> int:
    """argparse type: an integer >= 1 (the error names the flag)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def _add_generate(sub) -> None:
    p = sub.add_parser(
        "generate", help="sample system states, label them exactly, write a sharded dataset",
        description="Sample N system states, label each with its optimal placement and write "
                    "shards + manifest.json to --out. Rerunning the same command resumes.")
    p.add_argument("--out", required=True, help="output directory (created; resumed if it holds this job)")
    p.add_argument("--num-states", type=_generate_count, required=True, help="number of states N")
    p.add_argument("--tasks", type=_generate_count, default=None,
                   help="sub-tasks T (overrides the system's tasks; default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the state stream (0 .. 2**32-1)")
    p.add_argument("--solver", choices=("dp", "enumerate"), default="dp", help="exact solver (default dp)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a system key, e.g. --set backhaul_rate_range=1e6,5e7 (repeatable)")
    p.add_argument("--shard-size", type=_generate_count, default=100_000, help="states per shard")
    p.add_argument("--batch-size", type=_generate_count, default=None,
                   help="most states per device call (default 65536 for dp, 1024 for enumerate, "
                        "per device); changes neither states nor bytes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar and no summary")
    p.set_defaults(handler=_cmd_generate)


def _cmd_generate(args) -> int:
    from offload_jax import dataset
    from offload_jax.config import SystemConfig, parse_overrides

    cfg = SystemConfig().with_overrides(parse_overrides(args.set))
    if args.tasks is not None:
        cfg = cfg.with_overrides({"tasks": args.tasks})
    try:
        dataset.generate(args.out, cfg, args.num_states, args.seed, args.solver,
                         shard_size=args.shard_size, batch_size=args.batch_size,
                         progress=not args.no_progress)
    except dataset.DatasetError as exc:
        print(f"offload-jax generate: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
