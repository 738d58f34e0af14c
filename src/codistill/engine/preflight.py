"""Checks of the parameters against the prepared data, run before a stage starts its work."""

from __future__ import annotations

from pathlib import Path

from codistill.config import ConfigError, Params
from codistill.data.manifest import MANIFEST_NAME, read_manifest


def largest_training_image(prepared: Path) -> tuple[int, int]:
    """The largest height and width among the training images in the shards."""
    rows = [
        row
        for row in read_manifest(Path(prepared) / MANIFEST_NAME)
        if row.split == "train" and row.shard and row.height and row.width
    ]
    if not rows:
        raise ConfigError(f"{prepared}: no decodable training image; run the prepare stage")
    return max(row.height for row in rows), max(row.width for row in rows)


def require_crop_fits(params: Params, prepared: Path) -> None:
    """Raise ConfigError if ``train.crop`` exceeds the largest training image at its top scale.

    A larger crop would hold nothing but padding beyond the image, at any memory cost.
    """
    height, width = largest_training_image(prepared)
    top = max(params.train.scale)
    limit = (int(height * top), int(width * top))
    crop = tuple(params.train.crop)
    if crop[0] > limit[0] or crop[1] > limit[1]:
        raise ConfigError(
            f"train.crop {list(crop)} is larger than the largest training image at the top of "
            f"train.scale ({height}×{width} × {top} = {limit[0]}×{limit[1]}); use at most "
            f"{list(limit)}"
        )
