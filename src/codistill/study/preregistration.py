"""The pre-registration gate: a study's test split is scored only under a committed, fixed plan.

A pre-registered regime names a plan file (rows, seeds, schedule, checkpoint rule, split and
comparisons). Before any of its runs is scored on the test split the file must be committed
and unchanged in the working tree, and every test result the regime already has must carry
the same git blob hash: a plan edited after the first test result was scored is refused.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

BLOB_KEY = "preregistration_blob"


class PreregistrationError(Exception):
    """The plan file is missing, not committed, or changed since the first test result."""


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
    )


def committed_blob(plan: Path) -> str:
    """The git blob hash of ``plan`` as committed at HEAD; it must equal the working file.

    Raises PreregistrationError if the file is missing, untracked, or differs from HEAD.
    """
    if not plan.is_file():
        raise PreregistrationError(f"{plan}: no pre-registration file; commit the plan first")
    folder = plan.resolve().parent
    head = _git(["rev-parse", f"HEAD:./{plan.name}"], folder)
    if head.returncode != 0:
        raise PreregistrationError(
            f"{plan}: not committed (git: {head.stderr.strip() or 'no HEAD'}); commit the plan "
            "before scoring the test split"
        )
    working = _git(["hash-object", plan.name], folder)
    if working.returncode != 0:
        raise PreregistrationError(f"{plan}: git hash-object failed: {working.stderr.strip()}")
    blob = head.stdout.strip()
    if working.stdout.strip() != blob:
        raise PreregistrationError(
            f"{plan}: differs from its committed version; a plan is fixed by its commit"
        )
    return blob


def require_unchanged_plan(plan: Path, results: Iterable[dict[str, Any]]) -> str:
    """The plan's blob, if every test result so far was scored under it; else refuse.

    ``results`` are the regime's finished results; those without a test score do not bind.
    """
    blob = committed_blob(plan)
    for result in results:
        if "test" not in result.get("scores", {}):
            continue
        recorded = result.get(BLOB_KEY)
        if recorded is None:
            raise PreregistrationError(
                f"{plan}: result {result.get('key')} was scored on the test split without a "
                "pre-registration; a confirmation starts from no test result"
            )
        if recorded != blob:
            raise PreregistrationError(
                f"{plan}: changed since the regime's first test result ({result.get('key')} was "
                f"scored under blob {recorded[:12]}, the plan is now {blob[:12]}); a "
                "pre-registered plan cannot change once the test split has been read"
            )
    return blob
