"""Cityscapes fine annotations: ``leftImg8bit/`` images and ``gtFine/*_labelIds.png`` masks."""

from __future__ import annotations

from codistill.data.base import DatasetReader, SampleRef, register_reader
from codistill.data.spec import IGNORE_INDEX, DatasetSpec

# (label id, train id) for the 19 evaluated classes of the official label table.
_EVALUATED = (
    (7, 0),
    (8, 1),
    (11, 2),
    (12, 3),
    (13, 4),
    (17, 5),
    (19, 6),
    (20, 7),
    (21, 8),
    (22, 9),
    (23, 10),
    (24, 11),
    (25, 12),
    (26, 13),
    (27, 14),
    (28, 15),
    (31, 16),
    (32, 17),
    (33, 18),
)
_NUM_LABEL_IDS = 34  # label ids 0..33 appear in *_labelIds.png; the rest map to ignore

CITYSCAPES = DatasetSpec(
    name="cityscapes",
    class_names=(
        "road",
        "sidewalk",
        "building",
        "wall",
        "fence",
        "pole",
        "traffic light",
        "traffic sign",
        "vegetation",
        "terrain",
        "sky",
        "person",
        "rider",
        "car",
        "truck",
        "bus",
        "train",
        "motorcycle",
        "bicycle",
    ),
    palette=(
        (128, 64, 128),
        (244, 35, 232),
        (70, 70, 70),
        (102, 102, 156),
        (190, 153, 153),
        (153, 153, 153),
        (250, 170, 30),
        (220, 220, 0),
        (107, 142, 35),
        (152, 251, 152),
        (70, 130, 180),
        (220, 20, 60),
        (255, 0, 0),
        (0, 0, 142),
        (0, 0, 70),
        (0, 60, 100),
        (0, 80, 100),
        (0, 0, 230),
        (119, 11, 32),
    ),
    label_map={**dict.fromkeys(range(_NUM_LABEL_IDS), IGNORE_INDEX), **dict(_EVALUATED)},
)

_SPLITS = ("train", "val", "test")
_IMAGE_SUFFIX = "_leftImg8bit.png"
_MASK_SUFFIX = "_gtFine_labelIds.png"


@register_reader("cityscapes")
class CityscapesReader(DatasetReader):
    """Reads ``leftImg8bit/{split}/{city}/*`` with masks under ``gtFine/{split}/{city}/``."""

    spec = CITYSCAPES

    def splits(self) -> list[str]:
        """The splits whose image folder exists."""
        return [s for s in _SPLITS if (self.root / "leftImg8bit" / s).is_dir()]

    def samples(self, split: str) -> list[SampleRef]:
        """One sample per ``*_leftImg8bit.png``, matched to its ``*_gtFine_labelIds.png``."""
        if split not in self.splits():
            raise self._unknown_split(split)
        refs = []
        for image in sorted((self.root / "leftImg8bit" / split).glob(f"*/*{_IMAGE_SUFFIX}")):
            city = image.parent.name
            stem = image.name.removesuffix(_IMAGE_SUFFIX)
            refs.append(
                SampleRef(
                    sample_id=f"{split}/{city}/{stem}",
                    split=split,
                    image_path=image,
                    mask_path=self.root / "gtFine" / split / city / f"{stem}{_MASK_SUFFIX}",
                )
            )
        return refs
