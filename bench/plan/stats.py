"""The few statistics the serving simulator needs, on plain lists: numpy's default (linear)
percentile, piecewise-linear interpolation, an even split and a least-squares slope.

The light install (docs/install.md) leaves numpy out: it would be most of its size for these
few functions, each of which costs little beside the simulated run whose requests and steps it
reads (a sort of a run's requests, a few thousand sampled instants).
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float, *, ordered: bool = False) -> float:
    """The q-th percentile (0-100) of `values` as numpy.percentile's default 'linear' method
    gives it, to the last bit: between the order statistics around rank (n − 1)·q/100; NaN
    where there are no values. `ordered`: the values are sorted already (saves the sort)."""
    n = len(values)
    if not n:
        return math.nan
    data = values if ordered else sorted(values)
    rank = (n - 1) * (q / 100)  # numpy's virtual index, computed in the same order
    if rank >= n - 1:
        return float(data[-1])
    if rank < 0:
        return float(data[0])
    i = math.floor(rank)
    low, high, share = data[i], data[i + 1], rank - i
    # numpy's _lerp: from the nearer end, so that the last bit matches its result too.
    if share >= 0.5:
        return float(high - (high - low) * (1 - share))
    return float(low + (high - low) * share)


def interpolate(x: float, xs: Sequence[float], ys: Sequence[float], left: float) -> float:
    """y at x on the piecewise-linear curve through (xs, ys) (xs increasing), as numpy.interp:
    `left` before the first point, the last y after the last."""
    if x < xs[0]:
        return left
    j = bisect.bisect_right(xs, x) - 1
    if j >= len(xs) - 1:
        return ys[-1]
    return ys[j] + (ys[j + 1] - ys[j]) * (x - xs[j]) / (xs[j + 1] - xs[j])


def evenly(start: float, end: float, points: int) -> list[float]:
    """`points` (at least 2) instants evenly spaced from start to end, both included."""
    step = (end - start) / (points - 1)
    return [start + k * step for k in range(points - 1)] + [end]


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The least-squares slope of ys against xs (numpy.polyfit's degree-1 coefficient)."""
    return statistics.linear_regression(xs, ys).slope


def split(values: Sequence[float], parts: int) -> list[list[float]]:
    """`values` cut into `parts` runs of consecutive values, as numpy.array_split cuts them:
    the first len % parts runs one longer."""
    size, extra = divmod(len(values), parts)
    out, start = [], 0
    for k in range(parts):
        end = start + size + (k < extra)
        out.append(list(values[start:end]))
        start = end
    return out
