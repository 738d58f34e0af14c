"""One scoring loop for any predictors on a split: PyTorch students or ONNX Runtime graphs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from codistill.evaluation.metrics import confusion_matrix, intersection_and_union

# A predictor maps one sample's input to its H×W arg-max labels on the CPU.
Predictor = Callable[[Any], torch.Tensor]
# Called with (sample index, predictor name, labels) after each prediction.
PredictionHook = Callable[[int, str, torch.Tensor], None]


@dataclass
class Tally:
    """One predictor's confusion matrix over a split, and the seconds its predictions took.

    ``per_image`` holds each image's 2×K per-class intersection and union pixel counts, in
    sample order: summed over the images they give the split's IoU exactly.
    """

    confusion: torch.Tensor
    seconds: float = 0.0
    per_image: list[torch.Tensor] = field(default_factory=list)

    def image_counts(self) -> np.ndarray:
        """The per-image counts as one N×2×K int64 array (intersection, union)."""
        return (
            torch.stack(self.per_image).numpy()
            if self.per_image
            else np.zeros((0, 2, len(self.confusion)), dtype=np.int64)
        )


def tally_predictions(
    predictors: dict[str, Predictor],
    samples: Iterable[tuple[Any, torch.Tensor]],
    num_classes: int,
    on_prediction: PredictionHook | None = None,
) -> dict[str, Tally]:
    """Run every predictor on every ``(input, labels)`` sample and tally each one.

    The predictors take turns on each sample, so their timings see the same machine load.
    """
    tallies = {
        name: Tally(torch.zeros(num_classes, num_classes, dtype=torch.int64)) for name in predictors
    }
    for index, (inputs, labels) in enumerate(samples):
        for name, predict in predictors.items():
            start = time.perf_counter()
            prediction = predict(inputs)
            tallies[name].seconds += time.perf_counter() - start
            confusion = confusion_matrix(prediction, labels, num_classes)
            tallies[name].confusion += confusion
            tallies[name].per_image.append(intersection_and_union(confusion))
            if on_prediction is not None:
                on_prediction(index, name, prediction)
    return tallies
