"""The prepared dataset's manifest: one CSV row per sample, readable without pandas."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, fields
from pathlib import Path

MANIFEST_NAME = "manifest.csv"
IGNORED_COLUMN = "pixels_ignored"


@dataclass(frozen=True)
class ManifestRow:
    """What prepare learned about one sample, and where its record sits in the shards.

    Sizes, label facts and shard positions are None where the file they come from did not
    decode; ``errors`` then says why.
    """

    sample_id: str
    split: str
    image_file: str
    mask_file: str
    image_ok: bool
    mask_ok: bool
    errors: str
    height: int | None
    width: int | None
    mask_height: int | None
    mask_width: int | None
    content_hash: str
    invalid_label_values: str
    invalid_label_pixels: int | None
    shard: str
    image_offset: int | None
    image_nbytes: int | None
    mask_offset: int | None
    mask_nbytes: int | None
    class_pixels: tuple[int, ...] | None

    @property
    def in_shards(self) -> bool:
        """True when the sample's encoded record was written to a shard."""
        return bool(self.shard)


_SCALAR_FIELDS = [f.name for f in fields(ManifestRow) if f.name != "class_pixels"]
_INT_FIELDS = {
    "height",
    "width",
    "mask_height",
    "mask_width",
    "invalid_label_pixels",
    "image_offset",
    "image_nbytes",
    "mask_offset",
    "mask_nbytes",
}
_BOOL_FIELDS = {"image_ok", "mask_ok"}


def class_columns(class_names: tuple[str, ...] | list[str]) -> list[str]:
    """Manifest column names of the per-class pixel counts, the ignored pixels last."""
    return [f"pixels_{name.replace(' ', '_')}" for name in class_names] + [IGNORED_COLUMN]


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def manifest_text(rows: list[ManifestRow], class_names: tuple[str, ...]) -> str:
    """Render ``rows`` as CSV text with a fixed column order."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_SCALAR_FIELDS + class_columns(class_names))
    width = len(class_names) + 1
    for row in rows:
        counts = row.class_pixels if row.class_pixels is not None else (None,) * width
        writer.writerow(
            [_cell(getattr(row, name)) for name in _SCALAR_FIELDS] + [_cell(c) for c in counts]
        )
    return buffer.getvalue()


def _parse(name: str, text: str) -> object:
    if name in _BOOL_FIELDS:
        return text == "1"
    if name in _INT_FIELDS:
        return int(text) if text else None
    return text


def read_manifest(path: Path) -> list[ManifestRow]:
    """Read a manifest written by ``manifest_text``."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        count_columns = [c for c in reader.fieldnames or [] if c.startswith("pixels_")]
        rows = []
        for record in reader:
            counts = [record[c] for c in count_columns]
            rows.append(
                ManifestRow(
                    **{name: _parse(name, record[name]) for name in _SCALAR_FIELDS},
                    class_pixels=tuple(int(c) for c in counts) if all(counts) else None,
                )
            )
    return rows
