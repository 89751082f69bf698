"""The Pareto front of a search, its statistical ties, and the pick of one best recipe.

Each objective value is an :class:`Estimate`: a point value and a 95 % interval. Fractions measured on ``n`` samples
(accuracy, agreement) get a Wilson score interval; a median latency gets the distribution-free interval of the median
from order statistics (ranks ``n/2 ∓ 1.96·√n/2``), and a finalist's re-timed one the range of its round medians
(:func:`modelpress.search.report.round_interval`); a size or count is exact (the interval is the point).

* The front is every point no other point dominates (at least as good on every objective, better on one), on the
  point values.
* Two front points are *tied* when their intervals overlap on every objective: the measurement cannot tell them
  apart, so the report marks them instead of pretending an order.
* :func:`pick_best` reads the objectives in the spec's order as priorities: among the candidates, keep those whose
  interval on the first objective overlaps the best one's (statistically as good), then narrow by the next, and so
  on; what is left is ordered by the point values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Estimate", "dominates", "median_interval", "pareto_front", "pick_best", "ties", "wilson_interval"]

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float

    @classmethod
    def exact(cls, value: float) -> Estimate:
        return cls(float(value), float(value), float(value))

    def overlaps(self, other: Estimate) -> bool:
        return self.low <= other.high and other.low <= self.high


def wilson_interval(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``p`` observed on ``n`` samples."""
    if n <= 0:
        return 0.0, 1.0
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def median_interval(samples: Sequence[float] | np.ndarray, z: float = Z95) -> tuple[float, float]:
    """Distribution-free ~95 % interval of the median: order statistics at ranks ``n/2 ∓ z·√n/2``."""
    s = np.sort(np.asarray(samples, dtype=np.float64).reshape(-1))
    n = s.size
    if n == 0:
        return math.nan, math.nan
    lo = max(0, int(math.floor(n / 2 - z * math.sqrt(n) / 2)) - 1)
    hi = min(n - 1, int(math.ceil(n / 2 + z * math.sqrt(n) / 2)) - 1)
    return float(s[lo]), float(s[max(hi, lo)])


def _better(a: float, b: float, maximize: bool) -> bool:
    return a > b if maximize else a < b


def dominates(a: Sequence[float], b: Sequence[float], maximize: Sequence[bool]) -> bool:
    """``a`` is at least as good as ``b`` on every objective and better on at least one."""
    strictly = False
    for x, y, up in zip(a, b, maximize, strict=True):
        if _better(y, x, up):
            return False
        strictly = strictly or _better(x, y, up)
    return strictly


def pareto_front(points: Mapping[str, Sequence[float]], maximize: Sequence[bool]) -> list[str]:
    """The ids of the non-dominated points, in the mapping's order (equal points are all kept)."""
    return [i for i, p in points.items() if not any(dominates(q, p, maximize) for j, q in points.items() if j != i)]


def ties(estimates: Mapping[str, Sequence[Estimate]], ids: Sequence[str]) -> dict[str, list[str]]:
    """For each id, the others among ``ids`` whose intervals overlap its own on every objective."""
    out: dict[str, list[str]] = {i: [] for i in ids}
    for a in ids:
        for b in ids:
            if a != b and all(x.overlaps(y) for x, y in zip(estimates[a], estimates[b], strict=True)):
                out[a].append(b)
    return out


def pick_best(estimates: Mapping[str, Sequence[Estimate]], ids: Sequence[str], maximize: Sequence[bool]) -> str | None:
    """The best of ``ids`` by objective priority with statistical ties (see the module docstring)."""
    candidates = list(ids)
    if not candidates:
        return None
    for k, up in enumerate(maximize):
        if len(candidates) == 1:
            break
        best = max(candidates, key=lambda i: estimates[i][k].value if up else -estimates[i][k].value)
        candidates = [i for i in candidates if estimates[i][k].overlaps(estimates[best][k])]

    def order(i: str) -> tuple[float, ...]:
        return tuple(-e.value if up else e.value for e, up in zip(estimates[i], maximize, strict=True))

    return min(candidates, key=order)
