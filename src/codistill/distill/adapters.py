"""Loss-only adapters: 1×1 conv + BN maps, owned by the student whose feature they read."""

from __future__ import annotations

import torch
from torch import nn


class FeatureAdapter(nn.Module):
    """A 1×1 convolution and batch norm from one student's channels to the other's.

    The convolution runs in the input's layout (channels-last from the students); the norm
    runs NCHW-contiguous, because on CPU batch-norm backward over channels-last tensors costs
    about twice as much, and the adapters see full stride-4 maps.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """Map ``feature`` (N×C_in×H×W) to the other student's channel count."""
        return self.norm(self.conv(feature).contiguous())


def adapter_pair(cnn_channels: int, vit_channels: int) -> nn.ModuleDict:
    """Adapters keyed by owner: ``cnn`` maps CNN→ViT channels, ``vit`` maps ViT→CNN."""
    return nn.ModuleDict(
        {
            "cnn": FeatureAdapter(cnn_channels, vit_channels),
            "vit": FeatureAdapter(vit_channels, cnn_channels),
        }
    )
