"""What every distillation term reads: both students' outputs for one batch, and the labels."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import nn

from codistill.data.spec import IGNORE_INDEX
from codistill.models.output import StudentOutput, upsample_logits


@dataclass
class StudentPair:
    """Both students' outputs on the same batch, with shared quantities computed once.

    ``cnn_model`` and ``vit_model`` are needed only by terms that run a student again
    (HFD's crossfeed mode).
    """

    cnn: StudentOutput
    vit: StudentOutput
    labels: torch.Tensor
    cnn_model: nn.Module | None = field(default=None, repr=False)
    vit_model: nn.Module | None = field(default=None, repr=False)

    @cached_property
    def valid(self) -> torch.Tensor:
        """N×H×W boolean map of labelled pixels (Ω)."""
        return self.labels != IGNORE_INDEX

    @cached_property
    def safe_labels(self) -> torch.Tensor:
        """Labels with ignored pixels set to class 0, for gathers (always masked by ``valid``)."""
        return torch.where(self.valid, self.labels, torch.zeros_like(self.labels))

    @cached_property
    def cnn_logits(self) -> torch.Tensor:
        """CNN logits at label resolution (N×K×H×W)."""
        return upsample_logits(self.cnn.logits, self.labels.shape[-2:]).float()

    @cached_property
    def vit_logits(self) -> torch.Tensor:
        """ViT logits at label resolution (N×K×H×W)."""
        return upsample_logits(self.vit.logits, self.labels.shape[-2:]).float()

    @cached_property
    def cnn_ce(self) -> torch.Tensor:
        """Per-pixel cross-entropy of the CNN (0 at ignored pixels), N×H×W."""
        return F.cross_entropy(
            self.cnn_logits, self.labels, ignore_index=IGNORE_INDEX, reduction="none"
        )

    @cached_property
    def vit_ce(self) -> torch.Tensor:
        """Per-pixel cross-entropy of the ViT (0 at ignored pixels), N×H×W."""
        return F.cross_entropy(
            self.vit_logits, self.labels, ignore_index=IGNORE_INDEX, reduction="none"
        )

    def valid_count(self) -> torch.Tensor:
        """|Ω|, at least 1 so that a batch without labels gives zero losses, not NaN."""
        return self.valid.sum().clamp(min=1)


def channel_norm(feature: torch.Tensor) -> torch.Tensor:
    """Per-position layer norm over channels (no affine): N×C×H×W to unit scale per pixel."""
    return F.layer_norm(feature.permute(0, 2, 3, 1), feature.shape[1:2]).permute(0, 3, 1, 2)


def resize_to(feature: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize a feature map to ``size`` if it differs."""
    if feature.shape[-2:] == tuple(size):
        return feature
    return F.interpolate(feature, size=size, mode="bilinear", align_corners=False)


def kl_map(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Per-pixel KL(softmax(t/T) ‖ softmax(s/T)), N×H×W; the teacher side is detached."""
    teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    student = F.log_softmax(student_logits / temperature, dim=1)
    return (teacher.exp() * (teacher - student)).sum(dim=1)
