"""The co-training objective: supervision plus the configured distillation terms."""

from __future__ import annotations

import torch
from torch import nn

from codistill.config import ROLES, DistillConfig, TrainConfig, active_terms, directional_shares
from codistill.distill.pair import StudentPair
from codistill.distill.registry import build_term
from codistill.distill.supervised import supervised_loss

# Which way the selective terms sent knowledge: the share of their units (windows, pixels)
# where each student taught, as ``<term>_<student>_teaches``.
DIRECTION_SHARES = directional_shares(ROLES)


def warmup_factor(iteration: int, warmup_iters: int) -> float:
    """Linear ramp of the distillation weights from 0 at iteration 0 to 1 at ``warmup_iters``."""
    return 1.0 if warmup_iters == 0 else min(1.0, iteration / warmup_iters)


class CoDistillationObjective(nn.Module):
    """L = L_sup + ramp · Σ λ_t · L_t over the active terms; holds the terms' adapters.

    ``class_weights`` (one per class) weigh the supervised CE only; the distillation terms
    see the plain per-pixel CE.
    """

    def __init__(
        self,
        train: TrainConfig,
        distill: DistillConfig,
        channels: dict[str, int],
        class_weights: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        # Derived from the data each run, so not part of a checkpoint.
        self.register_buffer("class_weights", class_weights, persistent=False)
        self.names = active_terms(train.method, train.switches())
        self.terms = nn.ModuleDict({n: build_term(n, distill, channels) for n in self.names})
        self.weights = {n: distill.weights[n] for n in self.names}
        self.warmup_iters = distill.warmup_iters

    def forward(self, pair: StudentPair, iteration: int) -> tuple[torch.Tensor, dict]:
        """Total loss, and each unweighted term and direction share (detached) for logging."""
        sup = supervised_loss(pair, self.class_weights)
        parts = {"sup": sup.detach()}
        total = sup
        ramp = warmup_factor(iteration, self.warmup_iters)
        for name, term in self.terms.items():
            value = term(pair)
            parts[name] = value.detach()
            for key, share in getattr(term, "diagnostics", {}).items():
                parts[f"{name}_{key}"] = share.detach()
            total = total + ramp * self.weights[name] * value
        parts["total"] = total.detach()
        return total, parts

    def owned_parameters(self, owner: str) -> list[nn.Parameter]:
        """Adapter parameters owned by ``owner`` (``cnn`` or ``vit``), for its optimizer."""
        return [
            p
            for term in self.terms.values()
            if hasattr(term, "adapters")
            for p in term.adapters[owner].parameters()
        ]
