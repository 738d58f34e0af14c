"""Distillation terms registered by name: each is a module mapping a StudentPair to a loss."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from codistill.config import DistillConfig

TermFactory = Callable[[DistillConfig, dict[str, int]], nn.Module]
_TERMS: dict[str, TermFactory] = {}


def register_term(name: str) -> Callable[[TermFactory], TermFactory]:
    """Make a term buildable by ``name``; the factory gets the config and channel counts."""

    def add(factory: TermFactory) -> TermFactory:
        _TERMS[name] = factory
        return factory

    return add


def build_term(name: str, cfg: DistillConfig, channels: dict[str, int]) -> nn.Module:
    """Build term ``name``; ``channels`` holds cnn_low, vit_low, cnn_dec and vit_dec."""
    if name not in _TERMS:
        raise KeyError(f"unknown distillation term {name!r} (known: {', '.join(sorted(_TERMS))})")
    return _TERMS[name](cfg, channels)


def list_terms() -> list[str]:
    """Names of the registered terms."""
    return sorted(_TERMS)
