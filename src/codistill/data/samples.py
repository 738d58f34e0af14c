"""Images picked from a prepared split as the served graphs take them: numpy, no torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from codistill.data.shards import ShardReader


def evenly_spaced_images(prepared_dir: str | Path, split: str, count: int) -> list[np.ndarray]:
    """``count`` 1×H×W×3 uint8 RGB images spread evenly over ``split``, at native size."""
    reader = ShardReader(Path(prepared_dir))
    try:
        rows = reader.require_split(split)
        spread = np.linspace(0, len(rows) - 1, num=min(count, len(rows)))
        return [reader.read(rows[int(i)])[0][None] for i in np.unique(spread.round().astype(int))]
    finally:
        reader.close()
