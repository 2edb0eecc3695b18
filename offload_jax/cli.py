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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except ConfigError as exc:
        parser.exit(2, f"offload-jax {args.command}: error: {exc}\n")


if __name__ == "__main__":
    sys.exit(main())
