"""A Triton model repository: one folder per student with its graph and configurations.

Layout per model: ``config.pbtxt`` (CPU, Triton's default), ``configs/cpu.pbtxt`` and
``configs/gpu.pbtxt`` (picked with ``--model-config-name``), and ``1/model.onnx``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from codistill.artifacts import staged_output, write_text_atomic
from codistill.config import ServingConfig
from codistill.serving.triton_config import DEVICES, config_text, model_config

MODEL_FILE = "model.onnx"
VERSION = "1"


def served_name(role: str) -> str:
    """The Triton model name of student ``role``."""
    return f"codistill_{role}"


def write_model(onnx_path: Path, model_dir: Path, name: str, settings: ServingConfig) -> Path:
    """Replace ``model_dir`` with the graph and its configurations, atomically."""
    with staged_output(model_dir) as staged:
        (staged / VERSION).mkdir()
        shutil.copyfile(onnx_path, staged / VERSION / MODEL_FILE)
        (staged / "configs").mkdir()
        for device in DEVICES:
            text = config_text(model_config(onnx_path, name, settings, device))
            write_text_atomic(staged / "configs" / f"{device}.pbtxt", text)
            if device == "cpu":
                write_text_atomic(staged / "config.pbtxt", text)
    return model_dir


def write_model_repository(
    onnx_dir: str | Path, repository: str | Path, settings: ServingConfig, roles: tuple[str, ...]
) -> dict[str, Path]:
    """Write one served model per student role from ``onnx_dir/<role>.onnx``."""
    onnx_dir, repository = Path(onnx_dir), Path(repository)
    written = {}
    for role in roles:
        onnx_path = onnx_dir / f"{role}.onnx"
        if not onnx_path.is_file():
            raise FileNotFoundError(f"{onnx_path}: no exported {role}; run the export stage")
        name = served_name(role)
        written[name] = write_model(onnx_path, repository / name, name, settings)
    return written
