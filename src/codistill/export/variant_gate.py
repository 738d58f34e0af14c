"""The quantization gate: build each faster variant, score it, keep it only if close enough."""

from __future__ import annotations

from pathlib import Path

from codistill.config import Params
from codistill.data.samples import evenly_spaced_images
from codistill.export.onnx_scoring import score_graphs
from codistill.export.variants import build_variant

VARIANT_SPLIT = "val"
CALIBRATION_SPLIT = "train"


def faster_variants(
    params: Params, prepared_dir: str | Path, onnx_dir: Path, roles: tuple[str, ...]
) -> dict:
    """Build each configured variant of each student and keep it only within the mIoU gate.

    Every graph, FP32 included, is scored on the validation split under ONNX Runtime on the
    CPU; the drop is in mIoU points against the FP32 graph and the speed-up is the ratio of
    mean per-image latencies measured in the same pass. A variant over the gate is deleted.
    """
    cfg, max_drop = params.export, params.gates.max_quant_drop_points
    calibration = (
        evenly_spaced_images(prepared_dir, CALIBRATION_SPLIT, cfg.calibration_images)
        if "int8" in cfg.variants
        else []
    )
    students = {}
    for role in roles:
        graphs = {"fp32": onnx_dir / f"{role}.onnx"}
        for variant in cfg.variants:
            graphs[variant] = build_variant(variant, graphs["fp32"], calibration)
            print(f"export {role}: built the {variant} graph", flush=True)
        label = f"export {role}: scoring {', '.join(graphs)} on {VARIANT_SPLIT}"
        scores = score_graphs(graphs, prepared_dir, VARIANT_SPLIT, label)
        reference = scores["fp32"]
        report = {"fp32": {**reference, "file": graphs["fp32"].name}}
        for variant in cfg.variants:
            drop = 100 * (reference["miou"] - scores[variant]["miou"])
            kept = drop <= max_drop
            report[variant] = {
                **scores[variant],
                "file": graphs[variant].name if kept else None,
                "miou_drop_points": drop,
                "speedup": reference["seconds_per_image"] / scores[variant]["seconds_per_image"],
                "kept": kept,
            }
            if not kept:
                graphs[variant].unlink()
        students[role] = report
    return {
        "split": VARIANT_SPLIT,
        "calibration": {"split": CALIBRATION_SPLIT, "images": len(calibration)},
        "max_quant_drop_points": max_drop,
        "timed_on": "ONNX Runtime CPUExecutionProvider, batch 1, native resolution",
        "students": students,
    }
