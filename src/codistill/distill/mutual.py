"""The baselines: Deep Mutual Learning and KDCL's MinLogit ensemble teacher."""

from __future__ import annotations

import torch
from torch import nn

from codistill.config import DistillConfig
from codistill.distill.pair import StudentPair, kl_map
from codistill.distill.registry import register_term


class DeepMutualLearning(nn.Module):
    """Each student adds T² · KL(sg(p_other) ‖ p_self) at every labelled pixel."""

    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, pair: StudentPair) -> torch.Tensor:
        """The DML loss of one batch, averaged over |Ω|."""
        t = self.temperature
        both = kl_map(pair.vit_logits, pair.cnn_logits, t) + kl_map(
            pair.cnn_logits, pair.vit_logits, t
        )
        return t * t * (both * pair.valid).sum() / pair.valid_count()


def min_logit_teacher(pair: StudentPair) -> torch.Tensor:
    """KDCL MinLogit: shift each student's logits so the true class is 0; take the minimum."""
    index = pair.safe_labels[:, None].long()
    cnn = pair.cnn_logits - pair.cnn_logits.gather(1, index)
    vit = pair.vit_logits - pair.vit_logits.gather(1, index)
    return torch.minimum(cnn, vit)


class KnowledgeDistillationCollaborative(nn.Module):
    """Both students distil T² · KL(sg(softmax(z_min)) ‖ p_self) at every labelled pixel."""

    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, pair: StudentPair) -> torch.Tensor:
        """The KDCL loss of one batch, averaged over |Ω|."""
        t = self.temperature
        teacher = min_logit_teacher(pair)
        both = kl_map(teacher, pair.cnn_logits, t) + kl_map(teacher, pair.vit_logits, t)
        return t * t * (both * pair.valid).sum() / pair.valid_count()


@register_term("dml")
def _build_dml(cfg: DistillConfig, channels: dict[str, int]) -> nn.Module:
    return DeepMutualLearning(cfg.dml.temperature)


@register_term("kdcl")
def _build_kdcl(cfg: DistillConfig, channels: dict[str, int]) -> nn.Module:
    return KnowledgeDistillationCollaborative(cfg.kdcl.temperature)
