"""Images picked from a prepared split as the served graphs take them: numpy, no torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from codistill.data.shards import ShardReader


def evenly_spaced_images(prepared_dir: str | Path, split: str, count: int) -> list[np.ndarray]:
    """``count`` 1×H×W×3 uint8 RGB images spread evenly over ``split``, at native size."""
    reader = ShardReader(Path(prepared_dir))
    rows = reader.require_split(split)
    picks = np.unique(np.linspace(0, len(rows) - 1, num=min(count, len(rows))).round().astype(int))
    return [reader.read(rows[int(i)])[0][None] for i in picks]
