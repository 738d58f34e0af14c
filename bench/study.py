"""One study run, trained, scored and kept as a small JSON.

The quality study and the validation searches are made of such runs.

A run is a seed and a set of ``params.yaml`` overrides (dotted keys). It trains both
students in its own folder, keeps their weights at each checkpoint, scores them, and writes
``<results>/<key>.json``, with its final students' per-image intersection and union counts
beside it (``<key>.images.npz``). A run whose JSON has the run's identity (the weight-shaping code
digest, the resolved configuration that shapes the weights, the data manifest and the
scoring rule) is read back, not trained, and so is one made with code that
``bench/code_equivalence.py`` records as training the same weights; an unfinished run
resumes from its last checkpoint.
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import time
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from code_equivalence import EQUIVALENCE_FILE, equivalent_codes, read_records
from codistill.artifacts import write_json_atomic
from codistill.config import ROLES, RUN_ONLY_KEYS, Params, parse_params, with_overrides
from codistill.config.loader import load_yaml_mapping
from codistill.data.base import dataset_spec
from codistill.data.loading import PreparedSplit
from codistill.data.prepare import DATASET_JSON
from codistill.engine.checkpoint import (
    CheckpointError,
    load_checkpoint,
    previous_path,
    save_checkpoint,
)
from codistill.engine.code_digest import code_digest
from codistill.engine.hooks import CURVES, LAST, Hook
from codistill.engine.precision import FLOAT32, cpu_bf16_engine, resolve_precision
from codistill.engine.trainer import CoTrainer, train_students, weights_digest
from codistill.evaluation.evaluate import evaluate_students
from codistill.evaluation.students import load_students
from codistill.study.image_counts import ImageCounts, counts_path, write_image_counts
from environment import cpu_model

SNAPSHOTS = "snapshots"
STUDY_SPLITS = ("val", "test")
RESULT_VERSION = 1


@dataclass(frozen=True)
class RunSpec:
    """One run: a file key, a row label, and its overrides of ``params.yaml``."""

    key: str
    label: str
    seed: int
    overrides: dict[str, Any] = field(default_factory=dict)


def run_key(name: str, seed: int) -> str:
    """The key of ``name``'s run at ``seed``: its result file's stem and its folder's name."""
    return f"{name}-seed{seed}"


def result_path(results: Path, key: str) -> Path:
    """The result file of the run ``key`` under the folder ``results``."""
    return results / f"{key}.json"


@dataclass(frozen=True)
class Scoring:
    """How a run is scored: its reported score averages the last ``score_last`` checkpoints.

    Every checkpoint (``train.checkpoint_every``) is scored on the validation split for the
    learning curve; the last ``score_last`` are also scored on every split of ``splits``.
    """

    score_last: int = 1
    splits: tuple[str, ...] = STUDY_SPLITS

    def __post_init__(self) -> None:
        if self.score_last < 1:
            raise ValueError(f"score_last: {self.score_last} must be at least 1")


def load_studies(path: Path) -> dict[str, Any]:
    """The regimes and searches of ``bench/studies.yaml``."""
    data = load_yaml_mapping(path)
    return {"regimes": data.get("regimes") or {}, "searches": data.get("searches") or {}}


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings as overrides; each value is read as YAML (``[360, 480]``, ``true``)."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{pair!r}: expected KEY=VALUE")
        overrides[key] = yaml.safe_load(value)
    return overrides


def resolve_params(params_file: Path, overrides: dict[str, Any]) -> Params:
    """``params.yaml`` with dotted ``overrides``, validated; tracking off (a bench is no run)."""
    return parse_params(bench_mapping(params_file, overrides), f"{params_file} with {overrides}")


