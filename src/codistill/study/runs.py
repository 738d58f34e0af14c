"""One study run, trained, scored and kept as a small JSON.

The quality study and the validation searches are made of such runs.

A run is a seed and a set of ``params.yaml`` overrides (dotted keys). It trains both
students in its own folder, keeps their weights at each checkpoint, scores them, and writes
``<results>/<key>.json``, with its final students' per-image intersection and union counts
beside it (``<key>.images.npz``). A run whose JSON has the run's identity
(``codistill.study.identity``) is read back, not trained, and so is one made with code that
``codistill.study.code_equivalence`` records as training the same weights; an unfinished run
resumes from its last checkpoint.
"""

from __future__ import annotations

import fcntl
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from codistill.artifacts import write_json_atomic
from codistill.config import ROLES, Params
from codistill.data.base import dataset_spec
from codistill.engine.checkpoint import (
    CheckpointError,
    load_checkpoint,
    previous_path,
    save_checkpoint,
)
from codistill.engine.code_digest import code_digest
from codistill.engine.hooks import CURVES, LAST, Hook, Priority
from codistill.engine.precision import resolve_precision
from codistill.engine.trainer import CoTrainer, train_students
from codistill.evaluation.students import load_students
from codistill.study.code_equivalence import equivalent_codes, read_records
from codistill.study.identity import current_result, run_identity
from codistill.study.provenance import git_commit, machine, require_one_machine_kind, study_device
from codistill.study.results import (
    RESULT_VERSION,
    RunSpec,
    Scoring,
    mean_scores,
    read_curves,
    result_path,
)
from codistill.study.scoring import score_split, write_counts
from codistill.study.settings import resolve_params
from codistill.study.tracking import record_study_run

SNAPSHOTS = "snapshots"


def checkpoint_iterations(iterations: int, every: int) -> list[int]:
    """The iterations at which the trainer checkpoints: every ``every``, and the last."""
    return sorted({*range(every, iterations + 1, every), iterations})


class SnapshotHook(Hook):
    """Keeps both students' weights at chosen iterations, in ``<folder>/snapshots/<i>``.

    It writes a snapshot before the checkpoint that follows it, so a run killed in between
    redoes that iteration and writes the snapshot again.
    """

    priority = Priority.HIGHEST

    def __init__(self, folder: Path, keep_at: Iterable[int]) -> None:
        self.folder = folder
        self.keep_at = set(keep_at)

    def after_step(self, trainer: CoTrainer) -> None:
        """Save both students if this iteration is one to keep."""
        if trainer.iteration in self.keep_at and trainer.context.is_main:
            snapshot = self.folder / SNAPSHOTS / str(trainer.iteration)
            for role in ROLES:
                save_checkpoint(snapshot / f"{role}.pt", getattr(trainer.model, role).state_dict())


def train_with_snapshots(
    params: Params, prepared: Path, folder: Path, keep_at: Iterable[int], tracking: bool = False
) -> dict[str, Any]:
    """Train (or resume) one run in ``folder``, keeping the students at ``keep_at``.

    A checkpoint left by code recorded as training the same weights is resumed too. With
    ``tracking``, the training is an MLflow run (a resumed one continues it).
    """
    return train_students(
        params,
        prepared,
        folder,
        tracking=tracking,
        hooks=[SnapshotHook(folder, keep_at)],
        equivalent_codes=equivalent_codes(
            code_digest(),
            read_records(),
            resolve_precision(params.train.amp, study_device()).mode,
        ),
    )


def drop_checkpoints(folder: Path) -> None:
    """Remove the run's resume checkpoint and the one kept before it."""
    for path in (folder / LAST, previous_path(folder / LAST)):
        path.unlink(missing_ok=True)


def drop_checkpoint_without_snapshots(folder: Path, keep: list[int]) -> None:
    """Remove the checkpoints if a snapshot ``last.pt`` has passed is missing: start afresh.

    An unreadable ``last.pt`` is left to the trainer, which resumes from the earlier one.
    """
    path = folder / LAST
    if not path.is_file():
        return
    try:
        reached = load_checkpoint(path)["iteration"]
    except CheckpointError:
        return
    missing = [
        i
        for i in keep
        if i <= reached
        and not all((folder / SNAPSHOTS / str(i) / f"{r}.pt").is_file() for r in ROLES)
    ]
    if missing:
        print(f"{folder.name}: snapshots {missing} missing at iteration {reached}; starting afresh")
        drop_checkpoints(folder)


def spec_params(spec: RunSpec, params_file: Path) -> Params:
    """The resolved parameters of one run."""
    return resolve_params(params_file, {**spec.overrides, "train.seed": spec.seed})


