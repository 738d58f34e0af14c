"""The baselines: Deep Mutual Learning and KDCL's MinLogit ensemble teacher."""

from __future__ import annotations

import torch
from torch import nn

from codistill.config import TemperatureConfig
from codistill.distill.pair import StudentPair, kl_map
from codistill.distill.registry import register_term


class DenseDistillation(nn.Module):
    """T² · Σ_Ω [KL(sg(q_cnn) ‖ p_cnn) + KL(sg(q_vit) ‖ p_vit)] / |Ω| for per-pixel teachers q."""

    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature

    def teachers(self, pair: StudentPair) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher logits for the CNN and for the ViT (detached inside ``kl_map``)."""
        raise NotImplementedError

    def forward(self, pair: StudentPair) -> torch.Tensor:
        """The loss of one batch, averaged over |Ω|."""
        t = self.temperature
        for_cnn, for_vit = self.teachers(pair)
        both = kl_map(for_cnn, pair.cnn_logits, t) + kl_map(for_vit, pair.vit_logits, t)
        return t * t * (both * pair.valid).sum() / pair.valid_count()


class DeepMutualLearning(DenseDistillation):
    """DML: each student's teacher is the other student, at every labelled pixel."""

    def teachers(self, pair: StudentPair) -> tuple[torch.Tensor, torch.Tensor]:
        """The ViT teaches the CNN and the CNN teaches the ViT."""
        return pair.vit_logits, pair.cnn_logits


def min_logit_teacher(pair: StudentPair) -> torch.Tensor:
    """KDCL MinLogit: shift each student's logits so the true class is 0; take the minimum."""
    index = pair.safe_labels[:, None].long()
    cnn = pair.cnn_logits - pair.cnn_logits.gather(1, index)
    vit = pair.vit_logits - pair.vit_logits.gather(1, index)
    return torch.minimum(cnn, vit)


class KnowledgeDistillationCollaborative(DenseDistillation):
    """KDCL: both students distil the MinLogit ensemble at every labelled pixel."""

    def teachers(self, pair: StudentPair) -> tuple[torch.Tensor, torch.Tensor]:
        """The MinLogit ensemble teaches both students."""
        teacher = min_logit_teacher(pair)
        return teacher, teacher


@register_term("dml")
def _build_dml(options: TemperatureConfig, channels: dict[str, int]) -> nn.Module:
    return DeepMutualLearning(options.temperature)


@register_term("kdcl")
def _build_kdcl(options: TemperatureConfig, channels: dict[str, int]) -> nn.Module:
    return KnowledgeDistillationCollaborative(options.temperature)
