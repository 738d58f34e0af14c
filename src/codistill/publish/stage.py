"""The publish stage: gate each student on its measured mIoU, register it, promote it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from codistill.artifacts import staged_output, write_json_atomic
from codistill.config import ROLES, Params
from codistill.export.graph_io import PREPROCESSING_JSON
from codistill.serving.model_repository import write_model_repository
from codistill.stage_result import StageInputError, StageSummary

RELEASE_JSON = "release.json"
CANDIDATE_ALIAS = "candidate"


def registered_model_name(role: str) -> str:
    """The MLflow registered model that holds student ``role``."""
    return f"codistill-{role}"


def gate_students(metrics: dict[str, Any], min_points: float) -> dict[str, dict[str, Any]]:
    """Each student's mIoU and whether it clears ``min_points`` mIoU points."""
    missing = [role for role in ROLES if role not in metrics]
    if missing:
        raise StageInputError(f"evaluation metrics have no entry for {', '.join(missing)}")
    return {
        role: {
            "miou": float(metrics[role]["miou"]),
            "passed": 100 * metrics[role]["miou"] >= min_points,
        }
        for role in ROLES
    }


def run_publish(
    params: Params, evaluation_dir: str | Path, onnx_dir: str | Path, out_dir: str | Path
) -> dict[str, Any]:
    """Write the Triton model repository ``out_dir`` and register both ONNX students.

    ``out_dir`` gets one served model per student (graph and configurations) and
    ``release.json``. With tracking on, each student is registered in MLflow; one that clears
    ``gates.min_miou_points`` gets the ``candidate`` alias, one that misses it is registered without
    it, and the alias stays on the last version that cleared the bar. Nothing is replaced
    unless every step succeeds.
    """
    metrics_path = Path(evaluation_dir) / "metrics.json"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"{metrics_path}: no evaluation metrics; run the evaluate stage")
    students = gate_students(json.loads(metrics_path.read_text()), params.gates.min_miou_points)
    files = {}
    for role, entry in students.items():
        files[role] = Path(onnx_dir) / f"{role}.onnx"
        if not files[role].is_file():
            raise FileNotFoundError(f"{files[role]}: no exported {role}; run the export stage")
        entry["onnx"] = files[role].name
        entry["registered_model"] = registered_model_name(role)
        entry["alias"] = CANDIDATE_ALIAS if entry["passed"] else None
    release = {"min_miou_points": params.gates.min_miou_points, "students": students}
    contract = Path(onnx_dir) / PREPROCESSING_JSON
    if not contract.is_file():
        raise FileNotFoundError(f"{contract}: missing; run the export stage")
    with staged_output(out_dir) as staged:
        served = write_model_repository(onnx_dir, staged, params.serving, ROLES)
        for role, (name, model_dir) in zip(ROLES, served.items(), strict=True):
            students[role]["served_as"] = name
            students[role]["configs"] = sorted(p.stem for p in (model_dir / "configs").iterdir())
        if params.tracking.enabled:
            from codistill.lineage.models import register_onnx_students

            versions = register_onnx_students(
                {e["registered_model"]: (files[r], e["alias"]) for r, e in students.items()}
            )
            for entry in students.values():
                entry["version"] = versions[entry["registered_model"]]
        write_json_atomic(staged / RELEASE_JSON, release)
    return release


def run(params: Params, evaluation: Path, onnx: Path, out: Path) -> StageSummary:
    """Write the Triton model repository, register both students, promote those that pass."""
    release = run_publish(params, evaluation, onnx, out)
    lines = [
        f"{role}: mIoU {r['miou']:.4f} "
        f"{'clears' if r['passed'] else 'misses'} gates.min_miou_points "
        f"{params.gates.min_miou_points}"
        + (f"; {r['registered_model']} v{r['version']}" if r.get("version") else "")
        + (f", alias {r['alias']}" if r.get("alias") else "")
        + f"; served as {out / r['served_as']}"
        for role, r in release["students"].items()
    ]
    promoted = {f"{role}.promoted": float(r["passed"]) for role, r in release["students"].items()}
    return StageSummary("\n".join(lines), promoted)
