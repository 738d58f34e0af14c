"""Normalization, the one image resize, and training augmentation (scale, crop, flip)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from codistill.data.spec import IGNORE_INDEX


def rescale_images(images: torch.Tensor, scale: float) -> torch.Tensor:
    """Bilinearly resize an N×3×H×W batch by ``scale`` (unchanged at 1).

    The one resize of the project: training augmentation, evaluation and the exported graph
    all call it, so a student sees the same pixels in training and at inference. The output
    is floor(H·scale)×floor(W·scale); at scale 0.5 each pixel is the mean of a 2×2 block.
    """
    if scale == 1.0:
        return images
    return F.interpolate(images, scale_factor=scale, mode="bilinear", align_corners=False)


@dataclass(frozen=True)
class Augmentation:
    """Random scale in ``scale``, a ``crop``-sized window (padded with ignore), optional flip."""

    crop: tuple[int, int]
    scale: tuple[float, float]
    flip: bool

    def __call__(
        self, image: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment one normalized 3×H×W image and its H×W labels with ``rng``'s randomness."""
        factor = float(rng.uniform(*self.scale))
        image = rescale_images(image[None], factor)[0]
        labels = F.interpolate(
            labels[None, None].to(torch.uint8), size=image.shape[-2:], mode="nearest-exact"
        )[0, 0].long()
        crop_h, crop_w = self.crop
        pad_h, pad_w = max(0, crop_h - image.shape[1]), max(0, crop_w - image.shape[2])
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h))
            labels = F.pad(labels, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
        top = int(rng.integers(0, labels.shape[0] - crop_h + 1))
        left = int(rng.integers(0, labels.shape[1] - crop_w + 1))
        image = image[:, top : top + crop_h, left : left + crop_w]
        labels = labels[top : top + crop_h, left : left + crop_w]
        if self.flip and rng.random() < 0.5:
            image, labels = image.flip(-1), labels.flip(-1)
        return image.contiguous(), labels.contiguous()


def to_tensors(
    image: np.ndarray, labels: np.ndarray, mean: list[float], std: list[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized float 3×H×W image (values in [0, 1] first) and int64 H×W labels."""
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div_(255)
    pixels = (pixels - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    return pixels, torch.from_numpy(np.array(labels)).long()
