"""Small-sample statistics for comparing training runs over seeds.

Paired differences with Student-t intervals (the same seeds for both arms),
one-sided bounds for verdicts, and a rank correlation with an exact
permutation p-value: what a study needs to say "A beats B" honestly.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "confidence_interval",
    "finite",
    "holm",
    "one_sided_lower_bound",
    "paired_difference",
    "rank_correlation",
    "t_quantile",
]


def t_quantile(df: int, probability: float = 0.975) -> float:
    """Student t quantile: ``t_quantile(df)`` is the 95% two-sided interval's multiplier.

    Example:
      >>> round(t_quantile(4), 3), round(t_quantile(4, 0.95), 3)
      (2.776, 2.132)
    """
    from scipy.stats import t

    return float(t.ppf(probability, df))


def finite(value: float | None) -> bool:
    """A number that is not NaN/inf (``None``, how JSON stores NaN, is not).

    Example:
      >>> finite(1.0), finite(float("nan")), finite(None)
      (True, False, False)
    """
    return value is not None and bool(np.isfinite(value))


def confidence_interval(values: Sequence[float]) -> dict[str, float]:
    """Mean, sd and the 95% t-interval half-width of ``values`` (one per seed).

    Example:
      >>> ci = confidence_interval([0.70, 0.72, 0.74])
      >>> round(ci["mean"], 2), round(ci["half_width"], 3)
      (0.72, 0.05)
    """
    values = np.asarray(values, np.float64)
    n = values.size
    mean = float(np.mean(values))
    if n < 2:
        return {"mean": mean, "sd": float("nan"), "half_width": float("nan"), "n": n}
    sd = float(np.std(values, ddof=1))
    return {"mean": mean, "sd": sd, "half_width": t_quantile(n - 1) * sd / math.sqrt(n), "n": n}


def paired_difference(values: Sequence[float], baseline: Sequence[float]) -> dict[str, Any]:
    """Mean paired difference ``values - baseline`` (same seeds) with its 95% interval,
    whether that interval excludes 0, and the two-sided paired t-test's p-value.

    Example:
      >>> d = paired_difference([0.64, 0.66, 0.65], [0.59, 0.60, 0.61])  # same 3 seeds
      >>> round(d["mean"], 3), round(d["low"], 3), round(d["high"], 3), d["significant"]
      (0.05, 0.025, 0.075, True)
      >>> round(d["p_value"], 4)
      0.0131
      >>> paired_difference([0.60, 0.62], [0.61, 0.60])["significant"]  # interval contains 0
      False
    """
    diff = np.asarray(values, np.float64) - np.asarray(baseline, np.float64)
    ci = confidence_interval(diff)
    low, high = ci["mean"] - ci["half_width"], ci["mean"] + ci["half_width"]
    significant = bool(finite(ci["half_width"]) and (low > 0 or high < 0))
    return {**ci, "low": low, "high": high, "significant": significant, "p_value": _t_test(ci)}


def _t_test(ci: dict[str, float]) -> float:
    """Two-sided one-sample t-test p-value of mean 0 from ``confidence_interval``'s output."""
    n, mean, sd = ci["n"], ci["mean"], ci["sd"]
    if n < 2:
        return float("nan")
    if sd == 0:  # every difference equal: certain, unless they are all 0
        return 1.0 if mean == 0 else 0.0
    from scipy.stats import t

    return float(2 * t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control, any dependence).

    The ``i``-th smallest of ``m`` p-values is multiplied by ``m - i`` (``i`` from 0),
    made non-decreasing in that order and capped at 1; reject where the adjusted value
    is below the level. NaN p-values (no test) stay NaN and do not count in ``m``.

    Example:
      >>> holm([0.01, 0.04, 0.03, 0.005]).round(3).tolist()
      [0.03, 0.06, 0.06, 0.02]
      >>> holm([0.02, float("nan")]).tolist()
      [0.02, nan]
    """
    p = np.asarray(p_values, np.float64)
    adjusted = np.full(p.shape, np.nan)
    tested = np.flatnonzero(np.isfinite(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = order.size
    scaled = (m - np.arange(m)) * p[order]
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted


def one_sided_lower_bound(differences, confidence: float = 0.95) -> float:
    """Lower one-sided ``confidence`` bound of the mean of paired ``differences`` (Student t).

    A verdict "A beats B" PASSes only when this bound is above 0. Fewer than two
    differences give ``-inf`` (no evidence); identical pipelines give differences of
    exactly 0 and a bound of 0, which does not PASS.

    Example:
      >>> round(one_sided_lower_bound([0.02, 0.03, 0.01, 0.02, 0.02]), 4)
      0.0133
    """
    d = np.asarray(differences, np.float64)
    if d.size < 2:
        return float("-inf")
    spread = float(np.std(d, ddof=1))
    return float(np.mean(d) - t_quantile(d.size - 1, confidence) * spread / math.sqrt(d.size))


def rank_correlation(x, y, alternative: str) -> tuple[float, float]:
    """Spearman's rho of ``x`` and ``y`` and its one-sided permutation p-value.

    ``alternative`` is ``"greater"`` (positive correlation) or ``"less"``. The
    p-value is exact (every pairing enumerated) up to 8 points, otherwise from
    20,000 random pairings with a fixed seed; scipy's default t approximation
    is far off for a handful of points (it gives p ≈ 0 for rho = 1 at n = 5,
    where the exact value is 1/120). Constant input has no rank correlation:
    rho and p are NaN, which no verdict accepts.

    Example:
      >>> rho, p = rank_correlation([1, 2, 3, 4, 5], [2, 4, 5, 7, 9], "greater")
      >>> round(rho, 3), round(p, 4)
      (1.0, 0.0083)
    """
    from scipy import stats

    x, y = np.ravel(np.asarray(x, np.float64)), np.ravel(np.asarray(y, np.float64))
    if alternative not in ("greater", "less"):
        raise ValueError(f"alternative must be 'greater' or 'less', got {alternative!r}")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    # scipy >= 1.15 takes ``rng``; older releases ``random_state``.
    seeding = (
        "rng" if "rng" in inspect.signature(stats.permutation_test).parameters else "random_state"
    )
    fixed = stats.rankdata(x) - (len(x) + 1) / 2

    def rho(ranks, axis):  # Spearman's rho is Pearson's r of the ranks
        ranks = ranks - ranks.mean(axis, keepdims=True)
        scale = np.sqrt((fixed * fixed).sum() * (ranks * ranks).sum(axis))
        return (ranks * fixed).sum(axis) / scale

    # One sample permuted against the fixed other: n! pairings, enumerated when n! <= 20,000.
    result = stats.permutation_test(
        (stats.rankdata(y),),
        rho,
        vectorized=True,
        permutation_type="pairings",
        alternative=alternative,
        n_resamples=20_000,
        **{seeding: np.random.default_rng(0)},
    )
    return float(result.statistic), float(result.pvalue)
