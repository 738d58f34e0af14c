"""A run's identity: what a result must have been made with to count for the run."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from codistill.config import RUN_ONLY_KEYS, Params
from codistill.data.prepare import DATASET_JSON
from codistill.engine.code_digest import code_digest
from codistill.engine.precision import FLOAT32, resolve_precision
from codistill.study.code_equivalence import EQUIVALENCE_FILE, equivalent_codes, read_records
from codistill.study.provenance import study_device
from codistill.study.results import RESULT_VERSION, RunSpec, Scoring, read_result, result_path


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


def current_result(
    spec: RunSpec, params: Params, prepared: Path, scoring: Scoring, results: Path
) -> dict[str, Any] | None:
    """The run's result in ``results`` if its identity is current, else None."""
    found = read_result(result_path(results, spec.key))
    return found if is_current(found, accepted_identities(params, prepared, scoring)) else None
