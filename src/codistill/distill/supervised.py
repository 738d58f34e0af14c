"""The supervised term: cross-entropy of both students against the labels."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from codistill.distill.pair import StudentPair


def class_weights(pixel_counts: Sequence[int], power: float) -> torch.Tensor:
    """Per-class CE weights (median share / class share) ** ``power``.

    ``power`` 0 weighs every class alike, 1 is median-frequency balancing, 0.5 its square
    root. A class with no labelled pixel gets the largest weight of the others.
    """
    counts = torch.tensor(pixel_counts, dtype=torch.float64)
    seen = counts > 0
    if not seen.any():
        raise ValueError("class weights need at least one labelled pixel")
    weights = torch.ones_like(counts)
    weights[seen] = (counts[seen].quantile(0.5) / counts[seen]) ** power
    weights[~seen] = weights[seen].max()
    return weights.float()


def supervised_loss(pair: StudentPair, weights: torch.Tensor | None = None) -> torch.Tensor:
    """CE(z_cnn, y) + CE(z_vit, y), each a (class-weighted) mean over the labelled pixels."""
    if weights is None:
        return (pair.cnn_ce.sum() + pair.vit_ce.sum()) / pair.valid_count()
    pixel_weights = weights[pair.safe_labels] * pair.valid
    total = pixel_weights.sum().clamp(min=1e-12)
    return ((pair.cnn_ce + pair.vit_ce) * pixel_weights).sum() / total
