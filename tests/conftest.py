"""Shared fixtures: tiny dataset trees in each supported layout, built by the tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"

TINY_HEIGHT, TINY_WIDTH = 24, 32
TINY_SPLITS = {"train": 6, "val": 2, "test": 3}


def synthetic_image(rng: np.random.Generator) -> np.ndarray:
    """A smooth random RGB image (JPEG-friendly, like a photo rather than noise)."""
    coarse = rng.integers(0, 256, size=(3, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((TINY_WIDTH, TINY_HEIGHT), Image.BILINEAR))


def synthetic_labels(rng: np.random.Generator, values: list[int]) -> np.ndarray:
    """A blocky label map that uses every value in ``values``."""
    labels = np.empty((TINY_HEIGHT, TINY_WIDTH), dtype=np.uint8)
    blocks = np.resize(np.asarray(values, dtype=np.uint8), 4 * 8)
    rng.shuffle(blocks)
    for i, value in enumerate(blocks):
        row, col = divmod(i, 8)
        labels[row * 6 : (row + 1) * 6, col * 4 : (col + 1) * 4] = value
    return labels


def save_png(array: np.ndarray, path: Path) -> Path:
    """Write ``array`` as a PNG, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def build_camvid_tree(root: Path, seed: int = 0) -> Path:
    """A CamVid-layout tree with TINY_SPLITS samples and every raw id 0..11 in each mask."""
    rng = np.random.default_rng(seed)
    for split, count in TINY_SPLITS.items():
        for i in range(count):
            name = f"{split[:2]}_{i:03d}.png"
            save_png(synthetic_image(rng), root / split / name)
            save_png(synthetic_labels(rng, list(range(12))), root / f"{split}annot" / name)
    return root


@pytest.fixture
def camvid_tree(tmp_path: Path) -> Path:
    """A fresh tiny CamVid tree."""
    return build_camvid_tree(tmp_path / "camvid")


@pytest.fixture(scope="session")
def tiny_validate_params(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A params file whose data gate expects the tiny tree's split sizes."""
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    sizes = "\n".join(f"    {s}: {n}" for s, n in TINY_SPLITS.items())
    path.write_text(f"validate:\n  split_sizes:\n{sizes}\n")
    return path
