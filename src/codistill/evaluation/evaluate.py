"""Whole-image, single-scale evaluation of both students on a prepared split."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from codistill.config import ConfigError
from codistill.data.loading import PreparedSplit
from codistill.evaluation.metrics import confusion_matrix, segmentation_scores
from codistill.input_size import MIN_INPUT_SIDE, min_native_side
from codistill.models.output import segment
from codistill.reporting import reported


def require_input_size(size: tuple[int, int], scale: float, what: str) -> None:
    """Raise ConfigError if ``size`` resized by ``scale`` is too small for the students."""
    if min(size) < min_native_side(scale):
        scaled = tuple(int(side * scale) for side in size)
        raise ConfigError(
            f"evaluate.scale {scale} shrinks {what} ({size[0]}×{size[1]}) to "
            f"{scaled[0]}×{scaled[1]}; the students need at least {MIN_INPUT_SIDE} pixels "
            "per side: raise evaluate.scale"
        )


def predict(model: nn.Module, image: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Arg-max labels at the input's size for one N×3×H×W batch, the model run at ``scale``."""
    return segment(model, image, scale).argmax(dim=1)


@torch.no_grad()
def evaluate_students(
    models: dict[str, nn.Module],
    prepared_dir: str | Path,
    split: str,
    device: torch.device,
    keep: int = 0,
    scale: float = 1.0,
    label: str | None = None,
) -> tuple[dict, list[dict]]:
    """Score each model on every image of ``split``, one image at a time.

    Each model sees the image resized by ``scale``; its logits are upsampled to the native
    size and scored against the native labels.

    Returns per-model scores (with the confusion matrix and images per second) and, for the
    first ``keep`` images, the image, its labels and each model's prediction for plots.
    With a ``label``, progress is reported under it (see ``reported``).
    """
    data = PreparedSplit(prepared_dir, split)
    num_classes = data.info["num_classes"]
    confusion = {name: torch.zeros(num_classes, num_classes, dtype=torch.int64) for name in models}
    seconds = dict.fromkeys(models, 0.0)
    examples: list[dict] = []
    for model in models.values():
        model.eval().to(device)
    indices = range(len(data))
    for index in reported(indices, label, len(data)) if label else indices:
        image, labels = data[index, 0]
        require_input_size(image.shape[-2:], scale, f"{split} image {data.sample_id(index)}")
        batch = image[None].to(device)
        example = (
            {
                "id": data.sample_id(index),
                "labels": labels.numpy(),
                "image": data.reader.read(data.rows[index])[0],
            }
            if index < keep
            else None
        )
        for name, model in models.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            prediction = predict(model, batch, scale)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds[name] += time.perf_counter() - start
            confusion[name] += confusion_matrix(prediction[0].cpu(), labels, num_classes)
            if example is not None:
                example[name] = prediction[0].cpu().numpy().astype(np.uint8)
        if example is not None:
            examples.append(example)
    scores = {}
    for name in models:
        scores[name] = {
            **segmentation_scores(confusion[name].numpy()),
            "images_per_s": round(len(data) / seconds[name], 3),
            "confusion": confusion[name].tolist(),
        }
    return scores, examples
