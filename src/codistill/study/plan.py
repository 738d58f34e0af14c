"""A pre-registered confirmation plan: rows, fresh seeds, schedule, split and the claims to test.

The plan file is the whole study: every row's setting (``train.method`` and dotted overrides
over a shared schedule), the seeds, the checkpoint rule, the scored split and the splits
reported beside it, and the primary comparisons, each made for every student and corrected
together (Holm). Every other pair of rows is a secondary comparison, reported without a
claim (``ours − dml`` stays one, though it may be the primary ``better_of``'s pick). A
comparison's reference is a row, or ``better_of`` several rows: per student, the one
with the higher mean mIoU on the first reported split (``val``), so that choosing the
strongest baseline never reads the scored split.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

from codistill.config import ROLES
from codistill.config.loader import load_yaml_mapping

SPLITS = ("test", "val")  # the prepared splits' names
STUDENTS = ROLES
CHECKPOINT_RULES = ("last",)
CORRECTIONS = ("holm",)
PLAN_KEYS = {
    "name",
    "description",
    "params",
    "rows",
    "seeds",
    "checkpoint",
    "split",
    "reported",
    "students",
    "primary",
    "correction",
    "alpha",
}
COMPARISON_KEYS = {"row", "reference", "better_of"}
NAME = re.compile(r"[A-Za-z0-9._-]+")


class PlanError(ValueError):
    """The plan file is malformed; the message names the file and the key."""


class IncompleteStudyError(ValueError):
    """A run the plan names is missing, or runs were scored on different images."""


@dataclass(frozen=True)
class Comparison:
    """``row`` against ``reference``, or against the better of the rows ``better_of``."""

    row: str
    reference: str | None = None
    better_of: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """``ours − kdcl`` or ``ours − better of (dml, kdcl)``."""
        against = self.reference or f"better of ({', '.join(self.better_of)})"
        return f"{self.row} − {against}"


@dataclass(frozen=True)
class StudyPlan:
    """A confirmation study, fixed before its scored split is read."""

    name: str
    description: str
    params: dict[str, Any]
    rows: dict[str, dict[str, Any]]
    seeds: tuple[int, ...]
    checkpoint: str
    split: str
    reported: tuple[str, ...]
    students: tuple[str, ...]
    primary: tuple[Comparison, ...]
    correction: str
    alpha: float

    def row_overrides(self, row: str) -> dict[str, Any]:
        """The dotted overrides of ``row``: the shared schedule, then the row's own keys."""
        return {**self.params, **self.rows[row]}

    def secondary(self) -> tuple[Comparison, ...]:
        """Every other pair of rows (later − earlier in the plan's order), one per pair."""
        named = {(c.row, c.reference) for c in self.primary if c.reference}
        return tuple(
            Comparison(later, earlier)
            for earlier, later in combinations(self.rows, 2)
            if (later, earlier) not in named and (earlier, later) not in named
        )


def _require(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise PlanError(f"{where}: {message}")


def _choice(data: dict[str, Any], key: str, allowed: tuple[str, ...], where: str) -> str:
    value = data.get(key)
    _require(value in allowed, where, f"{key} must be one of {list(allowed)}, got {value!r}")
    return value


def _strings(value: Any, where: str, key: str) -> tuple[str, ...]:
    _require(
        isinstance(value, list) and value and all(isinstance(v, str) for v in value),
        where,
        f"{key} must be a non-empty list of names, got {value!r}",
    )
    return tuple(value)


def _comparison(entry: Any, rows: dict[str, Any], where: str) -> Comparison:
    _require(isinstance(entry, dict), where, f"a primary comparison must be a mapping: {entry!r}")
    unknown = set(entry) - COMPARISON_KEYS
    _require(not unknown, where, f"unknown key(s) {sorted(unknown)} in a primary comparison")
    _require(
        ("reference" in entry) != ("better_of" in entry),
        where,
        f"the primary comparison {entry!r} needs either reference or better_of, not both",
    )
    better_of = _strings(entry["better_of"], where, "better_of") if "better_of" in entry else ()
    comparison = Comparison(entry.get("row"), entry.get("reference"), better_of)
    for name in (comparison.row, comparison.reference, *better_of):
        _require(name is None or name in rows, where, f"{name!r} is not one of the rows")
    _require(comparison.row is not None, where, "a primary comparison needs its row")
    return comparison


def parse_plan(data: dict[str, Any], source: str) -> StudyPlan:
    """A ``StudyPlan`` from the plan's mapping; a ``PlanError`` names what is wrong."""
    unknown = set(data) - PLAN_KEYS
    _require(not unknown, source, f"unknown key(s) {sorted(unknown)}; known: {sorted(PLAN_KEYS)}")
    name = str(data.get("name") or Path(source).stem)
    _require(
        NAME.fullmatch(name) is not None,
        source,
        f"name {name!r} must be letters, digits, '.', '_' or '-' (it names the results folder)",
    )
    rows = data.get("rows")
    _require(isinstance(rows, dict) and len(rows) >= 2, source, "rows must name two rows or more")
    for row, overrides in rows.items():
        _require(
            isinstance(overrides, dict) and "train.method" in overrides,
            source,
            f"row {row!r} must be a mapping of dotted overrides with train.method",
        )
    seeds = data.get("seeds")
    _require(
        isinstance(seeds, list)
        and seeds
        and all(isinstance(s, int) and s >= 0 for s in seeds)
        and len(set(seeds)) == len(seeds),
        source,
        f"seeds must be distinct non-negative integers, got {seeds!r}",
    )
    split = _choice(data, "split", SPLITS, source)
    reported = _strings(data.get("reported"), source, "reported")
    _require(
        all(s in SPLITS and s != split for s in reported),
        source,
        f"reported must name splits other than {split!r}",
    )
    primary = data.get("primary")
    _require(isinstance(primary, list) and primary, source, "primary must list comparisons")
    alpha = data.get("alpha", 0.05)
    _require(isinstance(alpha, float) and 0 < alpha < 1, source, f"alpha {alpha!r} not in (0, 1)")
    students = _strings(data.get("students", list(STUDENTS)), source, "students")
    _require(set(students) <= set(STUDENTS), source, f"students must be among {list(STUDENTS)}")
    return StudyPlan(
        name=name,
        description=str(data.get("description", "")),
        params=dict(data.get("params") or {}),
        rows={str(row): dict(overrides) for row, overrides in rows.items()},
        seeds=tuple(seeds),
        checkpoint=_choice(data, "checkpoint", CHECKPOINT_RULES, source),
        split=split,
        reported=reported,
        students=students,
        primary=tuple(_comparison(entry, rows, source) for entry in primary),
        correction=_choice(data, "correction", CORRECTIONS, source),
        alpha=alpha,
    )


def load_plan(path: Path) -> StudyPlan:
    """Read and check the plan file ``path``."""
    return parse_plan(load_yaml_mapping(path), str(path))
