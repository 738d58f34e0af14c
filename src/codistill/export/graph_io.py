"""The exported graphs' tensor and file names, without PyTorch, so that serving shares them."""

from __future__ import annotations

INPUT_NAME = "image"
OUTPUT_NAMES = ("logits", "labels")


def variant_file(role: str, variant: str) -> str:
    """The file name of student ``role``'s ``variant`` graph next to ``<role>.onnx``."""
    return f"{role}.{variant}.onnx"
