"""A Triton model repository: one folder per student with its graphs and configurations.

Layout per model: ``1/model.onnx`` (FP32) plus ``1/model.<variant>.onnx`` for each faster
variant the export stage kept; ``config.pbtxt`` (CPU, Triton's default) and
``configs/<name>.pbtxt`` for every entry of ``SERVED_CONFIGS`` whose graph is there, picked
with ``--model-config-name``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from codistill.artifacts import staged_output, write_text_atomic
from codistill.config import ServingConfig
from codistill.export.graph_io import PREPROCESSING_JSON, variant_file
from codistill.serving.triton_config import config_text, model_config

MODEL_FILE = "model.onnx"
VERSION = "1"
DEFAULT_CONFIG = "cpu"


@dataclass(frozen=True)
class ServedConfig:
    """One way to serve a student: the device, the graph variant, the TensorRT accelerator."""

    name: str
    device: str
    variant: str | None = None
    tensorrt: bool = False

    @property
    def model_file(self) -> str:
        """The graph's file name in the version folder."""
        return MODEL_FILE if self.variant is None else f"model.{self.variant}.onnx"


SERVED_CONFIGS = (
    ServedConfig("cpu", "cpu"),
    ServedConfig("gpu", "gpu", tensorrt=True),
    ServedConfig("cpu-int8", "cpu", variant="int8"),
    ServedConfig("gpu-fp16", "gpu", variant="fp16"),
)


def served_name(role: str) -> str:
    """The Triton model name of student ``role``."""
    return f"codistill_{role}"


def student_graphs(onnx_dir: Path, role: str) -> dict[str | None, Path]:
    """Student ``role``'s exported graphs by variant (``None`` for FP32) found in ``onnx_dir``."""
    graphs: dict[str | None, Path] = {None: onnx_dir / f"{role}.onnx"}
    if not graphs[None].is_file():
        raise FileNotFoundError(f"{graphs[None]}: no exported {role}; run the export stage")
    for variant in {s.variant for s in SERVED_CONFIGS} - {None}:
        path = onnx_dir / variant_file(role, variant)
        if path.is_file():
            graphs[variant] = path
    return graphs


def write_model(
    graphs: dict[str | None, Path], model_dir: Path, name: str, settings: ServingConfig
) -> Path:
    """Replace ``model_dir`` with the graphs and a configuration for each, atomically."""
    with staged_output(model_dir) as staged:
        (staged / VERSION).mkdir()
        (staged / "configs").mkdir()
        for served in SERVED_CONFIGS:
            if served.variant not in graphs:
                continue
            target = staged / VERSION / served.model_file
            if not target.exists():
                shutil.copyfile(graphs[served.variant], target)
            config = model_config(
                target,
                name,
                settings,
                served.device,
                model_file=None if served.variant is None else served.model_file,
                tensorrt=served.tensorrt,
            )
            write_text_atomic(staged / "configs" / f"{served.name}.pbtxt", config_text(config))
        shutil.copyfile(staged / "configs" / f"{DEFAULT_CONFIG}.pbtxt", staged / "config.pbtxt")
    return model_dir


def write_model_repository(
    onnx_dir: str | Path, repository: str | Path, settings: ServingConfig, roles: tuple[str, ...]
) -> dict[str, Path]:
    """Write one served model per student role from ``onnx_dir/<role>[.<variant>].onnx``.

    The graphs' preprocessing contract goes with them, where ``onnx_dir`` has one (the server
    sizes the smallest image it accepts by its inference scale); where it has none, none is
    left in the repository.
    """
    onnx_dir, repository = Path(onnx_dir), Path(repository)
    written = {}
    for role in roles:
        name = served_name(role)
        written[name] = write_model(
            student_graphs(onnx_dir, role), repository / name, name, settings
        )
    contract = onnx_dir / PREPROCESSING_JSON
    if contract.is_file():
        write_text_atomic(repository / PREPROCESSING_JSON, contract.read_text())
    else:  # an earlier graphs' contract would size these graphs' images
        (repository / PREPROCESSING_JSON).unlink(missing_ok=True)
    return written
