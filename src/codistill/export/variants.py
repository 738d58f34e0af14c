"""Faster variants of an exported graph: INT8 (ONNX Runtime static quantization) and FP16.

Both keep the graph's interface: ``image`` stays UINT8 in, ``logits`` FP32 and ``labels``
UINT8 out, so a client and a Triton configuration need not change.
"""

from __future__ import annotations

import logging
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from codistill.config import VARIANTS
from codistill.export.graph_checks import (
    check_graph,
    drop_value_info_of_initializers,
    sort_topologically,
)
from codistill.export.graph_io import INPUT_NAME, LOGITS_OUTPUT, variant_file


@contextmanager
def _quiet_onnxruntime_tools() -> Iterator[None]:
    # The quantization tools log one warning per LayerNorm weight and shape-inference step.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_int8(source: Path, target: Path, calibration: Sequence[np.ndarray]) -> None:
    """Statically quantize ``source`` to INT8 (QDQ, per-channel weights), calibrated on images.

    ``calibration`` holds 1×H×W×3 uint8 images; activation ranges are their min/max over all
    of them.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calibration:
        raise ValueError("INT8 calibration needs at least one image")

    class Images(CalibrationDataReader):
        def __init__(self) -> None:
            self.remaining = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            image = next(self.remaining, None)
            return None if image is None else {INPUT_NAME: image}

    with tempfile.TemporaryDirectory(prefix="codistill-quant-") as work, _quiet_onnxruntime_tools():
        optimized = Path(work) / "preprocessed.onnx"
        # symbolic shape inference cannot follow every dynamo graph; ONNX shape inference can
        quant_pre_process(str(source), str(optimized), skip_symbolic_shape=True)
        quantize_static(
            str(optimized),
            str(target),
            Images(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=serving_wrapper_nodes(onnx.load(str(optimized)).graph),
        )


# Shape arithmetic reads the image too, but not its pixels.
_SIZE_OPS = frozenset({"Shape", "Size"})


def serving_wrapper_nodes(graph: Any) -> list[str]:
    """The names of the nodes the serving wrapper adds around the student.

    The image's path to the student's first convolution (layout, cast, resize,
    normalization) and the nodes that make and read the full-size logits (their upsampling,
    the arg-max). They stay FP32 in the INT8 graph: the input is quantized once, where the
    student starts, and the logits are not rounded to 8 bits before their arg-max.
    """
    consumers: dict[str, list[Any]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    wrapper = []
    tensor = INPUT_NAME
    while True:
        on_path = [n for n in consumers[tensor] if n.op_type not in _SIZE_OPS]
        if len(on_path) != 1 or on_path[0].op_type == "Conv":
            break
        wrapper.append(on_path[0].name)
        tensor = on_path[0].output[0]
    wrapper += [n.name for n in graph.node if LOGITS_OUTPUT in n.output]
    return wrapper + [n.name for n in consumers[LOGITS_OUTPUT]]


def convert_fp16(source: Path, target: Path, calibration: Sequence[np.ndarray] = ()) -> None:
    """Convert ``source``'s weights and arithmetic to FP16, keeping the input and output types."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    # the converter appends the input casts after the nodes that read them
    sort_topologically(model.graph)
    # it can also type an initializer it kept FP32 as FP16 (a dynamo graph's Resize scales)
    drop_value_info_of_initializers(model.graph)
    onnx.save(model, str(target))


# The builder of each variant that the configuration accepts (VARIANTS).
BUILDERS: dict[str, Callable[[Path, Path, Sequence[np.ndarray]], None]] = {
    "int8": quantize_int8,
    "fp16": convert_fp16,
}
if set(BUILDERS) != set(VARIANTS):
    raise ImportError(f"variant builders for {sorted(BUILDERS)}, not {VARIANTS}")


def build_variant(variant: str, source: Path, calibration: Sequence[np.ndarray]) -> Path:
    """Write ``variant`` of ``source`` next to it and return its path."""
    if variant not in BUILDERS:
        raise ValueError(f"variant: {variant!r} is not one of {', '.join(VARIANTS)}")
    role = source.name.removesuffix(".onnx")
    target = source.with_name(variant_file(role, variant))
    BUILDERS[variant](source, target, calibration)
    check_graph(target)
    return target
