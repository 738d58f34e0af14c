"""The data gate's report: every check over a prepared dataset, as JSON and readable text."""

from __future__ import annotations

import json
from pathlib import Path

import great_expectations as gx
import pandas as pd
from great_expectations.data_context.types.base import ProgressBarsConfig

from codistill.artifacts import write_json_atomic, write_text_atomic
from codistill.config import ValidateConfig
from codistill.data.gate import REPORT_JSON, REPORT_VERSION, SUMMARY_TXT
from codistill.data.prepare import DATASET_JSON
from codistill.validation.checks import CHECKS, Check
from codistill.validation.tables import classes_table, samples_table, splits_table


def _batches(tables: dict[str, pd.DataFrame]) -> dict[str, object]:
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    source = context.data_sources.add_pandas("prepared")
    batches = {}
    for name, frame in tables.items():
        definition = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
        batches[name] = definition.get_batch(batch_parameters={"dataframe": frame})
    return batches


def _run_check(check: Check, batch: object, table: pd.DataFrame) -> dict:
    offenders: list[str] = []
    for expectation in check.expectations:
        result = batch.validate(
            expectation,
            result_format={
                "result_format": "COMPLETE",
                "unexpected_index_column_names": [check.id_column],
            },
        )
        if result.exception_info and result.exception_info.get("raised_exception"):
            raise RuntimeError(
                f"check {check.name} could not run: "
                f"{result.exception_info.get('exception_message')}"
            )
        for index in result.result.get("unexpected_index_list") or []:
            if index[check.id_column] not in offenders:
                offenders.append(index[check.id_column])
    rows = table.set_index(check.id_column, drop=False)
    return {
        "check": check.name,
        "description": check.description,
        "passed": not offenders,
        "offenders": [{"id": o, "detail": check.detail(rows.loc[o])} for o in offenders],
    }


def validate_prepared(prepared_dir: str | Path, cfg: ValidateConfig) -> dict:
    """Run every check over ``prepared_dir`` and return the report (nothing is written)."""
    prepared_dir = Path(prepared_dir)
    samples = samples_table(prepared_dir, cfg)
    tables = {
        "samples": samples,
        "splits": splits_table(samples, cfg),
        "classes": classes_table(prepared_dir, cfg),
    }
    batches = _batches(tables)
    checks = [_run_check(c, batches[c.table], tables[c.table]) for c in CHECKS]
    dataset = json.loads((prepared_dir / DATASET_JSON).read_text())
    return {
        "report_version": REPORT_VERSION,
        "passed": all(c["passed"] for c in checks),
        "dataset": dataset["dataset"],
        "prepared_dir": str(prepared_dir),
        "manifest_sha256": dataset["manifest_sha256"],
        "samples": len(samples),
        "failed_checks": [c["check"] for c in checks if not c["passed"]],
        "checks": checks,
    }


def summary_text(report: dict) -> str:
    """A short human-readable account of the report, one line per offender."""
    verdict = "PASSED" if report["passed"] else "FAILED"
    lines = [
        f"data validation {verdict}: {report['dataset']}, {report['samples']} samples, "
        f"{len(report['checks']) - len(report['failed_checks'])}/{len(report['checks'])} "
        "checks passed"
    ]
    for check in report["checks"]:
        mark = "ok  " if check["passed"] else "FAIL"
        lines.append(f"  [{mark}] {check['check']}: {check['description']}")
        lines += [f"         - {o['id']}: {o['detail']}" for o in check["offenders"]]
    return "\n".join(lines) + "\n"


def write_report(report: dict, validation_dir: str | Path) -> Path:
    """Write the JSON report and its text summary into ``validation_dir``; return the summary."""
    validation_dir = Path(validation_dir)
    summary_path = validation_dir / SUMMARY_TXT
    write_json_atomic(validation_dir / REPORT_JSON, report)
    write_text_atomic(summary_path, summary_text(report))
    return summary_path
