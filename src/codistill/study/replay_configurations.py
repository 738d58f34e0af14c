"""What a code replay trains: every weight-shaping setting the committed results use.

Two codes are linked only if they train the same weights for each setting any committed
result was made with (every method, term switch and term option in use), and for long
enough to pass every warm-up, after which the distillation weights and learning rates
follow their full schedules. Geometry and schedule length choose no term's code path, so
each setting runs at a small crop, just past its own longest warm-up (a crop larger than the
rescaled image would pad it, which the replay's crop does not: a change to padding alone is
not covered).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from codistill.config import METHODS, ConfigError
from codistill.engine.precision import resolve_precision
from codistill.study.identity import shaping_train, used_distillation
from codistill.study.provenance import study_device
from codistill.study.results import read_result
from codistill.study.settings import resolve_params

# What a result's overrides set that is schedule or geometry, not a code path.
SCHEDULE_KEYS = (
    "train.iterations",
    "train.checkpoint_every",
    "train.log_every",
    "train.seed",
    "train.crop",
    "train.scale",
    "train.batch_size",
    "evaluate.scale",
)
REPLAY_GEOMETRY = {"train.batch_size": 2, "train.crop": [64, 64]}
REPLAY_MARGIN = 8  # steps past the longest warm-up


def _setting(overrides: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in overrides.items() if k not in SCHEDULE_KEYS}


def configurations_in_use(results: Path, params_file: Path) -> dict[str, dict[str, Any]]:
    """Each distinct weight-shaping setting of the results under ``results``, by a name.

    A setting is a result's overrides less its schedule and geometry; two that resolve to
    the same students, training options, used-term options (an unused term's option aside)
    and numeric mode on this machine are one; a result the present schema rejects, which no
    study can count, is left out. Each method appears at least once, with ``params_file``'s
    options.
    """
    found = [read_result(path) for path in sorted(results.rglob("*.json"))]
    settings = [_setting(r["overrides"]) for r in found if isinstance(r, dict) and "overrides" in r]
    settings += [{"train.method": method} for method in METHODS]
    named: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for setting in settings:
        try:
            params = resolve_params(params_file, {**setting, **REPLAY_GEOMETRY})
        except ConfigError:  # settings the present schema no longer takes: no result to keep
            continue
        shape = {
            "models": asdict(params.models),
            "train": shaping_train(params),
            "distill": used_distillation(params),
            "precision": resolve_precision(params.train.amp, study_device()).mode,
        }
        fingerprint = json.dumps(shape, sort_keys=True)
        if fingerprint not in seen:
            seen.add(fingerprint)
            named[f"{len(named):02d}-{params.train.method}"] = setting
    return named


def replay_iterations(setting: dict[str, Any], params_file: Path) -> int:
    """Steps that take ``setting`` past its longest warm-up, and a margin beyond."""
    params = resolve_params(params_file, setting)
    warmups = (
        params.distill.warmup_iters,
        params.train.cnn_optimizer.warmup_iters,
        params.train.vit_optimizer.warmup_iters,
    )
    return max(warmups) + REPLAY_MARGIN
