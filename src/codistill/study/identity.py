"""A run's identity: what a result must have been made with to count for the run."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from dataclasses import asdict
from pathlib import Path
from typing import Any

from codistill.config import RUN_ONLY_KEYS, Params, active_terms
from codistill.data.prepare import DATASET_JSON
from codistill.engine.code_digest import code_digest
from codistill.engine.precision import resolve_precision
from codistill.study.code_equivalence import EQUIVALENCE_FILE, equivalent_codes, read_records
from codistill.study.provenance import study_device
from codistill.study.results import RunSpec, Scoring, read_result, result_path

IDENTITY_VERSION = 2  # 1 hashed every term's options; 2 only those of the terms a run uses


def used_distillation(params: Params) -> dict[str, Any]:
    """The distillation options that act on a run: its terms, their weights and sections.

    The shared warm-up counts only where some term is on; an unused term's options, which
    the run never reads, do not count.
    """
    terms = active_terms(params.train.method, params.train.switches())
    if not terms:
        return {"terms": []}
    distill = asdict(params.distill)
    return {
        "terms": list(terms),
        "warmup_iters": distill["warmup_iters"],
        "weights": {term: distill["weights"][term] for term in terms},
        "options": {term: distill[term] for term in terms},
    }


def shaping_train(params: Params) -> dict[str, Any]:
    """The ``train`` options that shape the weights: all but logging, workers and the amp flag."""
    train = asdict(params.train)
    for key in (*RUN_ONLY_KEYS, "train.amp"):
        train.pop(key.removeprefix("train."))
    return train


def run_identity(
    params: Params,
    prepared: Path,
    scoring: Scoring,
    code: str | None = None,
    precision: str | None = None,
) -> str:
    """The hash of what shapes a run's weights and its score: the run's identity.

    The students, the ``train`` options (schedule, optimizers, geometry) but for those that
    only carry out or log the run, the options of the distillation terms the run uses, the
    data manifest, the scoring rule and the weight-shaping code. ``code`` is a code digest
    (default: the present code's); ``precision`` is the numeric mode (default: what
    ``train.amp`` resolves to on this machine), so a bf16 run never counts as a float32 one.
    Tracking, logging and an unused term's options do not count.
    """
    dataset = json.loads((prepared / DATASET_JSON).read_text())
    identity = {
        "version": IDENTITY_VERSION,
        "code": code or code_digest(),
        "models": asdict(params.models),
        "train": shaping_train(params),
        "precision": precision or resolve_precision(params.train.amp, study_device()).mode,
        "distill": used_distillation(params),
        "evaluate_scale": params.evaluate.scale,
        "manifest": dataset["manifest_sha256"],
        "scoring": asdict(scoring),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def accepted_identities(
    params: Params, prepared: Path, scoring: Scoring, equivalence: Path = EQUIVALENCE_FILE
) -> frozenset[str]:
    """The run's identity with the present code, and with each code shown to train alike."""
    mode = resolve_precision(params.train.amp, study_device()).mode
    codes = equivalent_codes(code_digest(), read_records(equivalence), mode)
    return frozenset(run_identity(params, prepared, scoring, code, mode) for code in codes)


def is_current(result: dict[str, Any] | None, identities: Collection[str]) -> bool:
    """Whether a result was made with one of these identities."""
    return result is not None and result.get("identity") in identities


def current_result(
    spec: RunSpec, params: Params, prepared: Path, scoring: Scoring, results: Path
) -> dict[str, Any] | None:
    """The run's result in ``results`` if its identity is current, else None."""
    found = read_result(result_path(results, spec.key))
    return found if is_current(found, accepted_identities(params, prepared, scoring)) else None
