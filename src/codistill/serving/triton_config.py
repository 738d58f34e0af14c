"""Triton model configurations (``config.pbtxt``) derived from an exported ONNX graph.

Names, data types and shapes come from the graph itself; batching and instances from the
``serving`` section of ``params.yaml``; the device, the graph file and the TensorRT
accelerator from the caller.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from codistill.config import ServingConfig

DEVICES = ("cpu", "gpu")

# ONNX TensorProto element types to Triton data types.
ONNX_TO_TRITON = {
    1: "TYPE_FP32",
    2: "TYPE_UINT8",
    3: "TYPE_INT8",
    6: "TYPE_INT32",
    7: "TYPE_INT64",
    9: "TYPE_BOOL",
    10: "TYPE_FP16",
    11: "TYPE_FP64",
}


def _tensors(values: Any, batched: bool) -> list[dict[str, Any]]:
    tensors = []
    for value in values:
        tensor = value.type.tensor_type
        if tensor.elem_type not in ONNX_TO_TRITON:
            raise ValueError(
                f"{value.name}: ONNX element type {tensor.elem_type} has no Triton type"
            )
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
        if batched:
            if dims and dims[0] not in (-1,):
                raise ValueError(f"{value.name}: first axis {dims[0]} is not a dynamic batch")
            dims = dims[1:]
        tensors.append(
            {"name": value.name, "data_type": ONNX_TO_TRITON[tensor.elem_type], "dims": dims}
        )
    return tensors


def model_config(
    onnx_path: str | Path,
    name: str,
    settings: ServingConfig,
    device: str,
    model_file: str | None = None,
    tensorrt: bool = True,
) -> Any:
    """The ``ModelConfig`` protobuf that serves ``onnx_path`` as ``name`` on ``device``.

    ``model_file`` names the version folder's graph when it is not ``model.onnx``; on the
    GPU, ``tensorrt`` asks ONNX Runtime for the TensorRT accelerator.
    """
    import onnx
    from tritonclient.grpc import model_config_pb2 as pb

    if device not in DEVICES:
        raise ValueError(f"device: {device!r} is not one of {', '.join(DEVICES)}")
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    config = pb.ModelConfig(
        name=name, backend="onnxruntime", max_batch_size=settings.max_batch_size
    )
    if model_file is not None:
        config.default_model_filename = model_file
    for spec in _tensors(graph.input, batched=True):
        config.input.add(name=spec["name"], data_type=spec["data_type"], dims=spec["dims"])
    for spec in _tensors(graph.output, batched=True):
        config.output.add(name=spec["name"], data_type=spec["data_type"], dims=spec["dims"])
    config.dynamic_batching.preferred_batch_size.extend(settings.preferred_batch_sizes)
    config.dynamic_batching.max_queue_delay_microseconds = settings.max_queue_delay_us
    kind = pb.ModelInstanceGroup.KIND_GPU if device == "gpu" else pb.ModelInstanceGroup.KIND_CPU
    config.instance_group.add(count=settings.instances, kind=kind)
    if device == "gpu" and tensorrt:
        accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add(
            name="tensorrt"
        )
        accelerator.parameters["precision_mode"] = settings.tensorrt_precision
        # one engine per model, built once and reused by every instance and restart
        accelerator.parameters["trt_engine_cache_enable"] = "1"
        accelerator.parameters["trt_engine_cache_path"] = f"{settings.tensorrt_cache}/{name}"
    add_warmup(config, settings.warmup_size)
    return config


def add_warmup(config: Any, size: tuple[int, int]) -> None:
    """One zero-filled request at ``size`` (height, width), run as the model loads.

    Each input's dynamic axes after the batch take the height, then the width.
    """
    warmup = config.model_warmup.add(name=f"zeros_{size[0]}x{size[1]}", batch_size=1, count=1)
    for spec in config.input:
        sizes = iter(size)
        dims = [d if d != -1 else next(sizes) for d in spec.dims]
        warmup.inputs[spec.name].data_type = spec.data_type
        warmup.inputs[spec.name].dims.extend(dims)
        warmup.inputs[spec.name].zero_data = True


def config_text(config: Any) -> str:
    """``config`` in Triton's protobuf text format."""
    from google.protobuf import text_format

    return text_format.MessageToString(config)


def read_config(path: str | Path) -> Any:
    """Parse a ``config.pbtxt`` back into a ``ModelConfig``."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as pb

    return text_format.Parse(Path(path).read_text(), pb.ModelConfig())
