"""Append-only shard files of encoded records, and random access to them by offset."""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np

from codistill.data.codec import decode_label_bytes, decode_rgb_bytes
from codistill.data.manifest import MANIFEST_NAME, ManifestRow, read_manifest

SHARD_SUFFIX = ".shard"


class EmptySplitError(ValueError):
    """A prepared dataset has no readable sample in the requested split."""


class ShardWriter:
    """Writes one split's records into ``{split}-NNN.shard`` files of bounded size."""

    def __init__(self, directory: Path, split: str, max_bytes: int) -> None:
        self.directory = directory
        self.split = split
        self.max_bytes = max_bytes
        self._index = -1
        self._handle = None
        self._size = 0
        self.paths: list[Path] = []

    def _roll(self) -> None:
        self.close()
        self._index += 1
        path = self.directory / f"{self.split}-{self._index:03d}{SHARD_SUFFIX}"
        self._handle = open(path, "wb")  # noqa: SIM115 - closed on roll or close()
        self._size = 0
        self.paths.append(path)

    def append(self, image: bytes, mask: bytes) -> tuple[str, int, int]:
        """Append one sample's image and mask; return (shard name, image offset, mask offset)."""
        if self._handle is None or (
            self._size and self._size + len(image) + len(mask) > self.max_bytes
        ):
            self._roll()
        image_offset = self._size
        self._handle.write(image)
        self._handle.write(mask)
        self._size += len(image) + len(mask)
        return self.paths[-1].name, image_offset, image_offset + len(image)

    def close(self) -> None:
        """Flush and close the current shard file."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class ShardReader:
    """Reads decoded samples of a prepared dataset through memory-mapped shards."""

    def __init__(self, prepared_dir: str | Path) -> None:
        self.directory = Path(prepared_dir)
        manifest = self.directory / MANIFEST_NAME
        if not manifest.is_file():
            raise FileNotFoundError(f"{manifest}: no manifest; run the prepare stage first")
        self.rows = [row for row in read_manifest(manifest) if row.in_shards]
        self._maps: dict[str, mmap.mmap] = {}

    def split(self, name: str) -> list[ManifestRow]:
        """The readable samples of split ``name``, in manifest order."""
        return [row for row in self.rows if row.split == name]

    def require_split(self, name: str) -> list[ManifestRow]:
        """Like ``split``, but an empty split is an error naming the splits that exist."""
        rows = self.split(name)
        if not rows:
            present = ", ".join(dict.fromkeys(row.split for row in self.rows)) or "none"
            raise EmptySplitError(
                f"{self.directory}: split {name!r} has no readable samples (splits: {present})"
            )
        return rows

    def _shard(self, name: str) -> mmap.mmap:
        if name not in self._maps:
            with open(self.directory / name, "rb") as handle:
                self._maps[name] = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        return self._maps[name]

    def read(self, row: ManifestRow) -> tuple[np.ndarray, np.ndarray]:
        """Decode one sample: (H×W×3 uint8 image, H×W uint8 train-id labels)."""
        shard = self._shard(row.shard)
        image = decode_rgb_bytes(shard[row.image_offset : row.image_offset + row.image_nbytes])
        labels = decode_label_bytes(shard[row.mask_offset : row.mask_offset + row.mask_nbytes])
        return image, labels

    def close(self) -> None:
        """Release the memory maps."""
        for mapped in self._maps.values():
            mapped.close()
        self._maps.clear()
