"""A run's specification, its result file, and what the tables read from results."""

from __future__ import annotations

import csv
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codistill.config import ROLES

STUDY_SPLITS = ("val", "test")


RESULT_VERSION = 1


class NotAResultError(ValueError):
    """A file in a results folder is not a study result; the message names it."""


@dataclass(frozen=True)
class RunSpec:
    """One run: a file key, a row label, and its overrides of ``params.yaml``."""

    key: str
    label: str
    seed: int
    overrides: dict[str, Any] = field(default_factory=dict)


def run_key(name: str, seed: int) -> str:
    """The key of ``name``'s run at ``seed``: its result file's stem and its folder's name."""
    return f"{name}-seed{seed}"


def result_path(results: Path, key: str) -> Path:
    """The result file of the run ``key`` under the folder ``results``."""
    return results / f"{key}.json"


@dataclass(frozen=True)
class Scoring:
    """How a run is scored: its reported score averages the last ``score_last`` checkpoints.

    Every checkpoint (``train.checkpoint_every``) is scored on the validation split for the
    learning curve; the last ``score_last`` are also scored on every split of ``splits``.
    """

    score_last: int = 1
    splits: tuple[str, ...] = STUDY_SPLITS

    def __post_init__(self) -> None:
        if self.score_last < 1:
            raise ValueError(f"score_last: {self.score_last} must be at least 1")


def read_result(path: Path) -> dict[str, Any] | None:
    """A finished run's result, or None if there is none."""
    return json.loads(path.read_text()) if path.is_file() else None


def read_curves(path: Path) -> list[dict[str, float]]:
    """The trainer's logged rows (losses, direction shares, learning rates) as numbers."""
    if not path.is_file():
        return []
    with path.open() as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def mean_scores(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """MIoU and per-class IoU of each student, averaged over checkpoint scores."""
    merged = {}
    for role in ROLES:
        per_class = zip(*(e[role]["per_class_iou"] for e in entries), strict=True)
        merged[role] = {
            "miou": statistics.fmean(e[role]["miou"] for e in entries),
            "per_class_iou": [
                None if None in values else statistics.fmean(values) for values in per_class
            ],
        }
    return merged


def miou_by_seed(runs: list[dict[str, Any]], role: str, split: str) -> dict[int, float]:
    """Each run's mIoU of ``role`` on ``split``, in points, by seed."""
    return {r["seed"]: 100 * r["scores"][split][role]["miou"] for r in runs}


def seconds_per_step(result: dict[str, Any], cpu: str | None = None) -> float | None:
    """Training seconds per step; None for a run resumed part-way, or made on a CPU not ``cpu``."""
    if result["iterations_this_run"] != result["iterations"]:
        return None
    if cpu is not None and result["machine"].get("cpu") != cpu:
        return None
    return result["train_seconds_this_run"] / result["iterations"]
