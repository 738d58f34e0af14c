"""Student architectures registered by name, and the one function that builds a student."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from codistill.config import ConfigError, StudentConfig

_ARCHITECTURES: dict[str, Callable[[StudentConfig, int], nn.Module]] = {}


def register_architecture(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator that makes a student architecture buildable by ``name``."""

    def add(cls: type[nn.Module]) -> type[nn.Module]:
        _ARCHITECTURES[name] = cls
        return cls

    return add


def list_architectures() -> list[str]:
    """Names of the registered student architectures."""
    return sorted(_ARCHITECTURES)


def build_student(cfg: StudentConfig, num_classes: int) -> nn.Module:
    """Build the student that ``cfg`` describes, with ``num_classes`` output classes."""
    if cfg.arch not in _ARCHITECTURES:
        raise ConfigError(
            f"arch: unknown architecture {cfg.arch!r} (known: {', '.join(list_architectures())})"
        )
    return _ARCHITECTURES[cfg.arch](cfg, num_classes)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
