"""Region-wise BSD: per window, the more reliable student's decoder feature teaches the other."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from codistill.config import RegionBSDConfig
from codistill.distill.adapters import adapter_pair
from codistill.distill.pair import StudentPair, normalized_rows, resize_to
from codistill.distill.registry import register_term


def _window_mean(values: torch.Tensor, weights: torch.Tensor, window: int) -> torch.Tensor:
    """Weighted mean of N×1×h×w ``values`` over window×window cells (partial edge windows)."""
    numerator = F.avg_pool2d(values * weights, window, window, ceil_mode=True)
    denominator = F.avg_pool2d(weights, window, window, ceil_mode=True)
    return numerator / denominator.clamp(min=1e-12)


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(dim=1, keepdim=True)


def _to_grid(window_map: torch.Tensor, window: int, size: torch.Size) -> torch.Tensor:
    """Expand a per-window map back onto the h×w decoder grid."""
    expanded = window_map.repeat_interleave(window, dim=2).repeat_interleave(window, dim=3)
    return expanded[..., : size[0], : size[1]]


def _row_error(adapted_rows: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-position mean squared error over channels: adapted rows against the normalized target."""
    # One fused squared-difference kernel and a channel sum; the division then runs per row.
    squared = F.mse_loss(adapted_rows.float(), normalized_rows(target).float(), reduction="none")
    return squared.sum(dim=1) / adapted_rows.shape[1]


class RegionSelectiveDistillation(nn.Module):
    """Cut the decoder grid into windows; the student with the lower score teaches there.

    After each call, ``diagnostics`` holds the share of scored windows where each student
    taught.
    """

    def __init__(self, window: int, margin: float, score: str, cnn_dec: int, vit_dec: int) -> None:
        super().__init__()
        self.window = window
        self.margin = margin
        self.score = score
        self.adapters = adapter_pair(cnn_dec, vit_dec)
        self.diagnostics: dict[str, torch.Tensor] = {}

    def window_scores(self, pair: StudentPair) -> tuple[torch.Tensor, ...]:
        """(cnn score, vit score, scored) per window, each N×1×H'×W' (lower score = better)."""
        grid = pair.cnn.dec.shape[-2:]
        if self.score == "entropy":
            cnn_entropy = _entropy(resize_to(pair.cnn.logits.float(), grid))
            vit_entropy = _entropy(resize_to(pair.vit.logits.float(), grid))
            ones = torch.ones_like(cnn_entropy)
            cnn = _window_mean(cnn_entropy, ones, self.window)
            vit = _window_mean(vit_entropy, ones, self.window)
            return cnn, vit, torch.ones_like(cnn, dtype=torch.bool)
        valid = F.adaptive_avg_pool2d(pair.valid[:, None].float(), grid)
        cnn_ce = F.adaptive_avg_pool2d(pair.cnn_ce[:, None], grid)
        vit_ce = F.adaptive_avg_pool2d(pair.vit_ce[:, None], grid)
        # Cell CE sums over the cell's valid share give the mean CE over valid pixels.
        ones = torch.ones_like(valid)
        valid_share = _window_mean(valid, ones, self.window)
        cnn = _window_mean(cnn_ce, ones, self.window) / valid_share.clamp(min=1e-12)
        vit = _window_mean(vit_ce, ones, self.window) / valid_share.clamp(min=1e-12)
        return cnn, vit, valid_share > 0

    def _select(
        self, cnn: torch.Tensor, vit: torch.Tensor, scored: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return scored & (cnn + self.margin < vit), scored & (vit + self.margin < cnn)

    def directions(self, pair: StudentPair) -> tuple[torch.Tensor, torch.Tensor]:
        """Boolean N×1×H'×W' window maps: where the CNN teaches, where the ViT teaches."""
        return self._select(*self.window_scores(pair))

    def forward(self, pair: StudentPair) -> torch.Tensor:
        """The region-wise BSD loss of one batch."""
        cnn_score, vit_score, scored = self.window_scores(pair)
        cnn_teaches, vit_teaches = self._select(cnn_score, vit_score, scored)
        windows = scored.sum().clamp(min=1)
        self.diagnostics = {
            "cnn_teaches": cnn_teaches.sum() / windows,
            "vit_teaches": vit_teaches.sum() / windows,
        }
        grid = pair.cnn.dec.shape[-2:]
        to_vit = _to_grid(cnn_teaches, self.window, grid).flatten()
        to_cnn = _to_grid(vit_teaches, self.window, grid).flatten()
        positions = _to_grid(scored, self.window, grid).sum().clamp(min=1)
        cnn_dec, vit_dec = pair.cnn.dec, resize_to(pair.vit.dec, grid)
        vit_error = _row_error(self.adapters["vit"].rows(vit_dec), cnn_dec.detach())
        cnn_error = _row_error(self.adapters["cnn"].rows(cnn_dec), vit_dec.detach())
        return ((vit_error * to_vit).sum() + (cnn_error * to_cnn).sum()) / positions


@register_term("rbsd")
def _build(options: RegionBSDConfig, channels: dict[str, int]) -> nn.Module:
    return RegionSelectiveDistillation(
        options.window, options.margin, options.score, channels["cnn_dec"], channels["vit_dec"]
    )
