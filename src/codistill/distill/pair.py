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
        """CNN logits at label resolution (N×K×H×W), float32 under any autocast."""
        return upsample_logits(self.cnn.logits.float(), self.labels.shape[-2:])

    @cached_property
    def vit_logits(self) -> torch.Tensor:
        """ViT logits at label resolution (N×K×H×W), float32 under any autocast."""
        return upsample_logits(self.vit.logits.float(), self.labels.shape[-2:])

    @cached_property
    def cnn_log_probs(self) -> torch.Tensor:
        """Log-softmax of the CNN logits over the classes (N×K×H×W), shared by all terms."""
        return F.log_softmax(self.cnn_logits, dim=1)

    @cached_property
    def vit_log_probs(self) -> torch.Tensor:
        """Log-softmax of the ViT logits over the classes (N×K×H×W), shared by all terms."""
        return F.log_softmax(self.vit_logits, dim=1)

    @cached_property
    def cnn_ce(self) -> torch.Tensor:
        """Per-pixel cross-entropy of the CNN (0 at ignored pixels), N×H×W."""
        return F.nll_loss(
            self.cnn_log_probs, self.labels, ignore_index=IGNORE_INDEX, reduction="none"
        )

    @cached_property
    def vit_ce(self) -> torch.Tensor:
        """Per-pixel cross-entropy of the ViT (0 at ignored pixels), N×H×W."""
        return F.nll_loss(
            self.vit_log_probs, self.labels, ignore_index=IGNORE_INDEX, reduction="none"
        )

    def log_probs(self, student: str, temperature: float) -> torch.Tensor:
        """Log softmax(z / T) of ``student`` (``cnn`` or ``vit``); T = 1 reuses the cached one."""
        if temperature == 1.0:
            return getattr(self, f"{student}_log_probs")
        return F.log_softmax(getattr(self, f"{student}_logits") / temperature, dim=1)

    def valid_count(self) -> torch.Tensor:
        """|Ω|, at least 1 so that a batch without labels gives zero losses, not NaN."""
        return self.valid.sum().clamp(min=1)


def channel_rows(feature: torch.Tensor) -> torch.Tensor:
    """An N×C×H×W feature as an (N·H·W)×C matrix, one row per position (free if channels-last)."""
    return feature.permute(0, 2, 3, 1).reshape(-1, feature.shape[1])


def normalized_rows(feature: torch.Tensor) -> torch.Tensor:
    """Per-position layer norm over channels (no affine), as ``channel_rows`` of unit scale."""
    return F.layer_norm(channel_rows(feature), feature.shape[1:2])


def resize_to(feature: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize a feature map to ``size`` if it differs."""
    if feature.shape[-2:] == tuple(size):
        return feature
    return F.interpolate(feature, size=size, mode="bilinear", align_corners=False)


def kl_between(teacher_log_probs: torch.Tensor, student_log_probs: torch.Tensor) -> torch.Tensor:
    """Per-pixel KL(p_teacher ‖ p_student) from log-probabilities over dim 1, N×H×W.

    The teacher side is detached.
    """
    teacher = teacher_log_probs.detach()
    return (teacher.exp() * (teacher - student_log_probs)).sum(dim=1)


def kl_map(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Per-pixel KL(softmax(t/T) ‖ softmax(s/T)), N×H×W; the teacher side is detached."""
    teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    return kl_between(teacher, F.log_softmax(student_logits / temperature, dim=1))
