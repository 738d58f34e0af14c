"""The train stage: validated prepared data in; both trained students, curves and metrics out."""

from __future__ import annotations

from pathlib import Path

from codistill.config import Params
from codistill.data.gate import require_validated
from codistill.engine.distributed import shutdown_distributed
from codistill.engine.preflight import require_crop_fits
from codistill.engine.trainer import train_students
from codistill.stage_result import StageSummary


def run(
    params: Params,
    prepared: Path,
    validation: Path,
    out: Path,
    checkpoint_dir: Path | None = None,
) -> StageSummary:
    """Co-train both students; resume from ``checkpoint_dir`` (default ``out``)."""
    require_validated(prepared, validation)
    require_crop_fits(params, prepared)
    try:
        metrics = train_students(
            params, prepared, out, tracking=params.tracking.enabled, checkpoint_dir=checkpoint_dir
        )
    finally:
        shutdown_distributed()
    if not metrics:  # a non-main rank
        return StageSummary("")
    final = metrics["final"]
    terms = ", ".join(metrics["terms"]) or "no cross terms"
    # the trainer logs its own curves to the same run: no metrics here
    return StageSummary(
        f"trained {metrics['method']} ({terms}) to iteration {metrics['iterations']}: "
        f"loss {final.get('loss_total', 0):.4f}"
    )
