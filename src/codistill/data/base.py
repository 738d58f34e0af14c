"""The one interface every dataset reader implements, and the registry that names them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from codistill.data.spec import DatasetSpec


@dataclass(frozen=True)
class SampleRef:
    """Where one sample's image and mask live; the mask file may be missing on disk."""

    sample_id: str
    split: str
    image_path: Path
    mask_path: Path


class DatasetReader(ABC):
    """Lists the samples of one dataset laid out in its standard directory tree."""

    spec: DatasetSpec

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.spec.name}: dataset root {self.root} does not exist")

    @abstractmethod
    def splits(self) -> list[str]:
        """The splits present under the root, in canonical order."""

    @abstractmethod
    def samples(self, split: str) -> list[SampleRef]:
        """Every sample of ``split``, sorted by id."""

    def all_samples(self) -> list[SampleRef]:
        """Every sample of every split."""
        return [ref for split in self.splits() for ref in self.samples(split)]

    def _unknown_split(self, split: str) -> ValueError:
        return ValueError(
            f"{self.spec.name}: no split {split!r} under {self.root} "
            f"(found: {', '.join(self.splits()) or 'none'})"
        )


_READERS: dict[str, type[DatasetReader]] = {}


def register_reader(name: str) -> Callable[[type[DatasetReader]], type[DatasetReader]]:
    """Class decorator that makes a reader available to ``create_reader`` under ``name``."""

    def add(cls: type[DatasetReader]) -> type[DatasetReader]:
        _READERS[name] = cls
        return cls

    return add


def create_reader(name: str, root: str | Path) -> DatasetReader:
    """Instantiate the reader registered as ``name`` over the tree at ``root``."""
    if name not in _READERS:
        raise KeyError(f"unknown dataset {name!r} (known: {', '.join(sorted(_READERS))})")
    return _READERS[name](root)


def dataset_spec(name: str) -> DatasetSpec:
    """The label specification of the dataset registered as ``name``."""
    if name not in _READERS:
        raise KeyError(f"unknown dataset {name!r} (known: {', '.join(sorted(_READERS))})")
    return _READERS[name].spec
