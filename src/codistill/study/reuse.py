"""Results made elsewhere that count for a run: copied from another study, or extended."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from codistill.artifacts import write_json_atomic
from codistill.config import Params
from codistill.data.base import dataset_spec
from codistill.engine.checkpoint import (
    CheckpointError,
)
from codistill.engine.code_digest import code_digest
from codistill.engine.precision import FLOAT32
from codistill.engine.trainer import weights_digest
from codistill.evaluation.students import load_students
from codistill.study.identity import accepted_identities, current_result, is_current, run_identity
from codistill.study.provenance import git_commit, machine, same_machine_kind, study_device
from codistill.study.results import (
    STUDY_SPLITS,
    RunSpec,
    Scoring,
    mean_scores,
    read_result,
    result_path,
)
from codistill.study.scoring import add_missing_counts, score_split


def borrow(
    spec: RunSpec, params: Params, prepared: Path, scoring: Scoring, results: Path, source: Path
) -> Path | None:
    """Copy in a finished run under ``source`` (another study's, or a twin row's) of this identity.

    A quality study's run scores the validation split at the same checkpoints as a search
    run, and the test split too: the copy keeps only the splits of ``scoring``, and names
    the file it came from. Only a run made on this kind of machine is copied
    (``require_one_machine_kind``). Returns that file, or None where there is none (or the
    run already has a current result).
    """
    if current_result(spec, params, prepared, scoring, results) is not None:
        return None
    wider = accepted_identities(params, prepared, replace(scoring, splits=STUDY_SPLITS))
    here = machine(study_device())
    for candidate in sorted(source.rglob("*.json")):
        found = read_result(candidate)
        if not is_current(found, wider) or not same_machine_kind(found, here):
            continue
        kept = {"iteration", *scoring.splits}
        checkpoints = [{k: v for k, v in c.items() if k in kept} for c in found["checkpoints"]]
        scores = {split: found["scores"][split] for split in scoring.splits}
        provenance = {"borrowed_from": str(candidate)}
        adopt(found, spec, params, prepared, scoring, results, checkpoints, scores, provenance)
        return candidate
    return None


def extend(
    spec: RunSpec,
    params: Params,
    prepared: Path,
    scoring: Scoring,
    results: Path,
    source: Path,
    students: Path,
    device: torch.device,
) -> bool:
    """Make this run's result from ``source``, the same run scored on fewer splits.

    A search run scores the validation split only, and keeps its final students in
    ``students``. Where this run's score is that of its last checkpoint alone, those students,
    checked against the weight digests of ``source``, are scored on the missing splits,
    instead of training the run again; the result names the source and the commit, code and
    machine that scored them. Returns whether it did (not where the students are gone).
    """
    found = read_result(source)
    if (
        found is None
        or scoring.score_last != 1
        or current_result(spec, params, prepared, scoring, results) is not None
    ):
        return False
    narrower = replace(scoring, splits=tuple(found["scores"]))
    if not is_current(found, accepted_identities(params, prepared, narrower)):
        return False
    num_classes = dataset_spec(params.data.dataset).num_classes
    try:
        models = load_students(params, students, num_classes)
    except (FileNotFoundError, CheckpointError) as err:
        print(f"{spec.key}: the search's students are not at hand ({err}); training", flush=True)
        return False
    digests = {role: weights_digest(model) for role, model in models.items()}
    if digests != found["weights_sha256"]:
        raise SystemExit(f"{students}: the kept students are not the ones {source} scored")
    last = dict(found["checkpoints"][-1])
    for split in scoring.splits:
        if split not in last:
            last[split] = score_split(models, prepared, split, params.evaluate.scale, device)
    checkpoints = [*found["checkpoints"][:-1], last]
    scores = {split: mean_scores([last[split]]) for split in scoring.splits}
    here = {**git_commit(), "code_digest": code_digest(), "machine": machine(device)}
    provenance = {"extended_from": str(source), "extended_by": here}
    adopt(found, spec, params, prepared, scoring, results, checkpoints, scores, provenance)
    add_missing_counts(spec, params, prepared, result_path(results, spec.key), students, device)
    return True


def adopt(
    found: dict[str, Any],
    spec: RunSpec,
    params: Params,
    prepared: Path,
    scoring: Scoring,
    results: Path,
    checkpoints: list[dict[str, Any]],
    scores: dict[str, Any],
    provenance: dict[str, Any],
) -> None:
    """Write another study's run as this run's result, with its scores and where it came from."""
    write_json_atomic(
        result_path(results, spec.key),
        {
            **found,
            "key": spec.key,
            "label": spec.label,
            "overrides": spec.overrides,
            "scores": scores,
            "checkpoints": checkpoints,
            "identity": run_identity(
                params, prepared, scoring, found["code_digest"], found.get("precision", FLOAT32)
            ),
            **provenance,
        },
    )
