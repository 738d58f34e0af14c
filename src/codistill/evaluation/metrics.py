"""Segmentation scores from a confusion matrix: IoU per class, mIoU, pixel accuracy."""

from __future__ import annotations

import numpy as np
import torch

from codistill.data.spec import IGNORE_INDEX


def confusion_matrix(
    predictions: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """K×K int64 counts, rows = true class, columns = predicted; ignored pixels excluded."""
    valid = labels != IGNORE_INDEX
    index = labels[valid].long() * num_classes + predictions[valid].long()
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def intersection_and_union(confusion: torch.Tensor) -> torch.Tensor:
    """The 2×K per-class intersection and union pixel counts of a K×K confusion matrix."""
    intersection = torch.diagonal(confusion)
    return torch.stack([intersection, confusion.sum(0) + confusion.sum(1) - intersection])


def mean_iou(counts: np.ndarray, leave_out: int | None = None) -> np.ndarray:
    """The mIoU of ``...×2×K`` intersection and union counts, over the classes seen.

    A class with no pixel labelled or predicted (union 0) does not count in the mean (0 if no
    class is seen); ``leave_out`` drops one class from it.
    """
    intersection, union = counts[..., 0, :].astype(np.float64), counts[..., 1, :]
    seen = union > 0
    if leave_out is not None:
        seen = seen.copy()
        seen[..., leave_out] = False
    iou = np.divide(intersection, union, out=np.zeros_like(intersection), where=seen)
    return iou.sum(axis=-1) / np.maximum(seen.sum(axis=-1), 1)


def segmentation_scores(confusion: np.ndarray) -> dict:
    """Scores: mIoU over classes seen in labels or predictions, per-class IoU, pixel accuracy.

    A class absent from both labels and predictions has no IoU (None) and does not count
    in the mean; one that is predicted but never labelled has IoU 0.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    true_positive = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, true_positive / union, np.nan)
    total = confusion.sum()
    return {
        "miou": float(mean_iou(np.stack([true_positive, union]))),
        "pixel_accuracy": float(true_positive.sum() / total) if total else 0.0,
        "per_class_iou": [None if np.isnan(v) else float(v) for v in iou],
    }
