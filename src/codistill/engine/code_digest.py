"""A digest of the source code that shapes the trained weights, for checkpoint fingerprints."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from codistill.imports import PACKAGE_ROOT, import_closure

# Training is this module and all it imports: the same import closure that gives the train
# stage its code dependencies, without the command line, the stage runner and the stage.
TRAINING_MODULE = "codistill.engine.trainer"
# What the trainer imports that does not shape the weights: the configuration (a run's
# identity holds its resolved values), what only observes, records or tunes the process
# (hooks, progress, tracking, the allocator setting, file writing), data preparation and its
# gate (the identity holds the prepared data's manifest), and this digest. A hook that changed
# what training computes would shape the weights: it belongs in a covered module.
NOT_WEIGHT_SHAPING = (
    "__init__.py",
    "artifacts.py",
    "imports.py",
    "config/",
    "engine/code_digest.py",
    "engine/hooks.py",
    "engine/host_memory.py",
    "engine/progress.py",
    "engine/tracking.py",
    "data/camvid.py",
    "data/cityscapes.py",
    "data/gate.py",
    "data/inspect.py",
    "data/manifest.py",
    "data/prepare.py",
    "data/voc.py",
)


def weight_shaping_files(root: Path = PACKAGE_ROOT) -> list[Path]:
    """The files of the training module's import closure that shape the weights, sorted."""
    return sorted(
        source
        for source in import_closure([TRAINING_MODULE], root)
        if not source.relative_to(root).as_posix().startswith(NOT_WEIGHT_SHAPING)
    )


@functools.cache
def code_digest(root: Path = PACKAGE_ROOT) -> str:
    """SHA-256 over the path and content of every weight-shaping file."""
    digest = hashlib.sha256()
    for source in weight_shaping_files(root):
        content = source.read_bytes()
        name = source.relative_to(root).as_posix()
        digest.update(f"{name}\0{len(content)}\0".encode() + content)
    return digest.hexdigest()
