"""SegFormer-style student: a hierarchical encoder and an all-MLP decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from codistill.config import StudentConfig
from codistill.models.blocks import conv_bn_relu
from codistill.models.output import StudentOutput
from codistill.models.registry import register_architecture
from codistill.models.student import SegmentationStudent


@register_architecture("segformer")
class SegFormer(SegmentationStudent):
    """Each stage is projected linearly, upsampled to the finest stage, concatenated and fused."""

    def __init__(self, cfg: StudentConfig, num_classes: int) -> None:
        super().__init__(cfg)
        width = cfg.decoder_channels
        # Stages finer than stride 4 (some CNN encoders have one) are not decoded.
        stages = self.encoder_channels[self.low_index :]
        self.project = nn.ModuleList(nn.Conv2d(c, width, 1) for c in stages)
        self.fuse = conv_bn_relu(width * len(self.project), width)
        self.dropout = nn.Dropout(0.1)
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def decode(self, features: list[torch.Tensor]) -> StudentOutput:
        """All-MLP head over the encoder's feature list."""
        features = features[self.low_index :]
        size = features[0].shape[2:]
        projected = [
            F.interpolate(proj(f), size=size, mode="bilinear", align_corners=False)
            if f.shape[2:] != size
            else proj(f)
            for proj, f in zip(self.project, features, strict=True)
        ]
        dec = self.fuse(torch.cat(projected, dim=1))
        return StudentOutput(logits=self.classifier(self.dropout(dec)), low=features[0], dec=dec)
