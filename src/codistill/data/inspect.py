"""Inspect one raw sample: decode it, check it, hash it and count its labels."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from codistill.data.base import SampleRef
from codistill.data.codec import DecodeError, read_dataset_rgb, read_label_map
from codistill.data.spec import DatasetSpec


@dataclass
class InspectedSample:
    """A decoded sample (or why it failed to decode) and the facts the manifest records."""

    ref: SampleRef
    image: np.ndarray | None
    labels: np.ndarray | None
    image_error: str
    mask_error: str
    content_hash: str
    invalid_values: tuple[int, ...]
    invalid_pixels: int
    class_pixels: np.ndarray | None

    @property
    def decoded(self) -> bool:
        """True when both the image and the mask decoded."""
        return self.image is not None and self.labels is not None


def content_hash(rgb: np.ndarray) -> str:
    """SHA-256 of the decoded pixels and their shape, so re-encoded copies hash alike."""
    digest = hashlib.sha256(repr(rgb.shape).encode())
    digest.update(np.ascontiguousarray(rgb).data)
    return digest.hexdigest()


def file_hash(path: Path) -> str:
    """SHA-256 of a file's bytes, or ``""`` if it cannot be read."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""


def inspect_sample(ref: SampleRef, spec: DatasetSpec) -> InspectedSample:
    """Decode ``ref`` and record every problem instead of raising."""
    image = labels = None
    image_error = mask_error = ""
    digest = ""
    try:
        image = read_dataset_rgb(ref.image_path)
        digest = content_hash(image)
    except DecodeError as err:
        image_error = str(err)
        digest = file_hash(ref.image_path)
    invalid_values: tuple[int, ...] = ()
    invalid_pixels = 0
    class_pixels = None
    try:
        raw = read_label_map(ref.mask_path)
        raw_counts = np.bincount(raw.ravel(), minlength=256)
        invalid = (raw_counts > 0) & ~spec.valid_raw_values()
        invalid_values = tuple(int(v) for v in np.flatnonzero(invalid))
        invalid_pixels = int(raw_counts[invalid].sum())
        labels = spec.lookup_table()[raw]
        counts = np.bincount(labels.ravel(), minlength=256)
        class_pixels = np.append(counts[: spec.num_classes], counts[spec.num_classes :].sum())
    except DecodeError as err:
        mask_error = str(err)
    return InspectedSample(
        ref=ref,
        image=image,
        labels=labels,
        image_error=image_error,
        mask_error=mask_error,
        content_hash=digest,
        invalid_values=invalid_values,
        invalid_pixels=invalid_pixels,
        class_pixels=class_pixels,
    )
