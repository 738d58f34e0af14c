"""Atomic training checkpoints holding everything a resumed run needs, RNG states included."""

from __future__ import annotations

import io
import os
import pickle
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch


def capture_rng() -> dict[str, Any]:
    """Every RNG state the training loop can touch, in types ``weights_only`` loading accepts."""
    numpy_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
            "pos": int(numpy_state[2]),
            "has_gauss": int(numpy_state[3]),
            "gauss": float(numpy_state[4]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Put back the RNG states captured by ``capture_rng``."""
    random.setstate(_as_tuples(state["python"]))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["gauss"],
        )
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_as_tuples(v) for v in value)
    return value


class CheckpointError(RuntimeError):
    """A checkpoint file does not read back, or could not be written."""


def previous_path(path: str | Path) -> Path:
    """Where ``save_checkpoint(keep_previous=True)`` keeps the checkpoint ``path`` replaced."""
    path = Path(path)
    return path.with_name(f"{path.stem}.previous{path.suffix}")


def save_checkpoint(path: str | Path, state: dict[str, Any], keep_previous: bool = False) -> None:
    """Write ``state`` to a temporary file beside ``path``, then rename it into place.

    With ``keep_previous`` the file it replaces is kept at ``previous_path(path)``, so that a
    checkpoint damaged later (a full disk, a bad copy) still leaves one to resume from.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Serialized in memory first: torch's file writer reports a full disk as an internal
    # assertion, a plain write names it (errno ENOSPC, EFBIG, EDQUOT).
    serialized = io.BytesIO()
    torch.save(state, serialized)
    temporary = None
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(handle, "wb") as file:
            file.write(serialized.getbuffer())
        if keep_previous and path.is_file():
            os.replace(path, previous_path(path))
        os.replace(temporary, path)
    except OSError as err:
        _discard(temporary)
        reason = err.strerror or type(err).__name__
        raise CheckpointError(
            f"{reason[0].lower()}{reason[1:]}: {path}; the checkpoint before it is kept"
        ) from None
    except BaseException:
        _discard(temporary)
        raise


def _discard(temporary: str | None) -> None:
    if temporary is not None:
        Path(temporary).unlink(missing_ok=True)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: tensors and plain containers only.

    Raises CheckpointError, naming the file, if it is truncated, empty or not a checkpoint.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason})") from None
