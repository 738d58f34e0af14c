"""Pixel-wise BSD: a pixel's prediction flows only from the student that is reliable there."""

from __future__ import annotations

import torch
from torch import nn

from codistill.config import PixelBSDConfig
from codistill.distill.pair import StudentPair, kl_between
from codistill.distill.registry import register_term


def select_pixels(pair: StudentPair, rule: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean N×H×W maps (cnn teaches, vit teaches) under ``rule``; never at ignored pixels.

    ``correct_only``: the teacher is right and the learner wrong.
    ``correct_or_more_confident``: that, or both right and the teacher gives the true class
    the higher probability. ``lower_ce``: the teacher has the lower per-pixel CE.
    """
    if rule == "lower_ce":
        return (pair.valid & (pair.cnn_ce < pair.vit_ce), pair.valid & (pair.vit_ce < pair.cnn_ce))
    cnn_right = pair.valid & (pair.cnn_logits.argmax(dim=1) == pair.labels)
    vit_right = pair.valid & (pair.vit_logits.argmax(dim=1) == pair.labels)
    cnn_teaches = cnn_right & ~vit_right
    vit_teaches = vit_right & ~cnn_right
    if rule == "correct_or_more_confident":
        # A higher true-class probability is a lower per-pixel CE (-log p of the label).
        both = cnn_right & vit_right
        cnn_teaches = cnn_teaches | (both & (pair.cnn_ce < pair.vit_ce))
        vit_teaches = vit_teaches | (both & (pair.vit_ce < pair.cnn_ce))
    return cnn_teaches, vit_teaches


class PixelSelectiveDistillation(nn.Module):
    """T² · KL(sg(p_teacher) ‖ p_learner) over the selected pixels, divided by |Ω|.

    After each call, ``diagnostics`` holds the share of valid pixels each student taught.
    """

    def __init__(self, rule: str, temperature: float) -> None:
        super().__init__()
        self.rule = rule
        self.temperature = temperature
        self.diagnostics: dict[str, torch.Tensor] = {}

    def forward(self, pair: StudentPair) -> torch.Tensor:
        """The pixel-wise BSD loss of one batch."""
        cnn_teaches, vit_teaches = select_pixels(pair, self.rule)
        self.diagnostics = {
            "cnn_teaches": cnn_teaches.sum() / pair.valid_count(),
            "vit_teaches": vit_teaches.sum() / pair.valid_count(),
        }
        t = self.temperature
        cnn, vit = pair.log_probs("cnn", t), pair.log_probs("vit", t)
        to_vit = kl_between(cnn, vit) * cnn_teaches
        to_cnn = kl_between(vit, cnn) * vit_teaches
        return t * t * (to_vit.sum() + to_cnn.sum()) / pair.valid_count()


@register_term("pbsd")
def _build(options: PixelBSDConfig, channels: dict[str, int]) -> nn.Module:
    return PixelSelectiveDistillation(options.rule, options.temperature)
