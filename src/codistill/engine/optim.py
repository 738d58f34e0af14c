"""Each student's optimizer and poly learning-rate schedule, as method.md sets them."""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from codistill.config import AdamWConfig, SGDConfig


def cnn_optimizer(
    model: nn.Module, adapters: list[nn.Parameter], cfg: SGDConfig
) -> torch.optim.Optimizer:
    """SGD with momentum over the CNN and the adapters it owns."""
    return torch.optim.SGD(
        [*model.parameters(), *adapters],
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
    )


def vit_optimizer(
    model: nn.Module, adapters: list[nn.Parameter], cfg: AdamWConfig
) -> torch.optim.Optimizer:
    """AdamW: the encoder at ``lr``, the head and the ViT's adapters at ``lr·head_lr_mult``."""
    encoder = [p for n, p in model.named_parameters() if n.startswith("encoder.")]
    head = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
    return torch.optim.AdamW(
        [
            {"params": encoder, "lr": cfg.lr},
            {"params": [*head, *adapters], "lr": cfg.lr * cfg.head_lr_mult},
        ],
        weight_decay=cfg.weight_decay,
    )


def poly_schedule(
    optimizer: torch.optim.Optimizer, total_iters: int, power: float, warmup_iters: int = 0
) -> LambdaLR:
    """Scale each group's lr by (1 - it / total)^power, stepped once per iteration.

    During the first ``warmup_iters`` iterations the factor also ramps linearly from
    1 / warmup_iters to 1.
    """

    def factor(it: int) -> float:
        ramp = min(1.0, (it + 1) / warmup_iters) if warmup_iters else 1.0
        return ramp * max(0.0, 1.0 - it / total_iters) ** power

    return LambdaLR(optimizer, factor)
