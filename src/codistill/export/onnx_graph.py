"""One student as an ONNX graph: image in, full-size logits and arg-max labels out."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from codistill.export.graph_checks import check_graph
from codistill.models.output import segment

INPUT_NAME = "image"
OUTPUT_NAMES = ("logits", "labels")
LABEL_DTYPE = torch.uint8


class DeployableStudent(nn.Module):
    """A trained student without its training-only parts, with the serving outputs.

    The graph resizes the image by ``scale`` (``evaluate.scale``, the scale the student was
    trained at) before the student, and returns outputs at the image's own size.
    """

    def __init__(self, student: nn.Module, scale: float = 1.0) -> None:
        super().__init__()
        self.student = student
        self.scale = scale

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (N×K×H×W, float32) and labels (N×H×W, uint8) at the input's size."""
        logits = segment(self.student, image, self.scale)
        return logits, logits.argmax(dim=1).to(LABEL_DTYPE)


def _export_torchscript(model: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    torch.onnx.export(
        model,
        (example,),
        str(path),
        dynamo=False,
        input_names=[INPUT_NAME],
        output_names=list(OUTPUT_NAMES),
        dynamic_axes={
            INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
            "logits": {0: "batch", 2: "height", 3: "width"},
            "labels": {0: "batch", 1: "height", 2: "width"},
        },
        opset_version=opset,
    )


def _export_dynamo(model: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    dims = {
        0: torch.export.Dim("batch", min=1, max=1024),
        2: torch.export.Dim("height", min=32, max=4096),
        3: torch.export.Dim("width", min=32, max=4096),
    }
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        input_names=[INPUT_NAME],
        output_names=list(OUTPUT_NAMES),
        dynamic_shapes={INPUT_NAME: dims},
        opset_version=opset,
    )
    # One self-contained file: the serving repository holds exactly one model.onnx.
    program.save(str(path), external_data=False)


EXPORTERS = {"torchscript": _export_torchscript, "dynamo": _export_dynamo}


def _declare_io_shapes(path: Path, channels: int, num_classes: int) -> None:
    """Name the dynamic axes alike for both exporters and fix the channel and class counts."""
    import onnx

    model = onnx.load(str(path))
    shapes = {
        INPUT_NAME: ("batch", channels, "height", "width"),
        "logits": ("batch", num_classes, "height", "width"),
        "labels": ("batch", "height", "width"),
    }
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        for dim, size in zip(dims, shapes[value.name], strict=True):
            dim.Clear()
            if isinstance(size, str):
                dim.dim_param = size
            else:
                dim.dim_value = size
    onnx.save(model, str(path))
    check_graph(path)


def export_onnx(
    student: nn.Module,
    path: str | Path,
    exporter: str,
    opset: int,
    example_size: tuple[int, int],
    scale: float = 1.0,
) -> Path:
    """Write ``student`` (run at ``scale``) as one ONNX file with dynamic batch, height, width."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = DeployableStudent(student, scale).eval()
    # A batch of two: the dynamo exporter would otherwise specialise the batch size to 1.
    example = torch.randn(2, 3, *example_size)
    partial = path.with_name(f".{path.name}.partial")
    with torch.no_grad():
        num_classes = model(example)[0].shape[1]
        if num_classes > torch.iinfo(LABEL_DTYPE).max + 1:
            raise ValueError(f"{num_classes} classes do not fit the {LABEL_DTYPE} labels output")
        EXPORTERS[exporter](model, example, partial, opset)
    _declare_io_shapes(partial, example.shape[1], num_classes)
    partial.replace(path)
    return path