def run(
    spec: RunSpec,
    params_file: Path,
    prepared: Path,
    workdir: Path,
    results: Path,
    scoring: Scoring,
    device: torch.device,
    stamp: dict[str, Any] | None = None,
    tracking: bool = False,
) -> dict[str, Any] | None:
    """Train and score one run, or read back its result.

    A result with another identity (other code, configuration, data or scoring) does not
    count and the run is trained again: the one policy of studies, regimes and searches. A run
    that another process is training (its lock is held) is skipped: None. A new result also
    records the entries of ``stamp`` (the plan it was scored under); with ``tracking`` the run
    is an MLflow run, tagged with the study (the results folder's name), row and seed.
    """
    path = result_path(results, spec.key)
    params = spec_params(spec, params_file)

    def finished() -> dict[str, Any] | None:
        return current_result(spec, params, prepared, scoring, results)

    if (existing := finished()) is not None:
        return existing
    folder = workdir / spec.key
    with claimed(folder) as ours:
        if not ours:
            print(f"{spec.key}: another process is training it; skipped", flush=True)
            return None
        # the process that held the lock may have finished the run meanwhile
        if (existing := finished()) is not None:
            return existing
        require_one_machine_kind(results, device)
        return train_and_score(
            spec, params, prepared, folder, path, scoring, device, stamp, tracking=tracking
        )


@contextmanager
def claimed(folder: Path) -> Iterator[bool]:
    """An exclusive lock on the run trained in ``folder``: whether this process holds it."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with (folder.parent / f"{folder.name}.lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def train_and_score(
    spec: RunSpec,
    params: Params,
    prepared: Path,
    folder: Path,
    path: Path,
    scoring: Scoring,
    device: torch.device,
    stamp: dict[str, Any] | None = None,
    tracking: bool = False,
) -> dict[str, Any]:
    """Train one run in ``folder`` (resuming), score its checkpoints, and write ``path``.

    The result records ``stamp``'s entries too, and with ``tracking`` its MLflow run.
    """
    started = time.time()
    iterations = params.train.iterations
    keep = checkpoint_iterations(iterations, params.train.checkpoint_every)
    drop_checkpoint_without_snapshots(folder, keep)
    metrics = train_with_snapshots(params, prepared, folder, keep, tracking)
    num_classes = dataset_spec(params.data.dataset).num_classes
    scale = params.evaluate.scale
    checkpoints = []
    per_image: dict[tuple[str, str], np.ndarray] = {}
    for iteration in keep:
        students = load_students(params, folder / SNAPSHOTS / str(iteration), num_classes)
        entry: dict[str, Any] = {"iteration": iteration}
        scored = iteration in keep[-scoring.score_last :]
        counts = per_image if iteration == keep[-1] else None
        for split in scoring.splits if scored else ("val",):
            entry[split] = score_split(students, prepared, split, scale, device, counts)
        checkpoints.append(entry)
        print(
            f"{spec.key} @ {iteration}: "
            + ", ".join(f"{r} val {entry['val'][r]['miou']:.4f}" for r in ROLES),
            flush=True,
        )
    last = checkpoints[-scoring.score_last :]
    result = {
        "version": RESULT_VERSION,
        "key": spec.key,
        "label": spec.label,
        "seed": spec.seed,
        "overrides": spec.overrides,
        "method": params.train.method,
        "terms": metrics["terms"],
        "scores": {split: mean_scores([c[split] for c in last]) for split in scoring.splits},
        "score_last": scoring.score_last,
        "checkpoints": checkpoints,
        "curves": read_curves(folder / CURVES),
        "iterations": iterations,
        "train_seconds_this_run": metrics["seconds_this_run"],
        "iterations_this_run": metrics["iterations_this_run"],
        "wall_seconds_this_run": round(time.time() - started, 1),
        "weights_sha256": metrics["weights_sha256"],
        "identity": run_identity(params, prepared, scoring, precision=metrics["precision"]),
        "precision": metrics["precision"],
        "code_digest": code_digest(),
        **git_commit(),
        "machine": machine(device),
        "config": asdict(params),
        **(stamp or {}),
    }
    if tracking:
        result["mlflow_run_id"] = metrics["mlflow_run_id"]
        record_study_run(metrics["mlflow_run_id"], path.parent.name, spec, result)
    write_counts(path, prepared, per_image)
    write_json_atomic(path, result)
    # The result is all a finished run needs: drop the resume checkpoint and the snapshots,
    # keep the final students (cnn.pt, vit.pt) for a closer look.
    drop_checkpoints(folder)
    shutil.rmtree(folder / SNAPSHOTS, ignore_errors=True)
    return result
