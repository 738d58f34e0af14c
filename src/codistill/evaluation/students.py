"""Both trained students, loaded from a train stage's output folder."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from codistill.config import ROLES, Params
from codistill.engine.checkpoint import load_checkpoint
from codistill.models import build_student


def load_students(params: Params, train_dir: Path, num_classes: int) -> dict[str, nn.Module]:
    """Both trained students, as plain models (no distillation adapters)."""
    students = {}
    for role in ROLES:
        path = train_dir / f"{role}.pt"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no trained {role} student; run the train stage")
        model = build_student(getattr(params.models, role), num_classes)
        model.load_state_dict(load_checkpoint(path))
        students[role] = model
    return students
