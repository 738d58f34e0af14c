"""Whole-image, single-scale evaluation of both students on a prepared split."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from codistill.config import ConfigError
from codistill.data.loading import PreparedSplit
from codistill.evaluation.metrics import segmentation_scores
from codistill.evaluation.scoring import Predictor, tally_predictions
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

    Returns per-model scores (with the confusion matrix, images per second and each image's
    per-class intersection and union, ``image_counts``, N×2×K in sample order) and, for the
    first ``keep`` images, the image, its labels and each model's prediction for plots.
    With a ``label``, progress is reported under it (see ``reported``).
    """
    data = PreparedSplit(prepared_dir, split)
    for model in models.values():
        model.eval().to(device)
    examples: list[dict] = []

    def samples() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        indices = range(len(data))
        for index in reported(indices, label, len(data)) if label else indices:
            image, labels = data[index, 0]
            require_input_size(image.shape[-2:], scale, f"{split} image {data.sample_id(index)}")
            if index < keep:
                image_rgb = data.reader.read(data.rows[index])[0]
                examples.append(
                    {"id": data.sample_id(index), "labels": labels.numpy(), "image": image_rgb}
                )
            yield synchronized(image[None].to(device)), labels

    def predictor(model: nn.Module) -> Predictor:
        return lambda batch: synchronized(predict(model, batch, scale))[0].cpu()

    def keep_example(index: int, name: str, prediction: torch.Tensor) -> None:
        if index < keep:
            examples[index][name] = prediction.numpy().astype(np.uint8)

    tallies = tally_predictions(
        {name: predictor(model) for name, model in models.items()},
        samples(),
        data.info["num_classes"],
        keep_example,
    )
    scores = {
        name: {
            **segmentation_scores(tally.confusion.numpy()),
            "images_per_s": round(len(data) / tally.seconds, 3),
            "confusion": tally.confusion.tolist(),
            "image_counts": tally.image_counts(),
        }
        for name, tally in tallies.items()
    }
    return scores, examples


def synchronized(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor``, once the GPU work that produces it has finished (so timings are true)."""
    if tensor.is_cuda:
        torch.cuda.synchronize(tensor.device)
    return tensor
