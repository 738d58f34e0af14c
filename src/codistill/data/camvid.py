"""CamVid in the SegNet layout: ``{split}/`` images beside ``{split}annot/`` label PNGs."""

from __future__ import annotations

from codistill.data.base import DatasetReader, SampleRef, register_reader
from codistill.data.spec import IGNORE_INDEX, DatasetSpec

CAMVID = DatasetSpec(
    name="camvid",
    class_names=(
        "sky",
        "building",
        "pole",
        "road",
        "sidewalk",
        "tree",
        "sign",
        "fence",
        "car",
        "pedestrian",
        "bicyclist",
    ),
    palette=(
        (128, 128, 128),
        (128, 0, 0),
        (192, 192, 128),
        (128, 64, 128),
        (60, 40, 222),
        (128, 128, 0),
        (192, 128, 128),
        (64, 64, 128),
        (64, 0, 128),
        (64, 64, 0),
        (0, 128, 192),
    ),
    # Raw ids 0..10 are the classes; 11 is "unlabelled" (void) and becomes the ignore index.
    label_map={**{i: i for i in range(11)}, 11: IGNORE_INDEX},
)

_SPLITS = ("train", "val", "test")


@register_reader("camvid")
class CamVidReader(DatasetReader):
    """Reads ``root/{train,val,test}/*.png`` with masks in ``root/{split}annot/``."""

    spec = CAMVID

    def splits(self) -> list[str]:
        """The splits whose image folder exists."""
        return [s for s in _SPLITS if (self.root / s).is_dir()]

    def samples(self, split: str) -> list[SampleRef]:
        """One sample per image PNG; its mask is the same file name in the annot folder."""
        if split not in self.splits():
            raise self._unknown_split(split)
        return [
            SampleRef(
                sample_id=f"{split}/{image.stem}",
                split=split,
                image_path=image,
                mask_path=self.root / f"{split}annot" / image.name,
            )
            for image in sorted((self.root / split).glob("*.png"))
        ]
