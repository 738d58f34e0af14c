"""The consumer side of the data gate: later stages read data only with a passing report."""

from __future__ import annotations

import json
from pathlib import Path

from codistill.artifacts import file_sha256
from codistill.data.manifest import MANIFEST_NAME

REPORT_VERSION = 1
REPORT_JSON = "validation.json"
SUMMARY_TXT = "validation.txt"


class UnvalidatedDataError(RuntimeError):
    """The prepared data has no passing validation report that matches its manifest."""


def require_validated(prepared_dir: str | Path, validation_dir: str | Path) -> dict:
    """Return the validation report if it passed for exactly this manifest, else raise."""
    prepared_dir, report_path = Path(prepared_dir), Path(validation_dir) / REPORT_JSON
    if not report_path.is_file():
        raise UnvalidatedDataError(f"{report_path}: no validation report; run the validate stage")
    report = json.loads(report_path.read_text())
    if report.get("report_version") != REPORT_VERSION:
        raise UnvalidatedDataError(
            f"{report_path}: unknown report version {report.get('report_version')!r}"
        )
    if not report.get("passed"):
        failed = ", ".join(report.get("failed_checks", [])) or "unknown checks"
        raise UnvalidatedDataError(
            f"{report_path}: validation failed ({failed}); see {report_path.parent / SUMMARY_TXT}"
        )
    manifest = prepared_dir / MANIFEST_NAME
    if not manifest.is_file():
        raise UnvalidatedDataError(f"{manifest}: missing; run the prepare stage")
    if report.get("manifest_sha256") != file_sha256(manifest):
        raise UnvalidatedDataError(
            f"{report_path}: was written for another manifest than {manifest}; "
            "run the validate stage again"
        )
    return report
