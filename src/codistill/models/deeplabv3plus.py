"""DeepLabV3+: ASPP over the deepest feature, fused with a reduced stride-4 feature."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from codistill.config import StudentConfig
from codistill.models.blocks import conv_bn_relu
from codistill.models.output import StudentOutput
from codistill.models.registry import register_architecture
from codistill.models.student import SegmentationStudent


class ImagePooling(nn.Module):
    """ASPP's global branch: average pool, 1×1 conv, ReLU, broadcast back.

    It has no batch norm, so that a training batch of one image still works.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool ``x`` globally and expand the result to its spatial size."""
        pooled = self.project(F.adaptive_avg_pool2d(x, 1))
        return pooled.expand(-1, -1, x.shape[2], x.shape[3])


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1×1, dilated 3×3 branches and image pooling, fused."""

    def __init__(self, in_channels: int, out_channels: int, rates: tuple[int, ...]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [conv_bn_relu(in_channels, out_channels)]
            + [conv_bn_relu(in_channels, out_channels, 3, dilation=r) for r in rates]
            + [ImagePooling(in_channels, out_channels)]
        )
        self.fuse = nn.Sequential(
            conv_bn_relu(out_channels * len(self.branches), out_channels), nn.Dropout(0.1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply every branch to ``x`` and fuse them."""
        return self.fuse(torch.cat([branch(x) for branch in self.branches], dim=1))


@register_architecture("deeplabv3plus")
class DeepLabV3Plus(SegmentationStudent):
    """DeepLabV3+ student on any timm ``features_only`` encoder."""

    def __init__(self, cfg: StudentConfig, num_classes: int) -> None:
        super().__init__(cfg)
        width = cfg.decoder_channels
        self.aspp = ASPP(self.encoder_channels[-1], width, cfg.aspp_rates)
        self.reduce_low = conv_bn_relu(self.low_channels, cfg.low_level_channels)
        self.decoder = nn.Sequential(
            conv_bn_relu(width + cfg.low_level_channels, width, 3),
            conv_bn_relu(width, width, 3),
        )
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def decode(self, features: list[torch.Tensor]) -> StudentOutput:
        """Head over the encoder's feature list."""
        low = features[self.low_index]
        context = F.interpolate(
            self.aspp(features[-1]), size=low.shape[2:], mode="bilinear", align_corners=False
        )
        dec = self.decoder(torch.cat([context, self.reduce_low(low)], dim=1))
        return StudentOutput(logits=self.classifier(dec), low=low, dec=dec)
