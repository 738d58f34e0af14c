"""The loss module of each declared term: a factory per name of ``codistill.config.TERMS``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from codistill.config import TERM_NAMES

# A factory gets the term's own section of ``distill`` and the students' channel counts.
TermFactory = Callable[[Any, dict[str, int]], nn.Module]
_FACTORIES: dict[str, TermFactory] = {}


def register_term(name: str) -> Callable[[TermFactory], TermFactory]:
    """Bind the loss-module factory of the declared term ``name``."""
    if name not in TERM_NAMES:
        raise ValueError(f"{name!r} is not a declared term ({', '.join(TERM_NAMES)})")

    def add(factory: TermFactory) -> TermFactory:
        _FACTORIES[name] = factory
        return factory

    return add


def build_term(name: str, distill: Any, channels: dict[str, int]) -> nn.Module:
    """Build term ``name`` from its section of ``distill`` (a ``DistillConfig``).

    ``channels`` holds cnn_low, vit_low, cnn_dec and vit_dec.
    """
    if name not in _FACTORIES:
        known = ", ".join(list_terms())
        raise KeyError(f"no loss module for distillation term {name!r} (built: {known})")
    return _FACTORIES[name](getattr(distill, name), channels)


def list_terms() -> list[str]:
    """Names of the terms that have a loss module, in the registry's order."""
    return [name for name in TERM_NAMES if name in _FACTORIES]
