"""The supervised term: cross-entropy of both students against the labels."""

from __future__ import annotations

import torch

from codistill.distill.pair import StudentPair


def supervised_loss(pair: StudentPair) -> torch.Tensor:
    """CE(z_cnn, y) + CE(z_vit, y), each averaged over the labelled pixels."""
    return (pair.cnn_ce.sum() + pair.vit_ce.sum()) / pair.valid_count()
