"""The validate stage: the data gate over a prepared dataset; a failed check fails the stage."""

from __future__ import annotations

from pathlib import Path

from codistill.config import Params
from codistill.stage_result import StageFailedError, StageSummary
from codistill.validation.report import validate_prepared, write_report


def run(params: Params, prepared: Path, out: Path) -> StageSummary:
    """Check the prepared dataset with the data gate; fail the stage if a check fails."""
    report = validate_prepared(prepared, params.validate)
    summary = write_report(report, out).read_text()
    if not report["passed"]:
        raise StageFailedError(summary)
    return StageSummary(summary.rstrip(), {"samples": float(report["samples"])})