def bench_mapping(params_file: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """The mapping of ``params_file`` with dotted ``overrides``, and tracking off."""
    return with_overrides(load_yaml_mapping(params_file), {**overrides, "tracking.enabled": False})


def add_shard_argument(parser: argparse.ArgumentParser) -> None:
    """``--shard K/N``: N processes side by side, this one training every N-th run from the K-th."""
    parser.add_argument(
        "--shard",
        type=parsed_shard,
        default=(0, 1),
        metavar="K/N",
        help="train only every N-th run of the plan, from the K-th (N processes side by side)",
    )


def parsed_shard(text: str) -> tuple[int, int]:
    """Parse `K/N` into (K, N), with 0 <= K < N."""
    try:
        shard, shards = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not K/N") from None
    if not 0 <= shard < shards:
        raise argparse.ArgumentTypeError(f"{text!r}: K must be in 0..N-1 (N processes)")
    return shard, shards


def in_shard(index: int, shard: tuple[int, int]) -> bool:
    """Whether the plan's ``index``-th run belongs to shard (K, N)."""
    return index % shard[1] == shard[0]


def checkpoint_iterations(iterations: int, every: int) -> list[int]:
    """The iterations at which the trainer checkpoints: every ``every``, and the last."""
    return sorted({*range(every, iterations + 1, every), iterations})


class SnapshotHook(Hook):
    """Keeps both students' weights at chosen iterations, in ``<folder>/snapshots/<i>``.

    Listed before the standard hooks, it writes a snapshot before the checkpoint that follows
    it, so a run killed in between redoes that iteration and writes the snapshot again.
    """

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
    params: Params, prepared: Path, folder: Path, keep_at: Iterable[int]
) -> dict[str, Any]:
    """Train (or resume) one run in ``folder``, keeping the students at ``keep_at``.

    A checkpoint left by code recorded as training the same weights is resumed too.
    """
    return train_students(
        params,
        prepared,
        folder,
        hooks=[SnapshotHook(folder, keep_at)],
        equivalent_codes=equivalent_codes(code_digest(), read_records()),
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


def git_commit() -> dict[str, Any]:
    """The checked-out commit and whether the tree had changes, or ``unknown`` without git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}
    return {"commit": head, "dirty": bool(dirty)}


def machine(device: torch.device) -> dict[str, Any]:
    """What the run ran on: CPU, cores, threads, accelerator and versions."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu_bf16": cpu_bf16_engine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def read_curves(path: Path) -> list[dict[str, float]]:
    """The trainer's logged rows (losses, direction shares, learning rates) as numbers."""
    if not path.is_file():
        return []
    with path.open() as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def mean_scores(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """MIoU and per-class IoU of each student, averaged over checkpoint scores."""
    merged = {}
    for role in ROLES:
        per_class = zip(*(e[role]["per_class_iou"] for e in entries), strict=True)
        merged[role] = {
            "miou": statistics.fmean(e[role]["miou"] for e in entries),
            "per_class_iou": [
                None if None in values else statistics.fmean(values) for values in per_class
            ],
        }
    return merged


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


def read_result(path: Path) -> dict[str, Any] | None:
    """A finished run's result, or None if there is none."""
    return json.loads(path.read_text()) if path.is_file() else None


def study_device() -> torch.device:
    """The device study runs train and score on: the GPU if there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run_identity(
    params: Params,
    prepared: Path,
    scoring: Scoring,
    code: str | None = None,
    precision: str | None = None,
) -> str:
    """What a result must have been made with to count: code, shaping config, data, scoring.

    ``code`` is a weight-shaping code digest (default: the present code's). ``precision`` is
    the numeric mode (default: what ``train.amp`` resolves to on this machine); it stands in
    for the flag, so a study never counts a bf16 run as a float32 one.
    """
    train = asdict(params.train)
    for key in (*RUN_ONLY_KEYS, "train.amp"):
        train.pop(key.removeprefix("train."))
    mode = precision or resolve_precision(params.train.amp, study_device()).mode
    return _identity_hash(params, prepared, scoring, code, {"train": train, "precision": mode})


def legacy_float32_identities(
    params: Params, prepared: Path, scoring: Scoring, code: str | None = None
) -> set[str]:
    """The identities of float32 results made before runs recorded their numeric mode.

    Those runs trained in float32 on the CPU whatever ``train.amp`` said (it acted on CUDA
    only), and their identity hashed the flag instead of the mode.
    """
    identities = set()
    for amp in (True, False):
        train = asdict(replace(params.train, amp=amp))
        for key in RUN_ONLY_KEYS:
            train.pop(key.removeprefix("train."))
        identities.add(_identity_hash(params, prepared, scoring, code, {"train": train}))
    return identities


def _identity_hash(
    params: Params, prepared: Path, scoring: Scoring, code: str | None, shaping: dict[str, Any]
) -> str:
    dataset = json.loads((prepared / DATASET_JSON).read_text())
    identity = {
        "version": RESULT_VERSION,
        "code": code or code_digest(),
        "models": asdict(params.models),
        **shaping,
        "distill": asdict(params.distill),
        "evaluate_scale": params.evaluate.scale,
        "manifest": dataset["manifest_sha256"],
        "scoring": asdict(scoring),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def spec_params(spec: RunSpec, params_file: Path) -> Params:
    """The resolved parameters of one run."""
    return resolve_params(params_file, {**spec.overrides, "train.seed": spec.seed})


def accepted_identities(
    params: Params, prepared: Path, scoring: Scoring, equivalence: Path = EQUIVALENCE_FILE
) -> frozenset[str]:
    """The run's identity with the present code, and with each code shown to train alike.

    A float32 run on the CPU also accepts the identities of results made before runs
    recorded their numeric mode (``legacy_float32_identities``).
    """
    codes = equivalent_codes(code_digest(), read_records(equivalence))
    device = study_device()
    mode = resolve_precision(params.train.amp, device).mode
    accepted = {run_identity(params, prepared, scoring, code, mode) for code in codes}
    if mode == FLOAT32 and device.type == "cpu":
        for code in codes:
            accepted |= legacy_float32_identities(params, prepared, scoring, code)
    return frozenset(accepted)


def is_current(result: dict[str, Any] | None, identities: Collection[str]) -> bool:
    """Whether a result was made with one of these identities."""
    return result is not None and result.get("identity") in identities


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


def current_result(
    spec: RunSpec, params: Params, prepared: Path, scoring: Scoring, results: Path
) -> dict[str, Any] | None:
    """The run's result in ``results`` if its identity is current, else None."""
    found = read_result(result_path(results, spec.key))
    return found if is_current(found, accepted_identities(params, prepared, scoring)) else None


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


def miou_by_seed(runs: list[dict[str, Any]], role: str, split: str) -> dict[int, float]:
    """Each run's mIoU of ``role`` on ``split``, in points, by seed."""
    return {r["seed"]: 100 * r["scores"][split][role]["miou"] for r in runs}


def seconds_per_step(result: dict[str, Any]) -> float | None:
    """Training seconds per step, or None for a run that was resumed part-way."""
    if result["iterations_this_run"] != result["iterations"]:
        return None
    return result["train_seconds_this_run"] / result["iterations"]


def run(
    spec: RunSpec,
    params_file: Path,
    prepared: Path,
    workdir: Path,
    results: Path,
    scoring: Scoring,
    device: torch.device,
    accept_older: bool = False,
    stamp: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Train and score one run, or read back its result.

    A result from other weight-shaping code is trained again, unless ``accept_older``. A run
    that another process is training (its lock is held) is skipped: None. A new result also
    records the entries of ``stamp`` (the plan it was scored under).
    """
    path = result_path(results, spec.key)
    params = spec_params(spec, params_file)

    def finished() -> dict[str, Any] | None:
        if accept_older:
            return read_result(path)
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
        return train_and_score(spec, params, prepared, folder, path, scoring, device, stamp)


def machine_kind(recorded: dict[str, Any], precision: str = FLOAT32) -> str:
    """The kind of machine a ``machine`` record names, as a run in ``precision`` sees it.

    Its GPU, else its CPU model; for a bf16 run also the CPU's bf16 instructions, since one
    model name covers CPUs with and without them (an AMD EPYC with ``avx512_bf16`` and one
    without, on which bf16 falls back to float32).
    """
    if str(recorded.get("device")).startswith("cuda"):
        return recorded["gpu"]
    name = recorded.get("cpu", "an unrecorded machine")
    if precision == FLOAT32:
        return name
    return f"{name} ({recorded.get('cpu_bf16') or 'no bf16 instructions'})"


def same_machine_kind(found: dict[str, Any], here: dict[str, Any]) -> bool:
    """Whether the result ``found`` was made on the kind of machine ``here`` records."""
    precision = found.get("precision", FLOAT32)
    return machine_kind(found.get("machine", {}), precision) == machine_kind(here, precision)


def require_one_machine_kind(results: Path, device: torch.device) -> None:
    """Refuse to train into ``results`` if its runs were made on another kind of machine.

    Step times, and in bf16 the arithmetic itself, differ from one kind to another: a study
    (or search) goes on where it started.
    """
    here = machine(device)
    for path in sorted(results.glob("*.json")):
        found = read_result(path)
        if found is not None and not same_machine_kind(found, here):
            precision = found.get("precision", FLOAT32)
            raise SystemExit(
                f"{results}: its runs were made on {machine_kind(found['machine'], precision)} "
                f"({path.name}), this machine is {machine_kind(here, precision)}: a study goes "
                "on on the kind of machine it started on; give it another results folder to "
                "run it here"
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
) -> dict[str, Any]:
    """Train one run in ``folder`` (resuming), score its checkpoints, and write ``path``.

    The result records ``stamp``'s entries too.
    """
    started = time.time()
    iterations = params.train.iterations
    keep = checkpoint_iterations(iterations, params.train.checkpoint_every)
    drop_checkpoint_without_snapshots(folder, keep)
    metrics = train_with_snapshots(params, prepared, folder, keep)
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
    write_counts(path, prepared, per_image)
    write_json_atomic(path, result)
    # The result is all a finished run needs: drop the resume checkpoint and the snapshots,
    # keep the final students (cnn.pt, vit.pt) for a closer look.
    drop_checkpoints(folder)
    shutil.rmtree(folder / SNAPSHOTS, ignore_errors=True)
    return result
