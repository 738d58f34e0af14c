"""The analysis a pre-registered plan fixes: primary claims under Holm, the rest without claims.

Every figure comes from the runs' per-image counts (``codistill.study.image_counts``): a run's
mIoU on a split is the mIoU of its summed counts, a class's IoU likewise. For each comparison
and student: the paired t-interval over seeds with its p-value (Holm-adjusted over the primary
family), the two-level bootstrap interval over seeds and images, the per-class IoU
differences, and the mIoU difference with each class left out of the mean.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, replace

import numpy as np

from codistill.evaluation.metrics import mean_iou
from codistill.study.image_counts import ImageCounts
from codistill.study.plan import Comparison, IncompleteStudyError, StudyPlan
from codistill.study.statistics import (
    Interval,
    bootstrap_interval,
    holm_adjusted,
    paired_interval,
    paired_p_value,
)

Runs = dict[str, dict[int, ImageCounts]]  # row -> seed -> that run's counts


@dataclass(frozen=True)
class Outcome:
    """One comparison for one student on the plan's split."""

    comparison: Comparison
    student: str
    reference: str  # the row compared against (``better_of`` resolved)
    interval: Interval
    p_value: float
    bootstrap: Interval
    per_class: dict[str, Interval]  # class -> IoU difference (points), classes seen in all runs
    leave_one_out: dict[str, Interval]  # class left out -> mIoU difference (points)
    adjusted_p: float | None = None  # primary comparisons only

    def largest_gain_class(self) -> str:
        """The class whose IoU difference is the largest (among classes seen in every run)."""
        return max(self.per_class, key=lambda name: self.per_class[name].mean)

    def claim(self, alpha: float) -> str:
        """``gain`` or ``loss`` where the Holm-adjusted p is below ``alpha``, else no claim."""
        if self.adjusted_p is None:
            return "secondary: no claim"
        if self.adjusted_p >= alpha:
            return "no separation"
        return "gain" if self.interval.mean > 0 else "loss"


@dataclass(frozen=True)
class Confirmation:
    """A plan's primary and secondary outcomes."""

    plan: StudyPlan
    primary: tuple[Outcome, ...]
    secondary: tuple[Outcome, ...]


def split_counts(runs: Runs, row: str, seed: int, split: str, student: str) -> np.ndarray:
    """The N×2×K counts of one run on one split for one student."""
    return runs[row][seed].counts[(split, student)]


def run_miou(counts: np.ndarray, leave_out: int | None = None) -> float:
    """The mIoU in points of N×2×K per-image counts summed over the images."""
    return 100 * float(mean_iou(counts.sum(axis=0), leave_out))


def row_mious(runs: Runs, plan: StudyPlan, row: str, split: str, student: str) -> dict[int, float]:
    """Seed -> mIoU (points) of ``row`` on ``split`` for ``student``."""
    return {s: run_miou(split_counts(runs, row, s, split, student)) for s in plan.seeds}


def check_complete(plan: StudyPlan, runs: Runs) -> None:
    """Refuse a study with a run or a split missing, or scored on other images."""
    missing = [
        f"{row} seed {seed}"
        for row in plan.rows
        for seed in plan.seeds
        if seed not in runs.get(row, {})
        or any(
            (split, student) not in runs[row][seed].counts
            for split in (plan.split, *plan.reported)
            for student in plan.students
        )
    ]
    if missing:
        raise IncompleteStudyError(f"{plan.name}: no counts for {', '.join(missing)}")
    for split in (plan.split, *plan.reported):
        first = next(iter(plan.rows))
        expected = runs[first][plan.seeds[0]].ids[split]
        for row in plan.rows:
            for seed in plan.seeds:
                if runs[row][seed].ids[split] != expected:
                    raise IncompleteStudyError(
                        f"{plan.name}: {row} seed {seed} was scored on other {split} images "
                        f"than {first} seed {plan.seeds[0]}"
                    )


def resolve_reference(plan: StudyPlan, runs: Runs, comparison: Comparison, student: str) -> str:
    """The reference row; for ``better_of``, the higher mean mIoU on the first reported split."""
    if comparison.reference is not None:
        return comparison.reference
    chooser = plan.reported[0]

    def mean(row: str) -> float:
        return statistics.fmean(row_mious(runs, plan, row, chooser, student).values())

    return max(comparison.better_of, key=mean)


def class_ious(counts: np.ndarray) -> np.ndarray:
    """Per-class IoU (points) of summed N×2×K counts; NaN for a class with no union."""
    intersection, union = counts.sum(axis=0).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, 100 * intersection / union, np.nan)


def outcome(
    plan: StudyPlan,
    runs: Runs,
    comparison: Comparison,
    student: str,
    class_names: tuple[str, ...],
) -> Outcome:
    """Every figure of one comparison for one student on the plan's split."""
    reference = resolve_reference(plan, runs, comparison, student)
    split = plan.split
    ours = {s: split_counts(runs, comparison.row, s, split, student) for s in plan.seeds}
    theirs = {s: split_counts(runs, reference, s, split, student) for s in plan.seeds}

    def interval_of(score) -> Interval:
        return paired_interval(
            {s: score(ours[s]) for s in plan.seeds}, {s: score(theirs[s]) for s in plan.seeds}
        )

    ious = {s: (class_ious(ours[s]), class_ious(theirs[s])) for s in plan.seeds}
    per_class = {
        name: paired_interval(
            {s: float(ious[s][0][k]) for s in plan.seeds},
            {s: float(ious[s][1][k]) for s in plan.seeds},
        )
        for k, name in enumerate(class_names)
        if not any(np.isnan(ious[s][i][k]) for s in plan.seeds for i in (0, 1))
    }
    leave_one_out = {
        name: interval_of(lambda counts, k=k: run_miou(counts, leave_out=k))
        for k, name in enumerate(class_names)
    }
    return Outcome(
        comparison=comparison,
        student=student,
        reference=reference,
        interval=interval_of(run_miou),
        p_value=paired_p_value(
            {s: run_miou(ours[s]) for s in plan.seeds},
            {s: run_miou(theirs[s]) for s in plan.seeds},
        ),
        bootstrap=bootstrap_interval(
            np.stack([ours[s] for s in plan.seeds]), np.stack([theirs[s] for s in plan.seeds])
        ),
        per_class=per_class,
        leave_one_out=leave_one_out,
    )


def confirm(plan: StudyPlan, runs: Runs, class_names: tuple[str, ...]) -> Confirmation:
    """The plan's analysis of ``runs``: primary outcomes with Holm-adjusted p, then the rest."""
    if len(plan.seeds) < 2:
        raise IncompleteStudyError(f"{plan.name}: a paired test needs two seeds or more")
    check_complete(plan, runs)
    primary = [
        outcome(plan, runs, comparison, student, class_names)
        for comparison in plan.primary
        for student in plan.students
    ]
    # a difference without spread (identical runs) has no p-value: it counts as no evidence
    p_values = {str(i): 1.0 if math.isnan(o.p_value) else o.p_value for i, o in enumerate(primary)}
    adjusted = holm_adjusted(p_values)
    primary = [replace(o, adjusted_p=adjusted[str(i)]) for i, o in enumerate(primary)]
    secondary = tuple(
        outcome(plan, runs, comparison, student, class_names)
        for comparison in plan.secondary()
        for student in plan.students
    )
    return Confirmation(plan, tuple(primary), secondary)
