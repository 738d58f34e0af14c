"""A digest of the source code that shapes the trained weights, for checkpoint fingerprints."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
# The subpackages whose code decides what training computes (the train stage's code deps).
WEIGHT_SHAPING_PACKAGES = ("models", "distill", "engine", "data")


@functools.cache
def code_digest(root: Path = PACKAGE_ROOT) -> str:
    """SHA-256 over the path and content of every ``.py`` file of the weight-shaping packages."""
    digest = hashlib.sha256()
    for package in WEIGHT_SHAPING_PACKAGES:
        for source in sorted((root / package).rglob("*.py")):
            content = source.read_bytes()
            name = source.relative_to(root).as_posix()
            digest.update(f"{name}\0{len(content)}\0".encode() + content)
    return digest.hexdigest()
