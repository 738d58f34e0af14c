"""Torch datasets over prepared shards, and a batch sampler that resumes mid-epoch."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from codistill.data.prepare import DATASET_JSON, STATS_JSON
from codistill.data.shards import ShardReader
from codistill.data.transforms import Augmentation, to_tensors


class PreparedSplit(Dataset):
    """One split of a prepared dataset as normalized tensors.

    Keys are ``(index, seed)``: the seed drives the sample's augmentation, so a sample's
    pixels depend only on the key, whichever worker or process loads it. Without an
    augmentation the seed is ignored and the whole image is returned.
    """

    def __init__(
        self, prepared_dir: str | Path, split: str, augmentation: Augmentation | None = None
    ) -> None:
        prepared_dir = Path(prepared_dir)
        self.reader = ShardReader(prepared_dir)
        self.rows = self.reader.require_split(split)
        stats = json.loads((prepared_dir / STATS_JSON).read_text())
        self.mean, self.std = stats["mean"], stats["std"]
        self.info = json.loads((prepared_dir / DATASET_JSON).read_text())
        self.augmentation = augmentation

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = key
        pixels, labels = to_tensors(*self.reader.read(self.rows[index]), self.mean, self.std)
        if self.augmentation is not None:
            pixels, labels = self.augmentation(pixels, labels, np.random.default_rng(seed))
        return pixels, labels

    def class_pixel_counts(self) -> list[int]:
        """Labelled pixels per class over the split (from the manifest; void not counted)."""
        counts = np.zeros(self.info["num_classes"], dtype=np.int64)
        for row in self.rows:
            if row.class_pixels is not None:
                counts += np.asarray(row.class_pixels[: len(counts)], dtype=np.int64)
        return counts.tolist()

    def sample_id(self, index: int) -> str:
        """The manifest id of sample ``index``."""
        return self.rows[index].sample_id


class ResumableBatchSampler(Sampler):
    """Yields ``(index, seed)`` batches for iterations ``start .. total-1`` of a run.

    The run reads one stream of reshuffled epochs; iteration ``i`` takes stream positions
    ``[i·B·W, (i+1)·B·W)`` and rank ``r`` its own slice of ``B``. Every batch is a pure
    function of (seed, iteration, rank), so a resumed run sees exactly the batches the
    interrupted one would have.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        seed: int,
        start: int,
        total: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.start, self.total = start, total
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return max(0, self.total - self.start)

    def _epoch_order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.num_samples, generator=generator).tolist()

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        orders: dict[int, list[int]] = {}
        per_iteration = self.batch_size * self.world_size
        for iteration in range(self.start, self.total):
            first = iteration * per_iteration + self.rank * self.batch_size
            batch = []
            for position in range(first, first + self.batch_size):
                epoch, offset = divmod(position, self.num_samples)
                if epoch not in orders:
                    orders = {epoch: self._epoch_order(epoch)}
                batch.append((orders[epoch][offset], self.seed * 1_000_003 + position))
            yield batch
