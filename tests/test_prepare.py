import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from codistill.data import PrepareError, ShardReader, create_reader, prepare_dataset
from codistill.data.manifest import read_manifest
from tests.conftest import TINY_SPLITS, repo_params


def prepared(tree: Path, out: Path, **cfg) -> dict:
    return prepare_dataset(
        create_reader("camvid", tree), out, replace(repo_params().prepare, **cfg)
    )


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / mse)


def test_shards_round_trip_images_closely_and_labels_exactly(camvid_tree, tmp_path):
    out = tmp_path / "prepared"
    prepared(camvid_tree, out)
    reader = ShardReader(out)
    spec = create_reader("camvid", camvid_tree).spec
    assert {s: len(reader.split(s)) for s in TINY_SPLITS} == TINY_SPLITS
    for row in reader.rows:
        image, labels = reader.read(row)
        original = np.asarray(Image.open(camvid_tree / row.image_file).convert("RGB"))
        raw = np.asarray(Image.open(camvid_tree / row.mask_file))
        assert image.shape == original.shape
        assert psnr(image, original) > 32
        assert np.array_equal(labels, spec.lookup_table()[raw])
    reader.close()


def test_manifest_records_size_hash_and_class_counts(camvid_tree, tmp_path):
    out = tmp_path / "prepared"
    prepared(camvid_tree, out)
    rows = read_manifest(out / "manifest.csv")
    assert len(rows) == sum(TINY_SPLITS.values())
    row = next(r for r in rows if r.sample_id == "val/va_001")
    raw = np.asarray(Image.open(camvid_tree / "valannot" / "va_001.png"))
    expected = [int((raw == k).sum()) for k in range(11)] + [int((raw == 11).sum())]
    assert list(row.class_pixels) == expected
    assert (row.height, row.width, row.mask_height, row.mask_width) == (24, 32, 24, 32)
    assert len(row.content_hash) == 64
    assert len({r.content_hash for r in rows}) == len(rows)


def test_statistics_match_a_direct_computation(camvid_tree, tmp_path):
    out = tmp_path / "prepared"
    prepared(camvid_tree, out)
    stats = json.loads((out / "stats.json").read_text())
    train = np.stack([np.asarray(Image.open(p)) for p in sorted((camvid_tree / "train").glob("*"))])
    pixels = train.reshape(-1, 3) / 255.0
    assert np.allclose(stats["mean"], pixels.mean(0), atol=1e-5)
    assert np.allclose(stats["std"], pixels.std(0), atol=1e-5)
    masks = np.stack(
        [np.asarray(Image.open(p)) for p in sorted((camvid_tree / "trainannot").glob("*"))]
    )
    labelled = int((masks < 11).sum())
    assert stats["splits"]["train"]["class_share"]["road"] == pytest.approx(
        (masks == 3).sum() / labelled, abs=1e-6
    )
    summary = json.loads((out / "dataset.json").read_text())
    assert summary["splits"]["train"]["in_shards"] == TINY_SPLITS["train"]


def test_small_shard_limit_rolls_over_to_several_files(camvid_tree, tmp_path):
    out = tmp_path / "prepared"
    prepared(camvid_tree, out, shard_mib=1)
    assert sorted(p.name for p in out.glob("*.shard")) == [
        "test-000.shard",
        "train-000.shard",
        "val-000.shard",
    ]
    from codistill.data.shards import ShardWriter

    writer = ShardWriter(tmp_path, "x", max_bytes=10)
    assert writer.append(b"123456", b"78") == ("x-000.shard", 0, 6)
    assert writer.append(b"abcdef", b"gh") == ("x-001.shard", 0, 6)
    writer.close()
    assert (tmp_path / "x-001.shard").read_bytes() == b"abcdefgh"


def test_undecodable_sample_is_listed_with_its_error_and_kept_out_of_shards(camvid_tree, tmp_path):
    (camvid_tree / "test" / "te_000.png").write_bytes(b"not a png at all")
    out = tmp_path / "prepared"
    summary = prepared(camvid_tree, out)
    assert summary["splits"]["test"] == {"samples": 3, "in_shards": 2, "shards": ["test-000.shard"]}
    row = next(r for r in read_manifest(out / "manifest.csv") if r.sample_id == "test/te_000")
    assert not row.image_ok and row.mask_ok and not row.in_shards
    assert row.errors.startswith("image: cannot decode")


def test_over_budget_output_fails_and_keeps_the_previous_output(camvid_tree, tmp_path):
    out = tmp_path / "prepared"
    prepared(camvid_tree, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (camvid_tree / "train" / "tr_000.png").unlink()
    with pytest.raises(PrepareError, match=r"over prepare\.max_total_mib = 0\.001"):
        prepared(camvid_tree, out, max_total_mib=0.001)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
