"""The prepare stage: a raw dataset tree in; shards, manifest and statistics out."""

from __future__ import annotations

from pathlib import Path

from codistill.artifacts import file_sha256
from codistill.config import Params
from codistill.data import PrepareError, create_reader, prepare_dataset
from codistill.data.manifest import MANIFEST_NAME
from codistill.stage_result import StageFailedError, StageSummary


def run(params: Params, data: Path, out: Path) -> StageSummary:
    """Encode the raw dataset tree into shards, manifest and statistics."""
    reader = create_reader(params.data.dataset, data)
    try:
        summary = prepare_dataset(reader, out, params.prepare)
    except PrepareError as err:
        raise StageFailedError(f"prepare: {err}") from None
    counts = ", ".join(f"{s} {v['in_shards']}/{v['samples']}" for s, v in summary["splits"].items())
    mib = summary["total_bytes"] / 2**20
    return StageSummary(
        f"prepared {summary['dataset']} into {out}: {counts} samples in shards, {mib:.1f} MiB",
        {"prepared_mib": mib},
        # what the run actually read, whatever data.dvc says
        {"manifest_sha256": file_sha256(out / MANIFEST_NAME)},
    )
