"""The exported graphs' tensor and file names, without PyTorch, so that serving shares them."""

from __future__ import annotations

INPUT_NAME = "image"
LOGITS_OUTPUT = "logits"  # N×C×H×W float32 scores
LABELS_OUTPUT = "labels"  # N×H×W uint8 arg-max
OUTPUT_NAMES = (LOGITS_OUTPUT, LABELS_OUTPUT)
# The preprocessing contract beside the graphs: resizing, normalization, the inference scale.
PREPROCESSING_JSON = "preprocessing.json"


def variant_file(role: str, variant: str) -> str:
    """The file name of student ``role``'s ``variant`` graph next to ``<role>.onnx``."""
    return f"{role}.{variant}.onnx"
