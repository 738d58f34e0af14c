"""Hand-made and seeded StudentPairs for the loss tests."""

from __future__ import annotations

import torch

from codistill.distill import StudentPair
from codistill.models import StudentOutput

CHANNELS = {"cnn_low": 6, "vit_low": 4, "cnn_dec": 8, "vit_dec": 5}


def pair_from_logits(
    cnn_logits: torch.Tensor, vit_logits: torch.Tensor, labels: torch.Tensor
) -> StudentPair:
    """A pair whose logits are given at label resolution; features are constant."""
    n, _, h, w = cnn_logits.shape

    def output(logits: torch.Tensor, low: int, dec: int) -> StudentOutput:
        return StudentOutput(logits, torch.ones(n, low, h, w), torch.ones(n, dec, h, w))

    return StudentPair(
        output(cnn_logits, CHANNELS["cnn_low"], CHANNELS["cnn_dec"]),
        output(vit_logits, CHANNELS["vit_low"], CHANNELS["vit_dec"]),
        labels,
    )


def seeded_pair(seed: int = 0, requires_grad: bool = False) -> StudentPair:
    """Random outputs at 1/4 of a 32×48 label map with some ignored pixels."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).requires_grad_(requires_grad)

    labels = torch.randint(0, 5, (2, 32, 48), generator=g)
    labels[:, :3] = 255
    labels[1, :, :7] = 255
    cnn = StudentOutput(rand(2, 5, 8, 12) * 2, rand(2, 6, 8, 12) * 3, rand(2, 8, 8, 12))
    vit = StudentOutput(rand(2, 5, 8, 12) * 2, rand(2, 4, 8, 12) * 0.1, rand(2, 5, 8, 12))
    return StudentPair(cnn, vit, labels)
