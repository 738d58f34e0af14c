"""One student as an ONNX graph: a raw RGB image in, full-size logits and arg-max labels out."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from codistill.config import EXPORTERS
from codistill.data.prepare import STATS_JSON
from codistill.data.transforms import rescale_images
from codistill.export.folding import inference_form
from codistill.export.graph_checks import check_graph
from codistill.export.graph_io import INPUT_NAME, LABELS_OUTPUT, LOGITS_OUTPUT, OUTPUT_NAMES
from codistill.models.output import upsample_logits

INPUT_DTYPE = torch.uint8
LABEL_DTYPE = torch.uint8
CHANNELS = 3


@dataclass(frozen=True)
class Normalization:
    """The per-channel statistics the students were trained with (of pixels in [0, 1])."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def of_prepared(cls, prepared_dir: str | Path) -> Normalization:
        """The statistics the prepare stage computed on the training split."""
        stats = json.loads((Path(prepared_dir) / STATS_JSON).read_text())
        return cls(tuple(stats["mean"]), tuple(stats["std"]))


class DeployableStudent(nn.Module):
    """A trained student without its training-only parts, with the serving interface.

    In: ``image``, N×H×W×3 RGB uint8, any size. Inside: the resize by ``scale`` (the scale
    the student was trained at), the training normalization, the student, and the logits
    upsampled back. Out: logits (N×K×H×W, float32) and labels (N×H×W, uint8).

    The evaluation path (``segment``) normalizes and then resizes. A bilinear resize weighs
    each output pixel's neighbours with weights that sum to one, so it commutes with the
    per-channel affine normalization: the graph normalizes the resized image instead, the
    same function on ``scale``² of the pixels, with one multiply-add per pixel. (In an INT8
    graph ONNX Runtime moves the input's transpose past the normalization, where its
    per-channel broadcast runs on 3-value spans: about 3 ms per operator on 360×480.)
    """

    def __init__(self, student: nn.Module, normalization: Normalization, scale: float) -> None:
        super().__init__()
        self.student = student
        self.scale = scale
        mean = torch.tensor(normalization.mean).view(1, -1, 1, 1)
        std = torch.tensor(normalization.std).view(1, -1, 1, 1)
        # (pixels / 255 - mean) / std = pixels * gain + offset
        self.register_buffer("gain", 1 / (255 * std))
        self.register_buffer("offset", -mean / std)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and labels at the input's size for an N×H×W×3 uint8 batch."""
        pixels = rescale_images(image.permute(0, 3, 1, 2).float(), self.scale)
        logits = self.student(pixels * self.gain + self.offset).logits
        logits = upsample_logits(logits, image.shape[1:3])
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
            INPUT_NAME: {0: "batch", 1: "height", 2: "width"},
            LOGITS_OUTPUT: {0: "batch", 2: "height", 3: "width"},
            LABELS_OUTPUT: {0: "batch", 1: "height", 2: "width"},
        },
        opset_version=opset,
    )


def _export_dynamo(model: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    dims = {
        0: torch.export.Dim("batch", min=1, max=1024),
        1: torch.export.Dim("height", min=32, max=4096),
        2: torch.export.Dim("width", min=32, max=4096),
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


# The export function of each exporter name that the configuration accepts (EXPORTERS).
EXPORT_FUNCTIONS = {"torchscript": _export_torchscript, "dynamo": _export_dynamo}
if set(EXPORT_FUNCTIONS) != set(EXPORTERS):
    raise ImportError(f"export functions for {sorted(EXPORT_FUNCTIONS)}, not {EXPORTERS}")


def _declare_io_shapes(path: Path, channels: int, num_classes: int) -> None:
    """Name the dynamic axes alike for both exporters and fix the channel and class counts."""
    import onnx

    model = onnx.load(str(path))
    shapes = {
        INPUT_NAME: ("batch", "height", "width", channels),
        LOGITS_OUTPUT: ("batch", num_classes, "height", "width"),
        LABELS_OUTPUT: ("batch", "height", "width"),
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
    normalization: Normalization,
    scale: float = 1.0,
) -> Path:
    """Write ``student`` as one ONNX file with dynamic batch, height and width.

    The graph takes N×H×W×3 uint8 RGB images (see ``DeployableStudent``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The graph computes the trained student in its inference form (the same function with
    # less work); the parity gate compares it with the student as trained.
    model = DeployableStudent(inference_form(student), normalization, scale).eval()
    # A batch of two: the dynamo exporter would otherwise specialise the batch size to 1.
    generator = torch.Generator().manual_seed(0)
    shape = (2, *example_size, CHANNELS)
    example = torch.randint(0, 256, shape, dtype=INPUT_DTYPE, generator=generator)
    partial = path.with_name(f".{path.name}.partial")
    with torch.no_grad():
        num_classes = model(example)[0].shape[1]
        if num_classes > torch.iinfo(LABEL_DTYPE).max + 1:
            raise ValueError(f"{num_classes} classes do not fit the {LABEL_DTYPE} labels output")
        EXPORT_FUNCTIONS[exporter](model, example, partial, opset)
    _declare_io_shapes(partial, CHANNELS, num_classes)
    partial.replace(path)
    return path
