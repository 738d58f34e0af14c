"""Both students and the co-distillation objective as one trainable module."""

from __future__ import annotations

import torch
from torch import nn

from codistill.config import Params
from codistill.distill.objective import CoDistillationObjective
from codistill.distill.pair import StudentPair
from codistill.models import build_student


class CoTrainingModel(nn.Module):
    """Both students and the objective (with its adapters) as one module."""

    def __init__(self, cnn: nn.Module, vit: nn.Module, objective: CoDistillationObjective):
        super().__init__()
        self.cnn, self.vit, self.objective = cnn, vit, objective

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor, iteration: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and its parts for one batch."""
        pair = StudentPair(self.cnn(images), self.vit(images), labels, self.cnn, self.vit)
        return self.objective(pair, iteration)


def build_pair_model(
    params: Params, num_classes: int, ce_weights: torch.Tensor | None = None
) -> CoTrainingModel:
    """Both students from ``params.models`` and the objective that ``params.train`` selects."""
    cnn = build_student(params.models.cnn, num_classes)
    vit = build_student(params.models.vit, num_classes)
    channels = {
        "cnn_low": cnn.low_channels,
        "vit_low": vit.low_channels,
        "cnn_dec": cnn.dec_channels,
        "vit_dec": vit.dec_channels,
    }
    objective = CoDistillationObjective(params.train, params.distill, channels, ce_weights)
    return CoTrainingModel(cnn, vit, objective)
