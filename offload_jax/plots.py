"""Small matplotlib helpers (Agg backend, PNG written atomically)."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path

from offload_jax import atomic


def _pyplot():
    import matplotlib  # noqa: PLC0415 (only needed when plotting)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def save_png(fig, path: str | os.PathLike, *, dpi: int = 120) -> Path:
    """Write `fig` as PNG atomically and close it."""
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    _pyplot().close(fig)
    return atomic.write_bytes(path, buf.getvalue())


def bar_chart(values: Mapping[str, float], path: str | os.PathLike, *, ylabel: str, title: str,
              log: bool = False, reference: float | None = None,
              errors: Mapping[str, tuple[float, float]] | None = None, dpi: int = 120) -> Path:
    """One bar per name, value printed on top; `reference` draws a dashed horizontal line;
    `errors[name] = (low, high)` draws an error bar to those absolute values."""
    plt = _pyplot()
    names = list(values)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.75 * len(names)), 4.0))
    bars = ax.bar(names, [values[n] for n in names], color="tab:blue")
    if errors:
        for bar, n in zip(bars, names, strict=True):
            if n in errors:
                lo, hi = errors[n]
                x = bar.get_x() + bar.get_width() / 2
                ax.plot([x, x], [lo, hi], color="black", lw=1)
    for bar, n in zip(bars, names, strict=True):
        v = values[n]
        ax.annotate(f"{v:.3g}", (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom",
                    fontsize=8)
    if reference is not None:
        ax.axhline(reference, color="gray", ls="--", lw=1)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    return save_png(fig, path, dpi=dpi)


def line_chart(x: list, series: Mapping[str, list[float]], path: str | os.PathLike, *, xlabel: str,
               ylabel: str, title: str, logx: bool = False, logy: bool = False,
               reference: float | None = None, errors: Mapping[str, list[float]] | None = None,
               dpi: int = 120) -> Path:
    """One line per series over a shared x axis; `reference` draws a dashed horizontal line;
    `errors[name]` (one value per x) draws +- error bars on that series; NaN values leave gaps."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.5))
    for i, (name, ys) in enumerate(series.items()):
        ls = ("-", "--", ":")[(i // 10) % 3]  # the color cycle has 10 colors: keep the 11th+ distinct
        if errors and name in errors:
            ax.errorbar(x, ys, yerr=errors[name], marker="o", ls=ls, capsize=3, label=name)
        else:
            ax.plot(x, ys, marker="o", ls=ls, label=name)
    if reference is not None:
        ax.axhline(reference, color="gray", ls="--", lw=1)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return save_png(fig, path, dpi=dpi)


def quality_time_plane(points: Mapping[str, tuple[float, float]], path: str | os.PathLike, *, xlabel: str,
                       ylabel: str, title: str, dpi: int = 120, top: float = 2.0) -> Path:
    """One labeled point per name at (time, quality), time on a log axis; the dashed line marks the
    optimum's quality (1). Where learning wins: points low and to the left. Qualities above `top` are
    drawn on the top edge as triangles, their value in the label (the interesting region stays readable)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.5))
    ceiling = min(top, max(y for _, y in points.values()) * 1.02)
    for name, (x, y) in points.items():
        clipped = y > ceiling
        ax.scatter([x], [min(y, ceiling)], s=30, marker="^" if clipped else "o")
        label = f"{name} ({y:.2f}, off scale)" if clipped else name
        ax.annotate(label, (x, min(y, ceiling)), textcoords="offset points",
                    xytext=(4, -10 if clipped else 4), fontsize=8)
    ax.axhline(1.0, color="gray", ls="--", lw=1)
    ax.set_ylim(min(0.98, min(y for _, y in points.values()) - 0.02), ceiling + 0.02)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return save_png(fig, path, dpi=dpi)
