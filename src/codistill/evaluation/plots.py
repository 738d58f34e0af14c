"""Evaluation pictures: per-class IoU bars for both students and qualitative overlays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from codistill.data.spec import DatasetSpec


def per_class_iou_chart(scores: dict, class_names: list[str], path: Path) -> None:
    """A grouped bar chart of each student's IoU per class (matplotlib, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(class_names))
    width = 0.8 / len(scores)
    figure, axis = plt.subplots(figsize=(max(6, len(class_names) * 0.8), 4))
    for offset, (name, score) in enumerate(scores.items()):
        values = [v if v is not None else 0.0 for v in score["per_class_iou"]]
        axis.bar(x + offset * width, values, width, label=f"{name} (mIoU {score['miou']:.3f})")
    axis.set_xticks(x + width * (len(scores) - 1) / 2, class_names, rotation=45, ha="right")
    axis.set_ylim(0, 1)
    axis.set_ylabel("IoU")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def overlay_grid(
    examples: list[dict], spec: DatasetSpec, roles: list[str], path: Path, alpha: float = 0.55
) -> None:
    """One row per example: image, then labels and each student's prediction blended on it."""
    if not examples:
        return
    height, width = examples[0]["labels"].shape
    columns = ["image", "labels", *roles]
    grid = Image.new("RGB", (width * len(columns), (height + 16) * len(examples)), "white")
    draw = ImageDraw.Draw(grid)
    for row, example in enumerate(examples):
        image = example["image"].astype(np.float32)
        top = row * (height + 16)
        for column, name in enumerate(columns):
            if name == "image":
                tile = image
            else:
                colours = spec.colorize(example[name]).astype(np.float32)
                tile = (1 - alpha) * image + alpha * colours
            grid.paste(Image.fromarray(tile.astype(np.uint8)), (column * width, top + 16))
            draw.text(
                (column * width + 4, top + 2),
                f"{name}: {example['id']}" if column == 0 else name,
                fill="black",
            )
    grid.save(path)
