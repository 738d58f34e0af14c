"""Loss-only adapters: 1×1 conv + BN maps, owned by the student whose feature they read."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from codistill.distill.pair import channel_rows


class FeatureAdapter(nn.Module):
    """A 1×1 convolution and batch norm from one student's channels to the other's.

    The adapters see full stride-4 maps, so they work on position rows: the convolution is
    one matrix product and the norm one pass over contiguous rows (same statistics as a 2-D
    batch norm over N, H and W), and the losses compare rows without changing the layout.
    On CPU this halves the cost of an NCHW convolution and norm. The weights keep the
    ``Conv2d`` and batch-norm layout of the checkpoints.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.norm = nn.BatchNorm1d(out_channels)

    def rows(self, feature: torch.Tensor) -> torch.Tensor:
        """Map ``feature`` (N×C_in×H×W) to (N·H·W)×C_out rows in the other student's channels."""
        return self.norm(F.linear(channel_rows(feature), self.conv.weight.flatten(1)))

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """Map ``feature`` (N×C_in×H×W) to N×C_out×H×W (a channels-last view of the rows)."""
        batch, _, height, width = feature.shape
        return self.rows(feature).view(batch, height, width, -1).permute(0, 3, 1, 2)


def adapter_pair(cnn_channels: int, vit_channels: int) -> nn.ModuleDict:
    """Adapters keyed by owner: ``cnn`` maps CNN→ViT channels, ``vit`` maps ViT→CNN."""
    return nn.ModuleDict(
        {
            "cnn": FeatureAdapter(cnn_channels, vit_channels),
            "vit": FeatureAdapter(vit_channels, cnn_channels),
        }
    )
