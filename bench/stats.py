"""Pure figures: percentiles, added latency, ratios. No I/O."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(samples: Sequence[float], q: float) -> float:
    """The nearest-rank percentile ``q`` (0 < q <= 100) of ``samples``.

    Nearest rank (not interpolation) so that a reported p99 is a latency that
    was really observed, as wrk and HDR histograms report them.
    """
    if not samples:
        raise ValueError("percentile: no samples")
    if not 0 < q <= 100:
        raise ValueError(f"percentile: q must be in (0, 100], got {q}")
    ordered = sorted(samples)
    rank = math.ceil(q / 100 * len(ordered))
    return float(ordered[max(rank, 1) - 1])


def added(path: float, baseline: float) -> float:
    """What a path adds on top of the upstream called directly (never below 0)."""
    return max(0.0, path - baseline)


def ratio(ours: float, theirs: float) -> float | None:
    """``ours / theirs``, or None when there is nothing to compare against."""
    if theirs <= 0:
        return None
    return ours / theirs


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("median: no values")
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[mid])
    return (ordered[mid - 1] + ordered[mid]) / 2


def share(part: float, whole: float) -> float:
    """``part`` as a percentage of ``whole`` (0 when ``whole`` is 0)."""
    return 0.0 if whole <= 0 else 100.0 * part / whole
