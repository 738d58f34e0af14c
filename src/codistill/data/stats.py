"""Dataset statistics: class pixel frequencies per split and per-channel mean/std."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from codistill.data.manifest import ManifestRow


class ChannelMoments:
    """Accumulates per-channel mean and standard deviation of uint8 RGB images in [0, 1]."""

    def __init__(self) -> None:
        self._sum = np.zeros(3, dtype=np.float64)
        self._sum_sq = np.zeros(3, dtype=np.float64)
        self._count = 0

    def add(self, rgb: np.ndarray) -> None:
        """Add one H×W×3 uint8 image."""
        pixels = rgb.reshape(-1, 3).astype(np.float64) / 255.0
        self._sum += pixels.sum(axis=0)
        self._sum_sq += np.square(pixels).sum(axis=0)
        self._count += pixels.shape[0]

    def result(self) -> tuple[list[float], list[float]]:
        """(mean, std) per channel; raises if no image was added."""
        if self._count == 0:
            raise ValueError("no image to compute mean/std from")
        mean = self._sum / self._count
        std = np.sqrt(np.maximum(self._sum_sq / self._count - np.square(mean), 0.0))
        return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def class_statistics(rows: list[ManifestRow], class_names: tuple[str, ...]) -> dict:
    """Per split: pixel counts per class, ignored pixels, and each class's labelled share."""
    totals: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(len(class_names) + 1, np.int64))
    for row in rows:
        if row.class_pixels is not None:
            totals[row.split] += np.asarray(row.class_pixels, dtype=np.int64)
    result = {}
    for split, counts in totals.items():
        labelled = int(counts[:-1].sum())
        result[split] = {
            "labelled_pixels": labelled,
            "ignored_pixels": int(counts[-1]),
            "class_pixels": {n: int(c) for n, c in zip(class_names, counts[:-1], strict=True)},
            "class_share": {
                n: (round(float(c) / labelled, 6) if labelled else 0.0)
                for n, c in zip(class_names, counts[:-1], strict=True)
            },
        }
    return result
