"""A digest of the source code that shapes the trained weights, for checkpoint fingerprints."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from codistill.imports import PACKAGE_ROOT, import_closure

# Training is this module and all it imports: the same import closure that gives the train
# stage its code dependencies, without the command line, the stage runner and the stage.
TRAINING_MODULE = "codistill.engine.trainer"


@functools.cache
def code_digest(root: Path = PACKAGE_ROOT) -> str:
    """SHA-256 over the path and content of every file that the training module imports."""
    digest = hashlib.sha256()
    for source in sorted(import_closure([TRAINING_MODULE], root)):
        content = source.read_bytes()
        name = source.relative_to(root).as_posix()
        digest.update(f"{name}\0{len(content)}\0".encode() + content)
    return digest.hexdigest()
