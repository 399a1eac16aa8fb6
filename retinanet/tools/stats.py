"""Confidence intervals for experiment tables: a row's mean over seeds, and the mean paired
difference of two rows that share seeds (seed k: the same initial weights and data order in
both rows, so that the difference cancels what the seed alone decides).

Both use Student's t-distribution over the n values: half-width t(0.975, n - 1) * s / sqrt(n),
s the sample standard deviation. The quantiles are the standard table's (to 3 decimals), so no
statistics package is needed.
"""

from __future__ import annotations

import math
import statistics
from typing import Optional, Sequence

# t(0.975, df): the two-sided 95 % quantile of Student's t for df = 1..30, then a few larger df.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
_T975_LARGE = ((40, 2.021), (60, 2.000), (120, 1.980))
_Z975 = 1.960


def t975(df: int) -> float:
    """t(0.975, df); for df between the tabulated ones, the next smaller df's (a wider interval)."""
    if df < 1:
        raise ValueError(f"df={df}: a confidence interval needs at least 2 values")
    if df <= len(_T975):
        return _T975[df - 1]
    value = _T975[-1]
    for d, t in _T975_LARGE:
        if df >= d:
            value = t
    return _Z975 if df > 10_000 else value


def mean_ci95(values: Sequence[float]) -> tuple[float, Optional[float]]:
    """(mean, 95 % half-width); the half-width is None for fewer than 2 values."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("no values")
    mean = statistics.fmean(vals)
    if len(vals) < 2:
        return mean, None
    return mean, t975(len(vals) - 1) * statistics.stdev(vals) / math.sqrt(len(vals))


def paired_difference(a: dict[int, float], b: dict[int, float]) -> dict:
    """a - b over the seeds both have ({seed: value}): mean, 95 % half-width, the seeds and the
    per-seed differences."""
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    if not diffs:
        return {"diff": None, "ci95": None, "seeds": 0, "per_seed": {}}
    mean, half = mean_ci95(diffs)
    return {"diff": mean, "ci95": half, "seeds": len(seeds), "per_seed": dict(zip(seeds, diffs))}


__all__ = ["mean_ci95", "paired_difference", "t975"]
