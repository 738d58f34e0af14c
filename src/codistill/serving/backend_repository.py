"""The local server's own model repository: each student as a Python-backend model.

The ``tritonserver`` bundled with nvidia-pytriton has only the Python backend, so each model of
the published repository is rewritten for it: the same name, tensors, data types, batch size,
dynamic batching and instance count as its chosen configuration, ``backend: "python"``, and
``triton_python_model.py`` as its ``model.py``, which runs the ONNX graph with ONNX Runtime
on the CPU. The backend folder links the bundled backend and the stub for this Python.
"""

from __future__ import annotations

import math
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codistill.serving.model_repository import MODEL_FILE, VERSION
from codistill.serving.triton_config import read_config

MODEL_SOURCE = Path(__file__).with_name("triton_python_model.py")


@dataclass(frozen=True)
class Limits:
    """The image sizes every served model accepts."""

    max_pixels: int
    min_side: int
    max_logit_pixels: int


def pytriton_root() -> Path:
    """nvidia-pytriton's package folder, which holds the bundled server."""
    import pytriton

    return Path(pytriton.__file__).resolve().parent


def server_binary() -> Path:
    """The bundled ``tritonserver`` executable."""
    return pytriton_root() / "tritonserver" / "bin" / "tritonserver"


def server_libraries() -> Path:
    """The shared libraries the bundled server links against."""
    return pytriton_root().parent / "nvidia_pytriton.libs"


def link_backends(target: Path) -> Path:
    """A backend folder whose ``python`` backend uses the stub built for this interpreter."""
    bundled = pytriton_root() / "tritonserver"
    python = target / "python"
    python.mkdir(parents=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        (python / name).symlink_to(bundled / "backends" / "python" / name)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = bundled / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise FileNotFoundError(f"{stub}: nvidia-pytriton has no backend stub for Python {version}")
    (python / "triton_python_backend_stub").symlink_to(stub)
    return target


def chosen_config(model_dir: Path, config_name: str) -> Any:
    """The model's ``configs/<config_name>.pbtxt``, else its ``config.pbtxt`` (as Triton does)."""
    chosen = model_dir / "configs" / f"{config_name}.pbtxt"
    return read_config(chosen if chosen.is_file() else model_dir / "config.pbtxt")


def spatial_axes(config: Any) -> tuple[int, ...]:
    """The batched array's axes of the image's height and width: the input's dynamic dims."""
    return tuple(1 + i for i, size in enumerate(config.input[0].dims) if size == -1)


def retained_pixels(config: Any) -> int:
    """Pixels of a full batch of ``config``'s largest warm-up image (0 without a warm-up).

    The served model keeps the memory of a call up to this size for the next one: a batch of
    8 images at the default 360×480 holds about 185 MB (CNN) and 210 MB (ViT) between calls.
    """
    axes = spatial_axes(config)
    largest = max(
        (
            math.prod(spec.dims[axis - 1] for axis in axes)
            for warmup in config.model_warmup
            for spec in warmup.inputs.values()
        ),
        default=0,
    )
    return max(config.max_batch_size, 1) * largest


def backend_config(config: Any, graph: Path, limits: Limits, dynamic_batching: bool = True) -> Any:
    """``config`` for the Python backend: same tensors and batching, the graph as a parameter.

    Without ``dynamic_batching`` every request runs on its own. The ``model_warmup`` requests
    are left to ``codistill serve``, which sends them end to end before it reports ready; the
    memory a full batch of their images needs stays with the model between calls.
    """
    from tritonclient.grpc import model_config_pb2 as pb

    served = pb.ModelConfig()
    served.CopyFrom(config)
    for field in ("platform", "default_model_filename", "optimization", "model_warmup"):
        served.ClearField(field)
    if not dynamic_batching:
        served.ClearField("dynamic_batching")
    served.backend = "python"
    for group in served.instance_group:  # ONNX Runtime runs on the CPU here
        group.kind = pb.ModelInstanceGroup.KIND_CPU
        group.ClearField("gpus")
    parameters = {
        "onnx_path": str(graph),
        "spatial_axes": ",".join(str(axis) for axis in spatial_axes(config)),
        "max_pixels": str(limits.max_pixels),
        "max_logit_pixels": str(limits.max_logit_pixels),
        "min_side": str(limits.min_side),
        "retained_pixels": str(retained_pixels(config)),
    }
    for key, value in parameters.items():
        served.parameters[key].string_value = value
    return served


def write_backend_model(
    model_dir: Path, target: Path, config_name: str, limits: Limits, dynamic_batching: bool
) -> str:
    """Write ``model_dir``'s student as a Python-backend model under ``target``.

    Returns the model name with the graph file it serves, e.g. ``codistill_cnn (model.onnx)``.
    """
    from google.protobuf import text_format

    config = chosen_config(model_dir, config_name)
    graph = (model_dir / VERSION / (config.default_model_filename or MODEL_FILE)).resolve()
    served = backend_config(config, graph, limits, dynamic_batching)
    folder = target / config.name
    (folder / VERSION).mkdir(parents=True)
    (folder / "config.pbtxt").write_text(text_format.MessageToString(served))
    shutil.copyfile(MODEL_SOURCE, folder / VERSION / "model.py")
    return f"{config.name} ({graph.name})"
