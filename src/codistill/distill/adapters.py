"""Loss-only adapters: 1×1 conv + BN maps, owned by the student whose feature they read."""

from __future__ import annotations

from torch import nn


def feature_adapter(in_channels: int, out_channels: int) -> nn.Sequential:
    """A 1×1 convolution and batch norm from one student's channels to the other's."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
    )


def adapter_pair(cnn_channels: int, vit_channels: int) -> nn.ModuleDict:
    """Adapters keyed by owner: ``cnn`` maps CNN→ViT channels, ``vit`` maps ViT→CNN."""
    return nn.ModuleDict(
        {
            "cnn": feature_adapter(cnn_channels, vit_channels),
            "vit": feature_adapter(vit_channels, cnn_channels),
        }
    )
