"""Helpers shared by the experiment scripts: atomic text output, markdown tables, flag parsing."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from offload_jax.config import ConfigError

DPI = 100  # committed plots stay small


def log(script: str, msg: str) -> None:
    print(f"[{script}] {msg}", file=sys.stderr, flush=True)


def md_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table; the first column is left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def parse_numbers(text: str, flag: str, kind: type = float) -> list:
    """Comma-separated numbers of type `kind`; a ConfigError names `flag` on bad input."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        values = [kind(p) for p in parts]
    except ValueError:
        raise ConfigError(f"{flag}: expected comma-separated {kind.__name__} values, got {text!r}") from None
    if not values:
        raise ConfigError(f"{flag}: give at least one value")
    return values


def load_avg() -> float | None:
    """1-minute load average (the machine is shared; timings depend on it)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def numpy_p50_us(student, scenario, states: int = 100, rounds: int = 30) -> float:
    """Batch-1 p50 (us) of a numpy student (`export_runtime`) over `states` of `scenario`, `rounds` times."""
    import time

    import jax
    import numpy as np

    indices = jax.numpy.arange(states, dtype=jax.numpy.uint32)
    sample = scenario.sample(jax.random.key(0), scenario.params, indices)
    packed = np.asarray(scenario.pack(sample))
    for v in packed:  # warm up
        student(v)
    times = []
    clock = time.perf_counter
    for _ in range(rounds):
        for v in packed:
            t0 = clock()
            student(v)
            times.append(clock() - t0)
    return float(np.median(times) * 1e6)
