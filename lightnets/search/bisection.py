"""Bisection on a monotone test, shared by the searches that look for a scale with a given cost."""

from __future__ import annotations

from collections.abc import Callable


def bisect_threshold(lo: float, hi: float, passes: Callable[[float], bool], tolerance: float) -> tuple[float, float]:
    """Narrow ``[lo, hi]`` to within ``tolerance`` around the point where ``passes`` turns from true to false
    (true below it, false above: a cost that grows with the value, compared with a budget). Midpoints are
    rounded to 4 decimals, so the values found can be written into configs as they are. Returns ``(lo, hi)``:
    ``passes`` held at every ``lo`` it was asked about and failed at every such ``hi``; the ends given are
    taken as they are, not tested."""
    while hi - lo > tolerance:
        mid = round((lo + hi) / 2, 4)
        lo, hi = (mid, hi) if passes(mid) else (lo, mid)
    return lo, hi
