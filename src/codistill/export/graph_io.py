"""The exported graphs' tensor and file names, without PyTorch, so that serving shares them."""

from __future__ import annotations

INPUT_NAME = "image"
LABELS_OUTPUT = "labels"  # the uint8 arg-max; "logits" holds the float32 scores
OUTPUT_NAMES = ("logits", LABELS_OUTPUT)


def variant_file(role: str, variant: str) -> str:
    """The file name of student ``role``'s ``variant`` graph next to ``<role>.onnx``."""
    return f"{role}.{variant}.onnx"
