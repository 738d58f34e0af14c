from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from codistill.data import IGNORE_INDEX, create_reader, dataset_spec
from codistill.data.inspect import inspect_sample
from tests.conftest import TINY_SPLITS, save_png, synthetic_image


def build_cityscapes_tree(root: Path) -> Path:
    rng = np.random.default_rng(1)
    labels = np.array([[7, 8, 26, 33], [0, 1, 23, 24]], dtype=np.uint8).repeat(6, 0).repeat(8, 1)
    for split, city, stem in [
        ("train", "aachen", "aachen_000000_000019"),
        ("train", "bonn", "bonn_000001_000019"),
        ("val", "lindau", "lindau_000000_000019"),
    ]:
        save_png(
            synthetic_image(rng)[:12],
            root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
        )
        save_png(labels, root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")
    return root


def build_voc_tree(root: Path) -> Path:
    rng = np.random.default_rng(2)
    labels = np.array([[0, 15, 255], [7, 20, 0]], dtype=np.uint8).repeat(12, 0).repeat(10, 1)
    palette = [
        c
        for i in range(256)
        for c in dataset_spec("voc").colorize(np.array([[min(i, 255)]], dtype=np.uint8))[0, 0]
    ]
    for image_id in ("2007_000032", "2007_000039", "2008_000002"):
        path = root / "JPEGImages" / f"{image_id}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(synthetic_image(rng)[:, :30]).save(path)
        mask = Image.fromarray(labels, mode="P")
        mask.putpalette(palette)
        (root / "SegmentationClass").mkdir(parents=True, exist_ok=True)
        mask.save(root / "SegmentationClass" / f"{image_id}.png")
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("2007_000032\n2008_000002\n")
    (lists / "val.txt").write_text("2007_000039\n")
    return root


def test_camvid_lists_splits_and_maps_void_to_ignore(camvid_tree):
    reader = create_reader("camvid", camvid_tree)
    assert reader.splits() == ["train", "val", "test"]
    assert [len(reader.samples(s)) for s in reader.splits()] == list(TINY_SPLITS.values())
    ref = reader.samples("train")[0]
    assert ref.mask_path == camvid_tree / "trainannot" / ref.image_path.name
    sample = inspect_sample(ref, reader.spec)
    raw = np.asarray(Image.open(ref.mask_path))
    assert np.array_equal(sample.labels[raw == 11], np.full((raw == 11).sum(), IGNORE_INDEX))
    assert np.array_equal(sample.labels[raw < 11], raw[raw < 11])
    assert reader.spec.num_classes == 11 and len(reader.spec.palette) == 11


def test_cityscapes_maps_label_ids_to_19_train_ids(tmp_path):
    reader = create_reader("cityscapes", build_cityscapes_tree(tmp_path / "cs"))
    assert reader.splits() == ["train", "val"]
    assert [r.sample_id for r in reader.samples("train")] == [
        "train/aachen/aachen_000000_000019",
        "train/bonn/bonn_000001_000019",
    ]
    sample = inspect_sample(reader.samples("val")[0], reader.spec)
    assert sample.image_error == sample.mask_error == ""
    # label ids: 7 road, 8 sidewalk, 26 car, 33 bicycle; 0 unlabeled, 1 ego vehicle, 23 sky,
    # 24 person
    assert sample.labels[::6, ::8].tolist() == [[0, 1, 13, 18], [255, 255, 10, 11]]
    assert sample.invalid_values == ()
    assert reader.spec.num_classes == 19 and len(reader.spec.palette) == 19


def test_voc_reads_palette_masks_and_keeps_255_as_ignore(tmp_path):
    reader = create_reader("voc", build_voc_tree(tmp_path / "voc"))
    assert reader.splits() == ["train", "val"]
    assert [r.sample_id for r in reader.samples("train")] == [
        "train/2007_000032",
        "train/2008_000002",
    ]
    sample = inspect_sample(reader.samples("val")[0], reader.spec)
    assert sample.labels[::12, ::10].tolist() == [[0, 15, 255], [7, 20, 0]]
    assert sample.class_pixels[15] == 120 and sample.class_pixels[-1] == 120
    assert reader.spec.palette[15] == (192, 128, 128)
    assert reader.spec.num_classes == 21


def test_values_outside_the_label_map_are_reported_not_folded(camvid_tree):
    reader = create_reader("camvid", camvid_tree)
    ref = reader.samples("val")[0]
    raw = np.asarray(Image.open(ref.mask_path)).copy()
    raw[:2, :3] = 200
    save_png(raw, ref.mask_path)
    sample = inspect_sample(ref, reader.spec)
    assert sample.invalid_values == (200,)
    assert sample.invalid_pixels == 6


def test_unknown_dataset_and_split_are_named(camvid_tree):
    with pytest.raises(KeyError, match="unknown dataset 'kitti'"):
        create_reader("kitti", camvid_tree)
    with pytest.raises(ValueError, match="no split 'extra'"):
        create_reader("camvid", camvid_tree).samples("extra")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_reader("camvid", camvid_tree / "missing")


def test_colorize_paints_classes_and_blacks_out_ignore():
    spec = dataset_spec("camvid")
    colours = spec.colorize(np.array([[3, 255]], dtype=np.uint8))
    assert colours[0, 0].tolist() == list(spec.palette[3])
    assert colours[0, 1].tolist() == [0, 0, 0]
