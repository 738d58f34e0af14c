"""The six stages of the pipeline, each declared once: function, artifacts, parameters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from codistill.artifacts import file_sha256
from codistill.config import Params
from codistill.stages.spec import ArtifactSpec, Input, OutFile, Stage

DATA = ArtifactSpec("data", "data/${data.dataset}", "Dataset", version_file="data.dvc")


def prepare(params: Params, data: Path, out: Path) -> dict[str, Any]:
    """Encode the raw dataset tree into shards, manifest and statistics."""
    from codistill.data import PrepareError, create_reader, prepare_dataset
    from codistill.data.manifest import MANIFEST_NAME

    reader = create_reader(params.data.dataset, data)
    try:
        summary = prepare_dataset(reader, out, params.prepare)
    except PrepareError as err:
        raise StageFailedError(f"prepare: {err}") from None
    counts = ", ".join(f"{s} {v['in_shards']}/{v['samples']}" for s, v in summary["splits"].items())
    mib = summary["total_bytes"] / 2**20
    return {
        "message": f"prepared {summary['dataset']} into {out}: {counts} samples in shards, "
        f"{mib:.1f} MiB",
        "metrics": {"prepared_mib": mib},
        # what the run actually read, whatever data.dvc says
        "params": {"manifest_sha256": file_sha256(out / MANIFEST_NAME)},
    }


def validate(params: Params, prepared: Path, out: Path) -> dict[str, Any]:
    """Check the prepared dataset with the data gate; fail the stage if a check fails."""
    from codistill.validation.gate import validate_prepared, write_report

    report = validate_prepared(prepared, params.validate)
    summary = write_report(report, out).read_text()
    if not report["passed"]:
        raise StageFailedError(summary)
    return {"message": summary.rstrip(), "metrics": {"samples": float(report["samples"])}}


def train(
    params: Params,
    prepared: Path,
    validation: Path,
    out: Path,
    checkpoint_dir: Path | None = None,
) -> dict[str, Any]:
    """Co-train both students; resume from ``checkpoint_dir`` (default ``out``)."""
    from codistill.data.gate import require_validated
    from codistill.engine.distributed import shutdown_distributed
    from codistill.engine.trainer import train_students
    from codistill.stages.preflight import require_crop_fits

    require_validated(prepared, validation)
    require_crop_fits(params, prepared)
    try:
        metrics = train_students(
            params, prepared, out, tracking=params.tracking.enabled, checkpoint_dir=checkpoint_dir
        )
    finally:
        shutdown_distributed()
    if not metrics:  # a non-main rank
        return {"message": "", "metrics": {}}
    final = metrics["final"]
    terms = ", ".join(metrics["terms"]) or "no cross terms"
    return {
        "message": f"trained {metrics['method']} ({terms}) to iteration "
        f"{metrics['iterations']}: loss {final.get('loss_total', 0):.4f}",
        "metrics": {},  # the trainer logs its own curves to the same run
    }


def evaluate(
    params: Params, prepared: Path, validation: Path, students: Path, out: Path
) -> dict[str, Any]:
    """Score both trained students on ``evaluate.split``."""
    from codistill.data.gate import require_validated
    from codistill.evaluation.stage import run_evaluation

    require_validated(prepared, validation)
    summary = run_evaluation(params, prepared, students, out)
    lines = [
        f"{role}: mIoU {s['miou']:.4f}, pixel accuracy {s['pixel_accuracy']:.4f}, "
        f"{s['images_per_s']:.1f} images/s"
        for role, s in summary.items()
    ]
    metrics = {f"{role}.{k}": float(v) for role, s in summary.items() for k, v in s.items()}
    return {"message": "\n".join(lines), "metrics": metrics}


def export(params: Params, prepared: Path, students: Path, out: Path) -> dict[str, Any]:
    """Export both students to ONNX, check parity with PyTorch, gate the faster variants."""
    from codistill.export.parity import ParityError
    from codistill.export.stage import run_export

    try:
        result = run_export(params, prepared, students, out)
    except ParityError as err:
        raise StageFailedError(f"export: {err}") from None
    metrics = {
        f"{role}.max_abs_logit_diff": max(c["max_abs_logit_diff"] for c in cases)
        for role, cases in result["parity"].items()
    }
    worst = ", ".join(f"{k} {v:.1e}" for k, v in metrics.items())
    lines = [
        f"exported {', '.join(result['summary']['files'].values())} to {out} "
        f"with {params.export.exporter}, opset {params.export.opset}; parity passed ({worst})"
    ]
    for role, report in result["variants"]["students"].items():
        for variant in params.export.variants:
            entry = report[variant]
            metrics[f"{role}.{variant}.miou_drop_points"] = entry["miou_drop_points"]
            metrics[f"{role}.{variant}.speedup"] = entry["speedup"]
            lines.append(
                f"{role} {variant}: mIoU {entry['miou']:.4f} (drop {entry['miou_drop_points']:.2f}"
                f" points), {entry['speedup']:.2f}x FP32 on the CPU; "
                + ("kept" if entry["kept"] else f"dropped (over {params.gates.max_quant_drop})")
            )
    return {"message": "\n".join(lines), "metrics": metrics}


def publish(params: Params, evaluation: Path, onnx: Path, out: Path) -> dict[str, Any]:
    """Write the Triton model repository, register both students, promote those that pass."""
    from codistill.release import run_publish

    release = run_publish(params, evaluation, onnx, out)
    lines = [
        f"{role}: mIoU {r['miou']:.4f} "
        f"{'clears' if r['passed'] else 'misses'} gates.min_miou {params.gates.min_miou}"
        + (f"; {r['registered_model']} v{r['version']}" if r.get("version") else "")
        + (f", alias {r['alias']}" if r.get("alias") else "")
        + f"; served as {out / r['served_as']}"
        for role, r in release["students"].items()
    ]
    return {
        "message": "\n".join(lines),
        "metrics": {
            f"{role}.promoted": float(r["passed"]) for role, r in release["students"].items()
        },
    }


class StageFailedError(RuntimeError):
    """A stage ran and found its result unacceptable; the message says why."""


STAGES: tuple[Stage, ...] = (
    Stage(
        name="prepare",
        description="Encode a raw dataset tree into shards, manifest and stats.",
        function=prepare,
        inputs=(Input("data"),),
        output=ArtifactSpec("prepared", "build/prepared/${data.dataset}", "Dataset"),
        params=("data.dataset", "prepare"),
    ),
    Stage(
        name="validate",
        description="Check a prepared dataset with the data gate (Great Expectations).",
        function=validate,
        inputs=(Input("prepared"),),
        output=ArtifactSpec("validation", "build/validate", "Artifact", cache=False),
        params=("validate",),
    ),
    Stage(
        name="train",
        description="Co-train both students (resumes from the last checkpoint).",
        function=train,
        inputs=(Input("prepared"), Input("validation")),
        output=ArtifactSpec(
            "students",
            "build/train",
            "Model",
            files=(
                OutFile("last.pt"),  # an interrupted run resumes from it
                OutFile("cnn.pt"),
                OutFile("vit.pt"),
                OutFile("train_metrics.json", cache=False),
                OutFile("curves.csv", cache=False),
            ),
        ),
        params=("models", "train", "distill"),
        resumable=True,
        accelerated=True,
    ),
    Stage(
        name="evaluate",
        description="Score both trained students on a split.",
        function=evaluate,
        inputs=(
            Input("prepared"),
            Input("validation"),
            Input("students", files=("cnn.pt", "vit.pt")),
        ),
        output=ArtifactSpec(
            "evaluation",
            "build/eval",
            "Artifact",
            files=(
                OutFile("metrics.json", cache=False, metric=True),
                OutFile("report.json", cache=False),
                OutFile("per_class_iou.csv", cache=False),
                OutFile("per_class_iou.png", cache=False),
                OutFile("overlays.png", cache=False),
            ),
        ),
        params=("evaluate", "models"),
    ),
    Stage(
        name="export",
        description=(
            "Export both students to ONNX, check parity with PyTorch, and keep the INT8/FP16 "
            "variants that stay within the mIoU gate."
        ),
        function=export,
        inputs=(Input("prepared"), Input("students", files=("cnn.pt", "vit.pt"))),
        output=ArtifactSpec("onnx", "build/export", "Model"),
        params=("export", "models", "evaluate.scale", "gates.max_quant_drop"),
    ),
    Stage(
        name="publish",
        description=(
            "Write the Triton model repository and register both students in MLflow; "
            "promote those that clear the gate."
        ),
        function=publish,
        inputs=(Input("evaluation", files=("metrics.json",)), Input("onnx")),
        output=ArtifactSpec("release", "serving/model_repository", "Model"),
        params=("gates.min_miou", "serving"),
    ),
)
