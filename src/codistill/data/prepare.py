"""Preparing a raw dataset tree: compact shards, a manifest and statistics, written atomically."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from codistill.artifacts import (
    file_sha256,
    folder_bytes,
    staged_output,
    write_json_atomic,
    write_text_atomic,
)
from codistill.config import PrepareConfig
from codistill.data.base import DatasetReader, SampleRef
from codistill.data.codec import encode_jpeg, encode_png
from codistill.data.inspect import InspectedSample, inspect_sample
from codistill.data.manifest import MANIFEST_NAME, ManifestRow, manifest_text
from codistill.data.shards import ShardWriter
from codistill.data.stats import ChannelMoments, class_statistics

DATASET_JSON = "dataset.json"
STATS_JSON = "stats.json"
MEAN_STD_SPLIT = "train"


class PrepareError(RuntimeError):
    """The prepared output breaks a limit; the previous output is left in place."""


@dataclass(frozen=True)
class EncodedSample:
    """An inspected sample with its encoded image and mask records (None if undecodable)."""

    inspected: InspectedSample
    image_record: bytes | None
    mask_record: bytes | None


def _inspect_and_encode(ref: SampleRef, reader: DatasetReader, quality: int) -> EncodedSample:
    inspected = inspect_sample(ref, reader.spec)
    if not inspected.decoded:
        return EncodedSample(inspected, None, None)
    return EncodedSample(
        inspected, encode_jpeg(inspected.image, quality), encode_png(inspected.labels)
    )


def _manifest_row(
    sample: EncodedSample, root: Path, position: tuple[str, int, int] | None
) -> ManifestRow:
    found = sample.inspected
    image, labels = found.image, found.labels
    shard, image_offset, mask_offset = position if position else ("", None, None)
    return ManifestRow(
        sample_id=found.ref.sample_id,
        split=found.ref.split,
        image_file=os.path.relpath(found.ref.image_path, root),
        mask_file=os.path.relpath(found.ref.mask_path, root),
        image_ok=image is not None,
        mask_ok=labels is not None,
        errors="; ".join(e for e in (found.image_error, found.mask_error) if e),
        height=image.shape[0] if image is not None else None,
        width=image.shape[1] if image is not None else None,
        mask_height=labels.shape[0] if labels is not None else None,
        mask_width=labels.shape[1] if labels is not None else None,
        content_hash=found.content_hash,
        invalid_label_values=" ".join(str(v) for v in found.invalid_values),
        invalid_label_pixels=found.invalid_pixels if labels is not None else None,
        shard=shard,
        image_offset=image_offset,
        image_nbytes=len(sample.image_record) if position else None,
        mask_offset=mask_offset,
        mask_nbytes=len(sample.mask_record) if position else None,
        class_pixels=(
            tuple(int(c) for c in found.class_pixels) if found.class_pixels is not None else None
        ),
    )


def _write_split(
    reader: DatasetReader,
    split: str,
    folder: Path,
    cfg: PrepareConfig,
    moments: ChannelMoments,
    pool: ThreadPoolExecutor,
) -> tuple[list[ManifestRow], list[Path]]:
    writer = ShardWriter(folder, split, cfg.shard_mib * 2**20)
    refs = reader.samples(split)
    rows = []
    encoded = pool.map(lambda r: _inspect_and_encode(r, reader, cfg.jpeg_quality), refs)
    for sample in tqdm(
        encoded, total=len(refs), desc=f"prepare {split}", leave=False, disable=None
    ):
        position = None
        if sample.image_record is not None:
            position = writer.append(sample.image_record, sample.mask_record)
            if split == MEAN_STD_SPLIT:
                moments.add(sample.inspected.image)
        rows.append(_manifest_row(sample, reader.root, position))
    writer.close()
    return rows, writer.paths


def prepare_dataset(reader: DatasetReader, out_dir: str | Path, cfg: PrepareConfig) -> dict:
    """Write shards, ``manifest.csv``, ``stats.json`` and ``dataset.json`` into ``out_dir``.

    Samples that fail to decode are listed in the manifest with the reason and left out of the
    shards; the validate stage decides whether the dataset is usable. The folder is replaced
    only once complete and within ``cfg.max_total_mib``.
    """
    out_dir = Path(out_dir)
    spec = reader.spec
    with staged_output(out_dir) as staged:
        rows: list[ManifestRow] = []
        splits = {}
        moments = ChannelMoments()
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            for split in reader.splits():
                split_rows, shards = _write_split(reader, split, staged, cfg, moments, pool)
                rows += split_rows
                splits[split] = {
                    "samples": len(split_rows),
                    "in_shards": sum(r.in_shards for r in split_rows),
                    "shards": [p.name for p in shards],
                }
        write_text_atomic(staged / MANIFEST_NAME, manifest_text(rows, spec.class_names))
        mean, std = moments.result() if MEAN_STD_SPLIT in splits else ([], [])
        write_json_atomic(
            staged / STATS_JSON,
            {
                "mean": mean,
                "std": std,
                "mean_std_split": MEAN_STD_SPLIT,
                "splits": class_statistics(rows, spec.class_names),
            },
        )
        summary = {
            "dataset": spec.name,
            "num_classes": spec.num_classes,
            "class_names": list(spec.class_names),
            "palette": [list(c) for c in spec.palette],
            "ignore_index": 255,
            "encoding": {
                "image": "jpeg",
                "jpeg_quality": cfg.jpeg_quality,
                "chroma_subsampling": "4:4:4",
                "mask": "png",
            },
            "splits": splits,
            "manifest_sha256": file_sha256(staged / MANIFEST_NAME),
        }
        summary["total_bytes"] = folder_bytes(staged)
        write_json_atomic(staged / DATASET_JSON, summary)
        total_mib = folder_bytes(staged) / 2**20
        if total_mib > cfg.max_total_mib:
            raise PrepareError(
                f"prepared output is {total_mib:.1f} MiB, over prepare.max_total_mib = "
                f"{cfg.max_total_mib}; lower prepare.jpeg_quality or raise the limit"
            )
    return summary
