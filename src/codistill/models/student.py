"""The base every student derives from: a timm encoder, a head, and the shared forward paths."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from codistill.config import StudentConfig
from codistill.models.encoders import create_encoder, features_from, finest_feature_index
from codistill.models.output import StudentOutput


class SegmentationStudent(nn.Module, ABC):
    """A ``features_only`` encoder whose finest stride-4 feature is ``low``; heads subclass it."""

    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        self.encoder = create_encoder(cfg)
        self.encoder_channels: list[int] = self.encoder.feature_info.channels()
        self.low_index = finest_feature_index(self.encoder.feature_info.reduction())
        self.low_channels = self.encoder_channels[self.low_index]
        self.dec_channels = cfg.decoder_channels

    def forward(self, image: torch.Tensor) -> StudentOutput:
        """Segment ``image`` (N×3×H×W); outputs are at the low-level feature's stride."""
        return self.decode(self.encoder(image))

    def forward_from_low(self, low: torch.Tensor) -> StudentOutput:
        """Run the rest of the encoder and the head from a stage-1 feature ``low``."""
        return self.decode(features_from(self.encoder, self.low_index, low))

    @abstractmethod
    def decode(self, features: list[torch.Tensor]) -> StudentOutput:
        """The head over the encoder's feature list."""
