"""Results made under the first identity rule, given the present one where they still count.

Rule 1 hashed every distillation term's options (and, before runs recorded their numeric mode,
the ``train.amp`` flag): an edit to a term a run never used made the run stale. A result is
checked against the configuration it records it was made with (the sections an identity
reads, over the present ``params.yaml``), with its own code digest, numeric mode and scoring:
if rule 1 gives it its recorded identity, that configuration, code and data made it, and
migrating writes its identity under the present rule from the same, keeping the old one
beside it (``identity_v1``). Whether it counts for a study's row is then what it always is:
the row's identity is the result's. A result rule 1 does not confirm is left as it is.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from codistill.artifacts import write_json_atomic
from codistill.config import RUN_ONLY_KEYS, ConfigError, Params
from codistill.data.prepare import DATASET_JSON
from codistill.engine.precision import FLOAT32
from codistill.study.identity import run_identity, shaping_train
from codistill.study.results import (
    STUDY_SPLITS,
    NotAResultError,
    RunSpec,
    Scoring,
    read_result,
)
from codistill.study.runs import spec_params
from codistill.study.settings import resolve_params

RULE_1_VERSION = 1


def _rule_1_hash(
    params: Params, prepared: Path, scoring: Scoring, code: str, shaping: dict[str, Any]
) -> str:
    dataset = json.loads((prepared / DATASET_JSON).read_text())
    identity = {
        "version": RULE_1_VERSION,
        "code": code,
        "models": asdict(params.models),
        **shaping,
        "distill": asdict(params.distill),
        "evaluate_scale": params.evaluate.scale,
        "manifest": dataset["manifest_sha256"],
        "scoring": asdict(scoring),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def rule_1_identities(
    params: Params, prepared: Path, scoring: Scoring, code: str, precision: str
) -> set[str]:
    """The identities rule 1 gave this run, in its numeric mode.

    For float32 also the two that hashed the ``train.amp`` flag instead (results made before
    runs recorded their numeric mode).
    """
    shaping = {"train": shaping_train(params), "precision": precision}
    identities = {_rule_1_hash(params, prepared, scoring, code, shaping)}
    if precision == FLOAT32:
        for amp in (True, False):
            train = asdict(replace(params.train, amp=amp))
            for key in RUN_ONLY_KEYS:
                train.pop(key.removeprefix("train."))
            identities.add(_rule_1_hash(params, prepared, scoring, code, {"train": train}))
    return identities


def result_scoring(result: dict[str, Any]) -> Scoring:
    """The scoring rule a result was made for: its ``score_last`` and the splits it scores."""
    splits = tuple(split for split in STUDY_SPLITS if split in result["scores"])
    return Scoring(score_last=result.get("score_last", 1), splits=splits)


def migrated(result: dict[str, Any], params: Params, prepared: Path) -> dict[str, Any] | None:
    """The result under the present rule if rule 1 counts it for ``params``, else None."""
    scoring = result_scoring(result)
    precision = result.get("precision", FLOAT32)
    code = result["code_digest"]
    if result.get("identity") not in rule_1_identities(params, prepared, scoring, code, precision):
        return None
    present = run_identity(params, prepared, scoring, code, precision)
    return {**result, "identity": present, "identity_v1": result["identity"]}


RESULT_KEYS = ("key", "seed", "overrides", "code_digest", "scores")  # what any result holds


def readable_result(path: Path) -> dict[str, Any]:
    """The result in ``path``; a file that is not JSON or lacks a result's keys is refused."""
    try:
        result = read_result(path)
    except ValueError as err:
        raise NotAResultError(f"{path}: not JSON ({err}); nothing was migrated") from None
    missing = [key for key in RESULT_KEYS if not isinstance(result, dict) or key not in result]
    if missing:
        raise NotAResultError(
            f"{path}: not a study result (no {', '.join(missing)}); nothing was migrated"
        )
    return result


# The sections of a recorded configuration that a run's identity reads.
IDENTITY_SECTIONS = ("models", "train", "distill", "evaluate")


def recorded_params(result: dict[str, Any], params_file: Path) -> Params:
    """What a result records it was made with: its identity's sections over ``params_file``.

    A result without a recorded configuration gets its overrides and seed instead.
    """
    if "config" not in result:
        spec = RunSpec(result["key"], result.get("label", ""), result["seed"], result["overrides"])
        return spec_params(spec, params_file)
    return resolve_params(params_file, {s: result["config"][s] for s in IDENTITY_SECTIONS})


def migrate_folder(results: Path, params_file: Path, prepared: Path) -> Counter:
    """Migrate every result file in ``results``; counts of migrated, present and stale ones.

    Every file is read and ``params_file`` checked before any is rewritten: a file that is not
    a result, or a broken ``params_file``, stops the migration with its name.
    """
    spec_params(RunSpec("check", "", 0), params_file)  # a ConfigError names the file's problem
    found = {path: readable_result(path) for path in sorted(results.glob("*.json"))}
    counts: Counter = Counter()
    for path, result in found.items():
        if "identity" not in result:  # made before results had one: stale under any rule
            counts["stale"] += 1
            continue
        try:
            params = recorded_params(result, params_file)
        except ConfigError:  # settings the present schema no longer takes: stale
            counts["stale"] += 1
            continue
        scoring, code = result_scoring(result), result["code_digest"]
        precision = result.get("precision", FLOAT32)
        if result["identity"] == run_identity(params, prepared, scoring, code, precision):
            counts["present"] += 1
        elif (moved := migrated(result, params, prepared)) is not None:
            write_json_atomic(path, moved)
            counts["migrated"] += 1
        else:
            counts["stale"] += 1
    return counts
