"""PASCAL VOC 2012 segmentation: ``JPEGImages/`` and palette PNGs in ``SegmentationClass/``."""

from __future__ import annotations

from codistill.data.base import DatasetReader, SampleRef, register_reader
from codistill.data.spec import IGNORE_INDEX, DatasetSpec


def _voc_colour(index: int) -> tuple[int, int, int]:
    """The VOC palette colour of class ``index``: its bits spread over the RGB channels."""
    r = g = b = 0
    for shift in range(8):
        r |= ((index >> 0) & 1) << (7 - shift)
        g |= ((index >> 1) & 1) << (7 - shift)
        b |= ((index >> 2) & 1) << (7 - shift)
        index >>= 3
    return r, g, b


VOC = DatasetSpec(
    name="voc",
    class_names=(
        "background",
        "aeroplane",
        "bicycle",
        "bird",
        "boat",
        "bottle",
        "bus",
        "car",
        "cat",
        "chair",
        "cow",
        "diningtable",
        "dog",
        "horse",
        "motorbike",
        "person",
        "pottedplant",
        "sheep",
        "sofa",
        "train",
        "tvmonitor",
    ),
    palette=tuple(_voc_colour(i) for i in range(21)),
    # Palette indices 0..20 are classes; 255 marks object borders and "difficult" regions.
    label_map={**{i: i for i in range(21)}, 255: IGNORE_INDEX},
)

# trainval is the union of the two, so reading it beside them would duplicate every sample.
_SPLITS = ("train", "val")


@register_reader("voc")
class VocReader(DatasetReader):
    """Reads the split lists in ``ImageSets/Segmentation/{split}.txt``."""

    spec = VOC

    def _split_file(self, split: str):
        return self.root / "ImageSets" / "Segmentation" / f"{split}.txt"

    def splits(self) -> list[str]:
        """The splits whose list file exists."""
        return [s for s in _SPLITS if self._split_file(s).is_file()]

    def samples(self, split: str) -> list[SampleRef]:
        """One sample per id listed in the split file."""
        if split not in self.splits():
            raise self._unknown_split(split)
        ids = sorted(
            {
                line.strip()
                for line in self._split_file(split).read_text().splitlines()
                if line.strip()
            }
        )
        return [
            SampleRef(
                sample_id=f"{split}/{image_id}",
                split=split,
                image_path=self.root / "JPEGImages" / f"{image_id}.jpg",
                mask_path=self.root / "SegmentationClass" / f"{image_id}.png",
            )
            for image_id in ids
        ]
