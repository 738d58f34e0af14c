"""What a dataset's labels mean: class names, colours and the raw-id to train-id mapping."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = 255


@dataclass(frozen=True)
class DatasetSpec:
    """Classes of a segmentation dataset and how its raw mask values map to train ids.

    ``label_map`` lists every raw value a valid mask may hold; a raw value outside it is
    invalid data, and it is never silently folded into the ignore index.
    """

    name: str
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    label_map: Mapping[int, int]

    def __post_init__(self) -> None:
        if len(self.palette) != len(self.class_names):
            raise ValueError(
                f"{self.name}: {len(self.palette)} colours for {len(self.class_names)} classes"
            )
        bad = {t for t in self.label_map.values() if t != IGNORE_INDEX and t >= self.num_classes}
        if bad:
            raise ValueError(f"{self.name}: train ids {sorted(bad)} exceed the class count")

    @property
    def num_classes(self) -> int:
        """Number of evaluated classes (the ignore index excluded)."""
        return len(self.class_names)

    def lookup_table(self) -> np.ndarray:
        """A 256-entry uint8 table from raw mask value to train id; invalid values go to 255."""
        table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        for raw, train in self.label_map.items():
            table[raw] = train
        return table

    def valid_raw_values(self) -> np.ndarray:
        """A 256-entry boolean mask of the raw values a label image may contain."""
        valid = np.zeros(256, dtype=bool)
        valid[list(self.label_map)] = True
        return valid

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """Turn an H×W train-id map into an H×W×3 colour image (ignored pixels black)."""
        colours = np.zeros((256, 3), dtype=np.uint8)
        colours[: self.num_classes] = np.asarray(self.palette, dtype=np.uint8)
        return colours[labels]
