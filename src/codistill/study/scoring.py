"""Scoring a run's students on the study splits, per split and per image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from codistill.config import Params
from codistill.data.base import dataset_spec
from codistill.data.loading import PreparedSplit
from codistill.engine.checkpoint import (
    CheckpointError,
)
from codistill.engine.trainer import weights_digest
from codistill.evaluation.evaluate import evaluate_students
from codistill.evaluation.students import load_students
from codistill.study.image_counts import ImageCounts, counts_path, write_image_counts
from codistill.study.results import STUDY_SPLITS, RunSpec, read_result


def score_split(
    students: dict[str, torch.nn.Module],
    prepared: Path,
    split: str,
    scale: float,
    device,
    per_image: dict[tuple[str, str], np.ndarray] | None = None,
) -> dict[str, Any]:
    """MIoU and per-class IoU of both students on ``split``.

    With ``per_image``, each student's per-image intersection and union counts are added
    to it under ``(split, role)``.
    """
    scores, _ = evaluate_students(students, prepared, split, device, scale=scale)
    if per_image is not None:
        per_image.update({(split, role): s["image_counts"] for role, s in scores.items()})
    return {
        role: {"miou": s["miou"], "per_class_iou": s["per_class_iou"]} for role, s in scores.items()
    }


def write_counts(path: Path, prepared: Path, per_image: dict[tuple[str, str], np.ndarray]) -> None:
    """Write the final students' per-image counts beside the result file ``path``."""
    splits = sorted({split for split, _ in per_image})
    ids = {}
    for split in splits:
        data = PreparedSplit(prepared, split)
        ids[split] = tuple(data.sample_id(index) for index in range(len(data)))
    write_image_counts(counts_path(path), ImageCounts(ids, per_image))


def add_missing_counts(
    spec: RunSpec, params: Params, prepared: Path, path: Path, students: Path, device
) -> bool:
    """Score a finished run's kept final students per image, if its result has no counts yet.

    The students must be the ones the result scored (their weight digests), and their
    recomputed scores must equal the recorded ones. Returns whether counts were written.
    """
    found = read_result(path)
    if found is None or counts_path(path).is_file():
        return False
    num_classes = dataset_spec(params.data.dataset).num_classes
    try:
        models = load_students(params, students, num_classes)
    except (FileNotFoundError, CheckpointError):
        return False
    digests = {role: weights_digest(model) for role, model in models.items()}
    if digests != found["weights_sha256"]:
        raise SystemExit(f"{students}: the kept students are not the ones {path} scored")
    last = found["checkpoints"][-1]
    per_image: dict[tuple[str, str], np.ndarray] = {}
    for split in (s for s in STUDY_SPLITS if s in last):
        scores = score_split(models, prepared, split, params.evaluate.scale, device, per_image)
        if scores != last[split]:
            raise SystemExit(f"{spec.key}: rescoring {split} gave other scores than {path}")
    write_counts(path, prepared, per_image)
    print(f"{spec.key}: per-image counts written ({', '.join(sorted(last))})", flush=True)
    return True
