"""Each scored image's per-class intersection and union, kept beside a run's result.

From these integer counts any subset of the images (a bootstrap resample, the split without
one image) gives its mIoU exactly as the whole split's was computed
(``codistill.evaluation.metrics.mean_iou``), and a class can be left out of the mean.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from codistill.artifacts import write_bytes_atomic

SUFFIX = ".images.npz"


@dataclass(frozen=True)
class ImageCounts:
    """One run's counts: per split its image ids, per (split, role) an N×2×K count array."""

    ids: dict[str, tuple[str, ...]]
    counts: dict[tuple[str, str], np.ndarray]

    def __post_init__(self) -> None:
        for (split, role), counts in self.counts.items():
            if split not in self.ids:
                raise ValueError(f"{split}/{role}: counts for split {split!r}, which has no ids")
            if counts.ndim != 3 or counts.shape[1] != 2 or len(counts) != len(self.ids[split]):
                raise ValueError(
                    f"{split}/{role}: counts of shape {counts.shape} for "
                    f"{len(self.ids[split])} images; expected N×2×K"
                )


def counts_path(result: Path) -> Path:
    """The counts file beside the result file ``result`` (``<key>.json``)."""
    return result.with_name(result.stem + SUFFIX)


def write_image_counts(path: Path, image_counts: ImageCounts) -> None:
    """Write the counts as a compressed ``.npz``, atomically."""
    arrays = {f"ids/{split}": np.array(ids, dtype=str) for split, ids in image_counts.ids.items()}
    for (split, role), counts in image_counts.counts.items():
        if counts.min(initial=0) < 0 or counts.max(initial=0) > np.iinfo(np.uint32).max:
            raise ValueError(f"{split}/{role}: counts outside 0..2**32-1")
        arrays[f"counts/{split}/{role}"] = counts.astype(np.uint32)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_bytes_atomic(path, buffer.getvalue())


def read_image_counts(path: Path) -> ImageCounts:
    """Read counts written by ``write_image_counts``."""
    try:
        stored = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not a per-image counts file ({err})") from err
    with stored:
        ids = {
            name.removeprefix("ids/"): tuple(stored[name].tolist())
            for name in stored.files
            if name.startswith("ids/")
        }
        counts = {
            tuple(name.removeprefix("counts/").split("/")): stored[name].astype(np.int64)
            for name in stored.files
            if name.startswith("counts/")
        }
    return ImageCounts(ids, counts)
