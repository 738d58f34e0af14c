"""The tables the data gate checks, derived from the prepared manifest and statistics."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from codistill.config import ValidateConfig
from codistill.data.manifest import MANIFEST_NAME
from codistill.data.prepare import DATASET_JSON, STATS_JSON

SHARE_SPLIT = "train"


def _size_text(height: pd.Series, width: pd.Series) -> pd.Series:
    text = height.astype("Int64").astype(str) + "x" + width.astype("Int64").astype(str)
    return text.where(height.notna() & width.notna(), None)


def samples_table(prepared_dir: Path, cfg: ValidateConfig) -> pd.DataFrame:
    """One row per sample, with the derived columns the expectations read."""
    frame = pd.read_csv(
        prepared_dir / MANIFEST_NAME, dtype={"errors": str, "invalid_label_values": str}
    )
    frame["errors"] = frame["errors"].fillna("")
    frame["invalid_label_values"] = frame["invalid_label_values"].fillna("")
    frame["image_size"] = _size_text(frame["height"], frame["width"])
    frame["mask_size"] = _size_text(frame["mask_height"], frame["mask_width"])
    expected = cfg.image_size and f"{cfg.image_size[0]}x{cfg.image_size[1]}"
    frame["expected_image_size"] = pd.Series([expected] * len(frame), dtype=object)
    hashed = frame["content_hash"].notna() & (frame["content_hash"] != "")
    splits_per_hash = frame[hashed].groupby("content_hash")["split"].transform("nunique")
    frame["splits_with_same_content"] = splits_per_hash.reindex(frame.index)
    return frame


def splits_table(samples: pd.DataFrame, cfg: ValidateConfig) -> pd.DataFrame:
    """One row per split named in the config or found in the manifest: found vs expected."""
    found = samples.groupby("split").size()
    names = list(cfg.split_sizes) + [s for s in found.index if s not in cfg.split_sizes]
    return pd.DataFrame(
        {
            "split": names,
            "samples": [int(found.get(name, 0)) for name in names],
            "expected": [cfg.split_sizes.get(name) for name in names],
        }
    ).astype({"expected": "Float64"})


def classes_table(prepared_dir: Path, cfg: ValidateConfig) -> pd.DataFrame:
    """One row per class: its share of labelled training pixels and its allowed range."""
    class_names = json.loads((prepared_dir / DATASET_JSON).read_text())["class_names"]
    stats = json.loads((prepared_dir / STATS_JSON).read_text())["splits"]
    shares = stats.get(SHARE_SPLIT, {}).get("class_share", {})
    bounds = [cfg.class_share.bounds_for(name) for name in class_names]
    return pd.DataFrame(
        {
            "class_name": class_names,
            "share": [shares.get(name, 0.0) for name in class_names],
            "min_share": [low for low, _ in bounds],
            "max_share": [high for _, high in bounds],
        }
    )
