"""Parity of an exported graph with its PyTorch student, under ONNX Runtime on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from codistill.config import ParityConfig
from codistill.data.transforms import to_tensors
from codistill.export.graph_io import INPUT_NAME
from codistill.export.onnx_graph import DeployableStudent, Normalization
from codistill.models.output import segment


class ParityError(RuntimeError):
    """An exported graph disagrees with PyTorch beyond the configured bounds."""


def resized_batch(images: list[np.ndarray], size: tuple[int, int], count: int) -> torch.Tensor:
    """The first ``count`` H×W×3 uint8 images resized to ``size`` (bilinear), stacked."""
    if len(images) < count:
        raise ValueError(f"parity needs {count} images, got {len(images)}")
    height, width = size
    return torch.stack(
        [
            torch.from_numpy(np.array(Image.fromarray(image).resize((width, height))))
            for image in images[:count]
        ]
    )


@torch.no_grad()
def check_parity(
    student: nn.Module,
    onnx_path: str | Path,
    images: list[np.ndarray],
    cfg: ParityConfig,
    normalization: Normalization,
    scale: float = 1.0,
) -> list[dict]:
    """Compare the graph with PyTorch on real uint8 images at each resolution and batch size.

    Two references: the same uint8 interface in PyTorch (logits and labels), and the
    evaluation's FP32 path (images normalized like training, the student at ``scale``),
    whose labels the graph must reproduce. Returns one record per case.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    model = DeployableStudent(student, normalization, scale).eval()
    records = []
    for size in cfg.resolutions:
        for batch in cfg.batch_sizes:
            pixels = resized_batch(images, tuple(size), batch)
            torch_logits, torch_labels = model(pixels)
            onnx_logits, onnx_labels = session.run(None, {INPUT_NAME: pixels.numpy()})
            fp32_labels = segment(student, evaluation_input(pixels, normalization), scale)
            fp32_labels = fp32_labels.argmax(dim=1)
            max_diff = float(np.abs(onnx_logits - torch_logits.numpy()).max())
            agreement = float((onnx_labels == torch_labels.numpy()).mean())
            fp32_agreement = float((onnx_labels == fp32_labels.numpy()).mean())
            records.append(
                {
                    "height": size[0],
                    "width": size[1],
                    "batch": batch,
                    "max_abs_logit_diff": max_diff,
                    "label_agreement": agreement,
                    "fp32_path_label_agreement": fp32_agreement,
                    "labels_dtype": str(onnx_labels.dtype),
                    "passed": max_diff <= cfg.max_abs_logit_diff
                    and min(agreement, fp32_agreement) >= cfg.min_label_agreement,
                }
            )
    return records


def evaluation_input(pixels: torch.Tensor, normalization: Normalization) -> torch.Tensor:
    """N×H×W×3 uint8 images as the evaluation feeds them: ``to_tensors`` of the data loader."""
    mean, std = list(normalization.mean), list(normalization.std)
    no_labels = np.zeros(pixels.shape[1:3], np.uint8)  # to_tensors converts labels too
    return torch.stack([to_tensors(p.numpy(), no_labels, mean, std)[0] for p in pixels])


def parity_failures(records: list[dict], cfg: ParityConfig) -> list[str]:
    """Human-readable lines for the cases that broke a bound."""
    return [
        f"{r['height']}x{r['width']} batch {r['batch']}: max |logit diff| "
        f"{r['max_abs_logit_diff']:.2e} (bound {cfg.max_abs_logit_diff:.0e}), label agreement "
        f"{r['label_agreement']:.5f} with PyTorch and {r['fp32_path_label_agreement']:.5f} with "
        f"the FP32 evaluation path (bound {cfg.min_label_agreement})"
        for r in records
        if not r["passed"]
    ]
