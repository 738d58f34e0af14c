"""Parity of an exported graph with its PyTorch student, under ONNX Runtime on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from codistill.config import ParityConfig
from codistill.export.onnx_graph import INPUT_NAME, DeployableStudent


class ParityError(RuntimeError):
    """An exported graph disagrees with PyTorch beyond the configured bounds."""


def _cases(images: torch.Tensor, cfg: ParityConfig) -> list[tuple[tuple[int, int], int]]:
    if images.shape[0] < max(cfg.batch_sizes):
        raise ValueError(f"parity needs {max(cfg.batch_sizes)} images, got {images.shape[0]}")
    return [(tuple(size), batch) for size in cfg.resolutions for batch in cfg.batch_sizes]


@torch.no_grad()
def check_parity(
    student: nn.Module,
    onnx_path: str | Path,
    images: torch.Tensor,
    cfg: ParityConfig,
    scale: float = 1.0,
) -> list[dict]:
    """Compare PyTorch (run at ``scale``) and ONNX Runtime at each resolution and batch size.

    Returns one record per case; raises ParityError naming every case out of bounds.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    model = DeployableStudent(student, scale).eval()
    records = []
    for size, batch in _cases(images, cfg):
        inputs = F.interpolate(images[:batch], size=size, mode="bilinear", align_corners=False)
        torch_logits, torch_labels = model(inputs)
        onnx_logits, onnx_labels = session.run(None, {INPUT_NAME: inputs.numpy()})
        max_diff = float(np.abs(onnx_logits - torch_logits.numpy()).max())
        agreement = float((onnx_labels == torch_labels.numpy()).mean())
        records.append(
            {
                "height": size[0],
                "width": size[1],
                "batch": batch,
                "max_abs_logit_diff": max_diff,
                "label_agreement": agreement,
                "labels_dtype": str(onnx_labels.dtype),
                "passed": max_diff <= cfg.max_abs_logit_diff
                and agreement >= cfg.min_label_agreement,
            }
        )
    return records


def parity_failures(records: list[dict], cfg: ParityConfig) -> list[str]:
    """Human-readable lines for the cases that broke a bound."""
    return [
        f"{r['height']}x{r['width']} batch {r['batch']}: max |logit diff| "
        f"{r['max_abs_logit_diff']:.2e} (bound {cfg.max_abs_logit_diff:.0e}), label agreement "
        f"{r['label_agreement']:.5f} (bound {cfg.min_label_agreement})"
        for r in records
        if not r["passed"]
    ]
