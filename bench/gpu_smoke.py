"""A few training steps of the study's settings, timed; optionally one student to ONNX.

Run alone or through ``torchrun``. Writes ``smoke.json`` into OUT (emptied first): device,
world size, precision and compile settings, seconds per step (median over the logged
windows after the first, which holds compilation) and,
unless ``--no-export``, the CNN's ONNX parity with PyTorch under ONNX Runtime on the CPU.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

from codistill.artifacts import write_json_atomic
from codistill.data.base import dataset_spec
from codistill.engine.distributed import shutdown_distributed
from codistill.engine.trainer import train_students
from codistill.evaluation.students import load_students
from codistill.export.onnx_graph import Normalization, export_onnx
from codistill.export.parity import check_parity
from codistill.export.stage import parity_images
from codistill.study.results import read_curves
from codistill.study.settings import parse_overrides, resolve_params


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--prepared", type=Path, default=Path("build/prepared/camvid"))
    parser.add_argument("--no-export", dest="export", action="store_false")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    params = resolve_params(args.params, parse_overrides(args.set))
    shutil.rmtree(args.out, ignore_errors=True)  # a fresh run, never a resumed one
    try:
        metrics = train_students(params, args.prepared, args.out)
    finally:
        shutdown_distributed()
    if not metrics:  # not the main rank
        return
    rows = read_curves(args.out / "curves.csv")
    steady = rows[1:] or rows  # the first window holds compilation and warm-up
    last = rows[-1]
    report = {
        "device": metrics["device"],
        "world_size": metrics["world_size"],
        "precision": metrics["precision"],
        "channels_last": params.train.channels_last,
        "compile": params.train.compile,
        "method": params.train.method,
        "iterations": metrics["iterations"],
        "seconds_per_step": statistics.median(
            params.train.batch_size / row["images_per_s"] for row in steady
        ),
        "loss_total": last["loss_total"],
    }
    if args.export:
        classes = dataset_spec(params.data.dataset).num_classes
        student = load_students(params, args.out, classes)["cnn"].eval()
        cfg, scale = params.export.parity, params.evaluate.scale
        normalization = Normalization.of_prepared(args.prepared)
        path = export_onnx(
            student,
            args.out / "cnn.onnx",
            params.export.exporter,
            params.export.opset,
            tuple(cfg.resolutions[0]),
            normalization,
            scale,
        )
        images = parity_images(args.prepared, max(cfg.batch_sizes))
        cases = check_parity(student, path, images, cfg, normalization, scale)
        report["onnx_parity"] = {
            "max_abs_logit_diff": max(c["max_abs_logit_diff"] for c in cases),
            "min_label_agreement": min(c["label_agreement"] for c in cases),
            "passed": all(c["passed"] for c in cases),
        }
        if not report["onnx_parity"]["passed"]:
            raise SystemExit(f"ONNX parity failed: {cases}")
    write_json_atomic(args.out / "smoke.json", report)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
