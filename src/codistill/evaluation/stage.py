"""The evaluate stage: trained students in, metrics, per-class report and pictures out."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import torch

from codistill.artifacts import write_json_atomic, write_text_atomic
from codistill.config import Params
from codistill.data.base import dataset_spec
from codistill.data.gate import require_validated
from codistill.evaluation.evaluate import evaluate_students
from codistill.evaluation.plots import overlay_grid, per_class_iou_chart
from codistill.evaluation.students import load_students
from codistill.stage_result import StageSummary

METRICS_JSON = "metrics.json"
REPORT_JSON = "report.json"
PER_CLASS_CSV = "per_class_iou.csv"


def _per_class_csv(scores: dict, class_names: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["class", *scores])
    for index, name in enumerate(class_names):
        values = [scores[role]["per_class_iou"][index] for role in scores]
        writer.writerow([name, *("" if v is None else round(v, 6) for v in values)])
    return buffer.getvalue()


def run_evaluation(
    params: Params,
    prepared_dir: str | Path,
    train_dir: str | Path,
    out_dir: str | Path,
    device: torch.device | None = None,
) -> dict:
    """Evaluate both students on ``params.evaluate.split`` and write the stage outputs."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = dataset_spec(params.data.dataset)
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    students = load_students(params, Path(train_dir), spec.num_classes)
    split = params.evaluate.split
    scores, examples = evaluate_students(
        students,
        prepared_dir,
        split,
        device,
        keep=params.evaluate.overlays,
        scale=params.evaluate.scale,
        label=f"evaluate {split}",
    )
    class_names = list(spec.class_names)
    summary = {
        role: {
            "miou": round(s["miou"], 6),
            "pixel_accuracy": round(s["pixel_accuracy"], 6),
            "images_per_s": s["images_per_s"],
        }
        for role, s in scores.items()
    }
    write_json_atomic(out_dir / METRICS_JSON, {"split": split, **summary})
    write_json_atomic(
        out_dir / REPORT_JSON,
        {
            "split": split,
            "scale": params.evaluate.scale,
            "device": str(device),
            "class_names": class_names,
            **{
                role: {
                    **summary[role],
                    "per_class_iou": dict(zip(class_names, s["per_class_iou"], strict=True)),
                    "confusion": s["confusion"],
                }
                for role, s in scores.items()
            },
        },
    )
    write_text_atomic(out_dir / PER_CLASS_CSV, _per_class_csv(scores, class_names))
    per_class_iou_chart(scores, class_names, out_dir / "per_class_iou.png")
    overlay_grid(examples, spec, list(students), out_dir / "overlays.png")
    return summary


def run(
    params: Params, prepared: Path, validation: Path, students: Path, out: Path
) -> StageSummary:
    """Score both trained students on ``evaluate.split`` of validated data."""
    require_validated(prepared, validation)
    summary = run_evaluation(params, prepared, students, out)
    lines = [
        f"{role}: mIoU {s['miou']:.4f}, pixel accuracy {s['pixel_accuracy']:.4f}, "
        f"{s['images_per_s']:.1f} images/s"
        for role, s in summary.items()
    ]
    metrics = {f"{role}.{k}": float(v) for role, s in summary.items() for k, v in s.items()}
    return StageSummary("\n".join(lines), metrics)
