"""Decoding raw files and encoding the compact per-sample records stored in shards."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


class DecodeError(ValueError):
    """A file is missing, unreadable or not the kind of image it should be."""


def _open_fully(source: Path | io.BytesIO, what: str) -> Image.Image:
    try:
        image = Image.open(source)
        image.load()
    except FileNotFoundError:
        raise DecodeError(f"{what}: file not found") from None
    except PermissionError as err:
        raise DecodeError(f"{what}: cannot read ({err.strerror.lower()})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DecodeError(f"{what}: cannot decode ({err})") from None
    return image


def read_rgb(path: Path) -> np.ndarray:
    """Decode an image file into an H×W×3 uint8 array, or raise DecodeError."""
    return np.asarray(_open_fully(path, "image").convert("RGB"))


def read_dataset_rgb(path: Path) -> np.ndarray:
    """Decode a dataset's image, which must be stored as RGB (not grey, palette or RGBA)."""
    image = _open_fully(path, "image")
    if image.mode != "RGB":
        raise DecodeError(f"image: mode {image.mode}, not RGB")
    return np.asarray(image)


def read_label_map(path: Path) -> np.ndarray:
    """Decode a single-channel (grey or palette) label image into H×W uint8 raw ids."""
    image = _open_fully(path, "mask")
    if image.mode not in ("L", "P"):
        raise DecodeError(f"mask: mode {image.mode} is not a single-channel label image")
    return np.asarray(image)


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    """JPEG-encode an RGB array with full-resolution chroma (4:4:4)."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()


def encode_png(labels: np.ndarray) -> bytes:
    """Losslessly PNG-encode an H×W uint8 label map."""
    buffer = io.BytesIO()
    Image.fromarray(labels).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def decode_rgb_bytes(data: bytes | memoryview) -> np.ndarray:
    """Decode an encoded image record into an H×W×3 uint8 array."""
    return np.asarray(_open_fully(io.BytesIO(data), "image record").convert("RGB"))


def decode_label_bytes(data: bytes | memoryview) -> np.ndarray:
    """Decode an encoded label record into an H×W uint8 array."""
    return np.asarray(_open_fully(io.BytesIO(data), "mask record"))
