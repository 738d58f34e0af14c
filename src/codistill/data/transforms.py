"""Training augmentation (random scale, crop, flip) and normalization, on numpy arrays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from codistill.data.spec import IGNORE_INDEX


@dataclass(frozen=True)
class Augmentation:
    """Random scale in ``scale``, a ``crop``-sized window (padded with ignore), optional flip."""

    crop: tuple[int, int]
    scale: tuple[float, float]
    flip: bool

    def __call__(
        self, image: np.ndarray, labels: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Augment one H×W×3 image and its H×W labels with randomness drawn from ``rng``."""
        factor = rng.uniform(*self.scale)
        height, width = labels.shape
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
        labels = np.asarray(Image.fromarray(labels).resize(size, Image.NEAREST))
        crop_h, crop_w = self.crop
        pad_h, pad_w = max(0, crop_h - size[1]), max(0, crop_w - size[0])
        if pad_h or pad_w:
            image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)))
            labels = np.pad(labels, ((0, pad_h), (0, pad_w)), constant_values=IGNORE_INDEX)
        top = int(rng.integers(0, labels.shape[0] - crop_h + 1))
        left = int(rng.integers(0, labels.shape[1] - crop_w + 1))
        image = image[top : top + crop_h, left : left + crop_w]
        labels = labels[top : top + crop_h, left : left + crop_w]
        if self.flip and rng.random() < 0.5:
            image, labels = image[:, ::-1], labels[:, ::-1]
        return image, labels


def to_tensors(
    image: np.ndarray, labels: np.ndarray, mean: list[float], std: list[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized float 3×H×W image (values in [0, 1] first) and int64 H×W labels."""
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div_(255)
    pixels = (pixels - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    return pixels, torch.from_numpy(np.array(labels)).long()
