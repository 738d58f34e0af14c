"""Paired-seed statistics: mean, spread, and the 95 % t-interval of a paired difference."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Interval:
    """The mean paired difference over ``n`` seeds and its two-sided 95 % t-interval."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def separated(self) -> bool:
        """True when the interval excludes 0 (needs at least two pairs)."""
        return self.n >= 2 and (self.low > 0 or self.high < 0)

    def verdict(self) -> str:
        """``gain``, ``loss``, ``no separation``, or ``too few seeds`` below two pairs."""
        if self.n < 2:
            return "too few seeds"
        if not self.separated:
            return "no separation"
        return "gain" if self.mean > 0 else "loss"

    def cell(self) -> str:
        """``+1.23 [+0.40, +2.06]`` (points), or the mean alone below two pairs."""
        if self.n < 2:
            return f"{self.mean:+.2f}"
        return f"{self.mean:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"


def t_quantile_975(df: int) -> float:
    """The 97.5 % quantile of Student's t with ``df`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def paired_interval(ours: dict[int, float], reference: dict[int, float]) -> Interval | None:
    """The 95 % t-interval of ``ours - reference`` over the seeds both have, or None."""
    differences = paired_differences(ours, reference)
    if not differences:
        return None
    n = len(differences)
    mean, std = mean_std(differences)
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    half = t_quantile_975(n - 1) * std / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def paired_differences(ours: dict[int, float], reference: dict[int, float]) -> list[float]:
    """``ours - reference`` seed by seed, over the seeds both have, in seed order."""
    return [ours[s] - reference[s] for s in sorted(set(ours) & set(reference))]
