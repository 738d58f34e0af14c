"""The smallest image side the students accept, for evaluation and serving alike."""

from __future__ import annotations

import math

# The ViT's first stage (stride 4) must hold at least its 8×8 spatial-reduction window.
MIN_INPUT_SIDE = 32


def min_native_side(scale: float) -> int:
    """The smallest native image side that is still ``MIN_INPUT_SIDE`` once resized by ``scale``."""
    return math.ceil(MIN_INPUT_SIDE / scale)
