"""Typed configuration: ``params.yaml`` parsed once into validated dataclasses."""

from codistill.config.loader import ConfigError, from_mapping
from codistill.config.schema import (
    ClassShareBounds,
    DataConfig,
    ModelsConfig,
    Params,
    PrepareConfig,
    StudentConfig,
    ValidateConfig,
    load_params,
)

__all__ = [
    "ClassShareBounds",
    "ConfigError",
    "DataConfig",
    "ModelsConfig",
    "Params",
    "PrepareConfig",
    "StudentConfig",
    "ValidateConfig",
    "from_mapping",
    "load_params",
]
