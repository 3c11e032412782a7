"""Confidence intervals, written once for every benchmark: the bias-shifted bootstrap percentile
interval, the paired bootstrap of a difference (and of a ratio of median timings), and Wilson's
interval for a share.

Conventions (RESULTS.md states them per section):
- LEVEL is the coverage, 95%.
- A bootstrap interval is the percentile interval of the resampled statistic shifted by the
  bootstrap's bias estimate (mean of the draws minus the all-samples value). A Fréchet distance
  computed from N samples is biased upwards, so its unshifted percentiles can lie wholly above the
  value; the shift keeps the interval around the point. Distances are clipped at 0.
- A paired difference resamples the same index set in both arms (the same seeds and labels drew
  both), so the shared sampling noise cancels.
- "met" (`verdict`) means the whole interval clears the target; a point beyond it with the interval
  across it is "not resolved".
"""

from __future__ import annotations

import math

import numpy as np

LEVEL = 0.95


def shifted_interval(draws, point: float, level: float = LEVEL, clip: bool = False) -> list[float]:
    """The percentile interval of `draws` shifted by (mean(draws) - point); `clip` keeps it >= 0."""
    draws = np.asarray(draws, dtype=np.float64)
    tail = (1 - level) / 2
    lo, hi = np.quantile(draws, [tail, 1 - tail]) - (draws.mean() - point)
    return [max(float(lo), 0.0) if clip else float(lo), float(hi)]


def percentile_interval(draws, level: float = LEVEL) -> list[float]:
    """The plain percentile interval (for means, whose bootstrap is unbiased)."""
    tail = (1 - level) / 2
    lo, hi = np.quantile(np.asarray(draws, dtype=np.float64), [tail, 1 - tail])
    return [float(lo), float(hi)]


def bootstrap_mean(values, resamples: int = 2000, seed: int = 0, level: float = LEVEL) -> list[float]:
    """Percentile interval of the mean of per-sample `values` over `resamples` resamples."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), (resamples, len(values)))
    return percentile_interval(values[idx].mean(1), level)


def paired_difference(a, b, resamples: int = 2000, seed: int = 0, level: float = LEVEL) -> tuple[float, list[float]]:
    """mean(a) - mean(b) and its paired percentile interval: a[i] and b[i] come from the same sample i."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return float(d.mean()), bootstrap_mean(d, resamples, seed, level)


def ratio_of_medians(a, b, resamples: int = 2000, seed: int = 0, level: float = LEVEL) -> tuple[float, list[float]]:
    """median(a) / median(b) and its paired percentile interval, resampling the index i of a[i] and
    b[i] together: for timings taken in alternation (call i of both under the same machine noise),
    e.g. seconds per step of two implementations (their speed ratio is median(b) / median(a))."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError("ratio_of_medians: two 1-D arrays of the same length >= 2")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), (resamples, len(a)))
    draws = np.median(a[idx], axis=1) / np.median(b[idx], axis=1)
    return float(np.median(a) / np.median(b)), percentile_interval(draws, level)


def wilson(k: float, n: int, level: float = LEVEL) -> list[float]:
    """Wilson's score interval of the share k / n (good near 0 and 1, where the normal one is not)."""
    if n <= 0:
        raise ValueError("wilson: n must be positive")
    z = _z(level)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def _z(level: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + level / 2)


def verdict(interval, op: str, bound: float) -> str:
    """'met' when the whole interval is on the target's side of `bound`, 'missed' when the whole
    interval is on the other side, else 'not resolved' (op is '>=' or '<=')."""
    lo, hi = interval
    if op == ">=":
        return "met" if lo >= bound else "missed" if hi < bound else "not resolved"
    if op == "<=":
        return "met" if hi <= bound else "missed" if lo > bound else "not resolved"
    raise ValueError(f"verdict: op must be '>=' or '<=', not {op!r}")


def fmt_ci(point: float, interval, digits: int = 3, sign: bool = False) -> str:
    """'0.462 [0.417, 0.507]' (with `sign`: '+0.034 [-0.027, +0.095]')."""
    f = f"{{:{'+' if sign else ''}.{digits}f}}"
    return f"{f.format(point)} [{f.format(interval[0])}, {f.format(interval[1])}]"
