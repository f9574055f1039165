"""Small statistics helpers shared by the benchmark and its load generator (stdlib only)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by the nearest-rank method; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50 / p95 / p99 / mean / max of durations given in seconds, in milliseconds."""
    ms = [s * 1e3 for s in seconds]
    if not ms:
        return {k: math.nan for k in ("p50", "p95", "p99", "mean", "max")}
    return {
        "p50": round(percentile(ms, 50), 3),
        "p95": round(percentile(ms, 95), 3),
        "p99": round(percentile(ms, 99), 3),
        "mean": round(statistics.fmean(ms), 3),
        "max": round(max(ms), 3),
    }


def ratio(num: float, den: float) -> float:
    return round(num / den, 2) if den > 0 and not math.isnan(num) and not math.isnan(den) else math.nan
