"""What the training loop reports: loss means over each log window, and a one-line record."""

from __future__ import annotations

import torch

from codistill.config import TERM_NAMES

# Every method logs the same columns (an inactive term reads 0), so plots work for all.
CURVE_TERMS = ("sup", *TERM_NAMES, "total")


def progress_line(row: dict[str, float], total: int, seconds_per_step: float) -> str:
    """One log line for a curves row: iteration, nonzero losses, throughput and ETA."""
    losses = " ".join(
        f"{k.removeprefix('loss_')} {row[k]:.4g}"
        for k in (f"loss_{t}" for t in CURVE_TERMS)
        if row[k]
    )
    left = round((total - row["iteration"]) * seconds_per_step)
    return (
        f"train: iteration {row['iteration']}/{total}, loss {losses}, "
        f"{row['images_per_s']:.3g} images/s, ETA {left // 60}m{left % 60:02d}s"
    )


class WindowMeans:
    """Means of each logged loss part over the steps since the last log row."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0

    def add(self, parts: dict[str, torch.Tensor]) -> None:
        """Add one step's parts (tensors stay on their device until ``pop``)."""
        for key, value in parts.items():
            self.sums[key] = self.sums[key] + value if key in self.sums else value
        self.steps += 1

    def pop(self) -> dict[str, float]:
        """The means since the last call, and start a new window."""
        means = {k: float(v) / max(self.steps, 1) for k, v in self.sums.items()}
        self.sums, self.steps = {}, 0
        return means
