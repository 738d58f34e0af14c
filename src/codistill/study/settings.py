"""A study's settings: its file of regimes and searches, and dotted overrides of ``params.yaml``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from codistill.config import Params, parse_params, with_overrides
from codistill.config.loader import load_yaml_mapping


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
