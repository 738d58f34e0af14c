"""The export stage: trained students in, ONNX graphs and their parity report out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from codistill.artifacts import staged_output, write_json_atomic
from codistill.config import Params
from codistill.data.base import dataset_spec
from codistill.data.shards import ShardReader
from codistill.data.spec import DatasetSpec
from codistill.evaluation.students import load_students
from codistill.export.graph_io import INPUT_NAME, OUTPUT_NAMES, PREPROCESSING_JSON
from codistill.export.onnx_graph import Normalization, export_onnx
from codistill.export.parity import ParityError, check_parity, parity_failures
from codistill.export.variant_gate import faster_variants
from codistill.stage_result import StageFailedError, StageSummary

PARITY_JSON = "parity.json"
EXPORT_JSON = "export.json"
VARIANTS_JSON = "variants.json"
PARITY_SPLIT = "val"


def parity_images(prepared_dir: str | Path, count: int) -> list[np.ndarray]:
    """The first ``count`` validation images as stored (H×W×3 uint8 RGB, native size)."""
    reader = ShardReader(prepared_dir)
    rows = reader.require_split(PARITY_SPLIT)
    return [reader.read(rows[i % len(rows)])[0] for i in range(count)]


def preprocessing(prepared_dir: str | Path, spec: DatasetSpec, scale: float = 1.0) -> dict:
    """What a client sends as ``image`` and how to read ``labels``: the serving contract."""
    normalization = Normalization.of_prepared(prepared_dir)
    return {
        "input": INPUT_NAME,
        "layout": "NHWC, RGB",
        "dtype": "uint8",
        "size": "any; the graph normalizes, resizes by inference_scale and answers at its size",
        "inference_scale": scale,
        "normalization_in_graph": {"mean": normalization.mean, "std": normalization.std},
        "class_names": list(spec.class_names),
        "palette": [list(colour) for colour in spec.palette],
    }


def run_export(
    params: Params, prepared_dir: str | Path, students_dir: str | Path, out_dir: str | Path
) -> dict:
    """Export both students, check parity, and publish ``out_dir`` only if every case passes."""
    with staged_output(out_dir) as staged:
        return _export_into(params, prepared_dir, students_dir, staged)


def _export_into(
    params: Params, prepared_dir: str | Path, students_dir: str | Path, staged: Path
) -> dict:
    cfg = params.export
    spec = dataset_spec(params.data.dataset)
    students = load_students(params, Path(students_dir), spec.num_classes)
    first_size = tuple(cfg.parity.resolutions[0])
    scale = params.evaluate.scale
    normalization = Normalization.of_prepared(prepared_dir)
    images = parity_images(prepared_dir, max(cfg.parity.batch_sizes))
    parity, failures = {}, []
    for role, student in students.items():
        student.eval()
        path = export_onnx(
            student,
            staged / f"{role}.onnx",
            cfg.exporter,
            cfg.opset,
            first_size,
            normalization,
            scale,
        )
        print(f"export {role}: wrote and checked {path.name}", flush=True)
        parity[role] = check_parity(student, path, images, cfg.parity, normalization, scale)
        failed = [f"{role} {line}" for line in parity_failures(parity[role], cfg.parity)]
        print(f"export {role}: parity {'FAILED' if failed else 'passed'}", flush=True)
        failures += failed
    summary = {
        "exporter": cfg.exporter,
        "opset": cfg.opset,
        "inference_scale": scale,
        "torch": torch.__version__,
        "input": INPUT_NAME,
        "input_layout": "NHWC uint8 RGB",
        "outputs": list(OUTPUT_NAMES),
        "files": {role: f"{role}.onnx" for role in students},
    }
    if failures:
        raise ParityError(
            "exported graphs disagree with PyTorch; previous export kept:\n  "
            + "\n  ".join(failures)
        )
    write_json_atomic(staged / PARITY_JSON, {"bounds": _bounds(params), "cases": parity})
    variants = faster_variants(params, prepared_dir, staged, tuple(students))
    write_json_atomic(staged / VARIANTS_JSON, variants)
    summary["variants"] = {
        role: [v for v in params.export.variants if report[v]["kept"]]
        for role, report in variants["students"].items()
    }
    write_json_atomic(staged / PREPROCESSING_JSON, preprocessing(prepared_dir, spec, scale))
    write_json_atomic(staged / EXPORT_JSON, summary)
    return {"summary": summary, "parity": parity, "variants": variants}


def _bounds(params: Params) -> dict:
    return {
        "max_abs_logit_diff": params.export.parity.max_abs_logit_diff,
        "min_label_agreement": params.export.parity.min_label_agreement,
    }


def run(params: Params, prepared: Path, students: Path, out: Path) -> StageSummary:
    """Export both students to ONNX, check parity with PyTorch, gate the faster variants."""
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
                + (
                    "kept"
                    if entry["kept"]
                    else f"dropped (over {params.gates.max_quant_drop_points})"
                )
            )
    return StageSummary("\n".join(lines), metrics)
