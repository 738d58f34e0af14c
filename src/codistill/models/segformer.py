"""SegFormer-style student: a hierarchical encoder and an all-MLP decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from codistill.config import StudentConfig
from codistill.models.blocks import conv_bn_relu
from codistill.models.encoders import create_encoder, features_from, finest_feature_index
from codistill.models.output import StudentOutput
from codistill.models.registry import register_architecture


@register_architecture("segformer")
class SegFormer(nn.Module):
    """Each stage is projected linearly, upsampled to the finest stage, concatenated and fused."""

    def __init__(self, cfg: StudentConfig, num_classes: int) -> None:
        super().__init__()
        self.encoder = create_encoder(cfg)
        channels = self.encoder.feature_info.channels()
        # Stages finer than stride 4 (some CNN encoders have one) are not decoded.
        self.low_index = finest_feature_index(self.encoder.feature_info.reduction())
        width = cfg.decoder_channels
        self.low_channels = channels[self.low_index]
        self.dec_channels = width
        self.project = nn.ModuleList(nn.Conv2d(c, width, 1) for c in channels[self.low_index :])
        self.fuse = conv_bn_relu(width * len(self.project), width)
        self.dropout = nn.Dropout(0.1)
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, image: torch.Tensor) -> StudentOutput:
        """Segment ``image`` (N×3×H×W); outputs are at the first decoded stage's stride."""
        return self.decode(self.encoder(image))

    def forward_from_low(self, low: torch.Tensor) -> StudentOutput:
        """Run the rest of the encoder and the head from a stage-1 feature ``low``."""
        return self.decode(features_from(self.encoder, self.low_index, low))

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
