"""The output every student returns, whatever its architecture."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from codistill.data.transforms import rescale_images


class StudentOutput(NamedTuple):
    """Logits, low-level feature and decoder feature, all at the student's finest stride (1/4).

    ``logits``: N×K×h×w class scores; ``low``: the stage-1 encoder feature that HFD aligns;
    ``dec``: the decoder feature just before the classifier, which region-wise BSD aligns.
    """

    logits: torch.Tensor
    low: torch.Tensor
    dec: torch.Tensor


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize logits to the label size ``(H, W)``."""
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def segment(student: nn.Module, images: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Logits at the input's own size: the student sees the images resized by ``scale``.

    The one inference geometry of the project: evaluation, export and serving all call it,
    so a student trained on images at ``scale`` is scored and served at that scale, while
    its logits are compared with labels at the input's native size.
    """
    return upsample_logits(student(rescale_images(images, scale)).logits, images.shape[-2:])
