"""Sizes for arrays that jitted programs take: padded to powers of two, so that calls of many sizes run a
few compiled programs (the dag exact search compiles one in ~25-30 s at T = 10 on a 2-core CPU)."""

from __future__ import annotations


def padded_size(n: int, least: int = 1) -> int:
    """The least power of two >= n and >= `least` (itself a power of two), for n >= 1."""
    if n < 1:
        raise ValueError(f"a size to pad must be >= 1, got {n}")
    return max(least, 1 << (n - 1).bit_length())
