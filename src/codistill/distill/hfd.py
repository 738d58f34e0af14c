"""HFD: heterogeneous feature distillation between the two students' stage-1 features."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from codistill.config import HFDConfig
from codistill.data.spec import IGNORE_INDEX
from codistill.distill.adapters import adapter_pair
from codistill.distill.pair import StudentPair, normalized_rows, resize_to
from codistill.distill.registry import register_term
from codistill.models.output import upsample_logits


@contextlib.contextmanager
def running_stats_kept(model: nn.Module) -> Iterator[None]:
    """Keep ``model``'s batch-norm running statistics unchanged inside the block.

    The crossfeed path is training-only: batches of the other student's adapted features
    must not leak into the statistics the deployed student evaluates with. A zero momentum
    makes the kernel's own update a no-op; restoring the tensors afterwards instead would
    break autograd, which saves them for the backward pass.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [
        (m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
        for m in norms
    ]
    for norm in norms:
        norm.momentum = 0.0
    try:
        yield
    finally:
        for norm, (momentum, count) in zip(norms, saved, strict=True):
            norm.momentum = momentum
            if count is not None:
                norm.num_batches_tracked.copy_(count)


class HeterogeneousFeatureDistillation(nn.Module):
    """``mimic``: each student's adapted low feature regresses the other's normalized one.

    ``crossfeed``: each student's adapted low feature runs through the *other* student's
    later stages and head, and that path is supervised by the labels.
    """

    def __init__(self, mode: str, cnn_low: int, vit_low: int) -> None:
        super().__init__()
        self.mode = mode
        self.adapters = adapter_pair(cnn_low, vit_low)

    def forward(self, pair: StudentPair) -> torch.Tensor:
        """The HFD loss of one batch."""
        cnn_low, vit_low = pair.cnn.low, pair.vit.low
        if self.mode == "mimic":
            cnn_as_vit = self.adapters["cnn"].rows(cnn_low)
            vit_as_cnn = self.adapters["vit"].rows(vit_low)
            vit_target = normalized_rows(resize_to(vit_low.detach(), cnn_low.shape[-2:]))
            cnn_target = normalized_rows(resize_to(cnn_low.detach(), vit_low.shape[-2:]))
            return F.mse_loss(cnn_as_vit.float(), vit_target.float()) + F.mse_loss(
                vit_as_cnn.float(), cnn_target.float()
            )
        cnn_as_vit = self.adapters["cnn"](cnn_low)
        vit_as_cnn = self.adapters["vit"](vit_low)
        if pair.cnn_model is None or pair.vit_model is None:
            raise ValueError("HFD crossfeed needs both student models in the StudentPair")
        with running_stats_kept(pair.vit_model), running_stats_kept(pair.cnn_model):
            through_vit = pair.vit_model.forward_from_low(resize_to(cnn_as_vit, vit_low.shape[-2:]))
            through_cnn = pair.cnn_model.forward_from_low(resize_to(vit_as_cnn, cnn_low.shape[-2:]))
        size = pair.labels.shape[-2:]
        return sum(
            F.cross_entropy(
                upsample_logits(out.logits.float(), size),
                pair.labels,
                ignore_index=IGNORE_INDEX,
                reduction="sum",
            )
            / pair.valid_count()
            for out in (through_vit, through_cnn)
        )


@register_term("hfd")
def _build(options: HFDConfig, channels: dict[str, int]) -> nn.Module:
    return HeterogeneousFeatureDistillation(options.mode, channels["cnn_low"], channels["vit_low"])
