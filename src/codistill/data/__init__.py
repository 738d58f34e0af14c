"""Dataset readers, the prepared shard format, and the prepare stage."""

from codistill.data import camvid, cityscapes, voc  # noqa: F401 - registers the readers
from codistill.data.base import DatasetReader, SampleRef, create_reader, dataset_spec
from codistill.data.gate import UnvalidatedDataError, require_validated
from codistill.data.manifest import ManifestRow, read_manifest
from codistill.data.prepare import PrepareError, prepare_dataset
from codistill.data.shards import EmptySplitError, ShardReader
from codistill.data.spec import IGNORE_INDEX, DatasetSpec

__all__ = [
    "IGNORE_INDEX",
    "DatasetReader",
    "DatasetSpec",
    "EmptySplitError",
    "ManifestRow",
    "PrepareError",
    "SampleRef",
    "ShardReader",
    "UnvalidatedDataError",
    "create_reader",
    "dataset_spec",
    "prepare_dataset",
    "read_manifest",
    "require_validated",
]
