"""Statistics of paired studies: t-intervals over seeds, a bootstrap over seeds and images, Holm.

Every interval is of a paired difference, ``ours - reference``, in mIoU points; a difference
counts as a gain or a loss only where its interval excludes 0. SciPy is imported where a test
runs, so that the GPU study, whose image has no SciPy, can import the tables' helpers.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np

from codistill.evaluation.metrics import mean_iou

CONFIDENCE = 0.95
RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Interval:
    """The mean paired difference over ``n`` pairs and its two-sided interval."""

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


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def paired_differences(ours: dict[int, float], reference: dict[int, float]) -> list[float]:
    """``ours - reference`` seed by seed, over the seeds both have, in seed order."""
    return [ours[s] - reference[s] for s in sorted(set(ours) & set(reference))]


def paired_interval(
    ours: dict[int, float], reference: dict[int, float], confidence: float = CONFIDENCE
) -> Interval | None:
    """The t-interval of ``ours - reference`` over the seeds both have (None if none)."""
    seeds = sorted(set(ours) & set(reference))
    if not seeds:
        return None
    differences = paired_differences(ours, reference)
    mean = statistics.fmean(differences)
    if len(seeds) < 2:
        return Interval(mean, math.nan, math.nan, 1)
    from scipy import stats

    test = stats.ttest_rel([ours[s] for s in seeds], [reference[s] for s in seeds])
    low, high = test.confidence_interval(confidence)
    return Interval(mean, float(low), float(high), len(seeds))


def paired_p_value(ours: dict[int, float], reference: dict[int, float]) -> float:
    """The two-sided paired t-test p-value of ``ours - reference`` (at least two seeds)."""
    seeds = sorted(set(ours) & set(reference))
    if len(seeds) < 2:
        raise ValueError(f"a paired test needs two seeds or more, got {len(seeds)}")
    from scipy import stats

    return float(stats.ttest_rel([ours[s] for s in seeds], [reference[s] for s in seeds]).pvalue)


def holm_adjusted(p_values: dict[str, float]) -> dict[str, float]:
    """Holm's step-down adjusted p-values of a family of comparisons (SciPy has no Holm).

    The i-th smallest p-value of m is multiplied by m - i + 1, and the adjusted values are
    made non-decreasing in that order and capped at 1.
    """
    order = sorted(p_values, key=p_values.__getitem__)
    adjusted, running = {}, 0.0
    for rank, name in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p_values[name]))
        adjusted[name] = running
    return adjusted


def bootstrap_interval(
    ours: np.ndarray,
    reference: np.ndarray,
    resamples: int = RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> Interval:
    """Percentile interval of the mean mIoU difference, resampling seeds and images together.

    ``ours`` and ``reference`` are S×N×2×K per-image intersection and union counts of the
    same S seeds and N images. Each resample draws S seeds and N images with replacement,
    the same draw for both methods (paired), recomputes every drawn run's mIoU from its
    summed counts, and averages the seed differences. SciPy's ``bootstrap`` resamples one
    level of observations; this one resamples two, since both vary between studies.
    """
    if ours.shape != reference.shape or ours.ndim != 4 or ours.shape[2] != 2:
        raise ValueError(f"expected two equal S×N×2×K arrays, got {ours.shape}, {reference.shape}")
    runs, images = ours.shape[:2]
    generator = np.random.default_rng(seed)
    differences = np.empty(resamples)
    chunk = 1000
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        weights = generator.multinomial(images, np.full(images, 1 / images), size=size)
        drawn = generator.integers(0, runs, size=(size, runs))
        per_run = np.stack(
            [
                mean_iou(np.einsum("bn,snjk->bsjk", weights, counts.astype(np.float64)))
                for counts in (ours, reference)
            ]
        )
        gap = per_run[0] - per_run[1]
        differences[start : start + size] = np.take_along_axis(gap, drawn, axis=1).mean(axis=1)
    observed = mean_iou(ours.sum(axis=1)) - mean_iou(reference.sum(axis=1))
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(100 * differences, [tail, 100 - tail])
    return Interval(float(100 * observed.mean()), float(low), float(high), runs)
