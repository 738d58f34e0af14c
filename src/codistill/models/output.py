"""The output every student returns, whatever its architecture."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


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
