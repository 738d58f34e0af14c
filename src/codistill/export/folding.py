"""Inference forms of trained students: the same function, less work, for export.

The SegFormer head projects each encoder stage with a 1×1 convolution, upsamples it to the
finest stage, concatenates the four and fuses them with a 1×1 convolution and batch norm.
All of that is linear until the ReLU, and bilinear upsampling acts on each channel alone, so
the fusing convolution and the (evaluation-mode) batch norm fold into each stage's
projection: each stage maps straight to the decoder width at its own resolution, is
upsampled, and the four are summed. The concatenation of 4×256 channels at 1/4 resolution
and the 1024→256 convolution over it disappear (about half the ViT's forward FLOPs).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from codistill.models.output import StudentOutput
from codistill.models.segformer import SegFormer


class FoldedSegFormer(nn.Module):
    """A trained ``SegFormer`` in evaluation mode with its fuse folded into the projections."""

    def __init__(self, student: SegFormer) -> None:
        super().__init__()
        self.encoder = student.encoder
        self.low_index = student.low_index
        self.classifier = student.classifier
        fuse, norm = student.fuse[0], student.fuse[1]
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        shift = norm.bias - scale * norm.running_mean
        width = fuse.out_channels
        fuse_weights = fuse.weight.flatten(1).split(width, dim=1)
        self.project = nn.ModuleList()
        bias = shift.clone()
        for projection, fuse_weight in zip(student.project, fuse_weights, strict=True):
            conv = nn.Conv2d(projection.in_channels, width, 1, bias=False)
            folded = scale[:, None] * (fuse_weight @ projection.weight.flatten(1))
            conv.weight.data.copy_(folded.view_as(conv.weight))
            bias += scale * (fuse_weight @ projection.bias)
            self.project.append(conv)
        self.register_buffer("bias", bias.view(1, -1, 1, 1))

    def forward(self, image: torch.Tensor) -> StudentOutput:
        """The student's output on ``image`` (N×3×H×W), as ``SegFormer`` gives it in evaluation."""
        features = self.encoder(image)[self.low_index :]
        size = features[0].shape[2:]
        dec = self.project[0](features[0]) + self.bias
        # every later stage is coarser than the first (a size test here would be traced as a
        # constant), and a bilinear resize to the same size would change nothing anyway
        for projection, feature in zip(self.project[1:], features[1:], strict=True):
            projected = projection(feature)
            dec = dec + F.interpolate(projected, size=size, mode="bilinear", align_corners=False)
        dec = torch.relu(dec)
        return StudentOutput(logits=self.classifier(dec), low=features[0], dec=dec)


# How each student class folds; a class not listed is exported as it is.
FOLDERS: dict[type[nn.Module], Callable[[nn.Module], nn.Module]] = {SegFormer: FoldedSegFormer}


@torch.no_grad()
def inference_form(student: nn.Module) -> nn.Module:
    """``student`` (trained, any mode) as the module export traces: folded where it can be."""
    folder = FOLDERS.get(type(student))
    if folder is None:
        return student.eval()
    return folder(student.eval()).eval()
