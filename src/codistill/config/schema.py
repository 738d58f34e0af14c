"""The typed shape of ``params.yaml``: one dataclass per stage group."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from codistill.config.loader import ConfigError, from_mapping, load_yaml_mapping

DatasetName = Literal["camvid", "cityscapes", "voc"]


@dataclass(frozen=True)
class DataConfig:
    """Which dataset the pipeline reads."""

    dataset: DatasetName = "camvid"


@dataclass(frozen=True)
class PrepareConfig:
    """How raw images and masks are encoded into shards."""

    jpeg_quality: int = 90
    shard_mib: int = 16
    max_total_mib: float = 64.0

    def __post_init__(self) -> None:
        if not 50 <= self.jpeg_quality <= 100:
            raise ConfigError(f"jpeg_quality: {self.jpeg_quality} is outside 50..100")
        if self.shard_mib < 1:
            raise ConfigError(f"shard_mib: {self.shard_mib} must be at least 1")
        if self.max_total_mib <= 0:
            raise ConfigError(f"max_total_mib: {self.max_total_mib} must be positive")


@dataclass(frozen=True)
class ClassShareBounds:
    """Allowed share of labelled training pixels per class: a default range and overrides."""

    default: tuple[float, float] = (0.0, 1.0)
    per_class: dict[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, (low, high) in {"default": self.default, **self.per_class}.items():
            if not 0.0 <= low <= high <= 1.0:
                where = "default" if name == "default" else f"per_class.{name}"
                raise ConfigError(f"{where}: [{low}, {high}] is not a range within [0, 1]")

    def bounds_for(self, class_name: str) -> tuple[float, float]:
        """Return the (min, max) share allowed for ``class_name``."""
        return self.per_class.get(class_name, self.default)


@dataclass(frozen=True)
class ValidateConfig:
    """What the data gate expects of the prepared dataset."""

    split_sizes: dict[str, int] = field(default_factory=dict)
    class_share: ClassShareBounds = field(default_factory=ClassShareBounds)

    def __post_init__(self) -> None:
        for split, size in self.split_sizes.items():
            if size < 0:
                raise ConfigError(f"split_sizes.{split}: {size} must not be negative")


@dataclass(frozen=True)
class StudentConfig:
    """One student: an architecture name from the model registry and a timm encoder name.

    ``output_stride``, ``aspp_rates`` and ``low_level_channels`` are read by ``deeplabv3plus``
    only; ``segformer`` keeps the encoder's native strides.
    """

    arch: str
    encoder: str
    pretrained: bool = False
    weights_file: str | None = None
    decoder_channels: int = 256
    output_stride: int | None = None
    aspp_rates: tuple[int, ...] = (6, 12, 18)
    low_level_channels: int = 48

    def __post_init__(self) -> None:
        if self.decoder_channels < 1:
            raise ConfigError(f"decoder_channels: {self.decoder_channels} must be positive")
        if self.output_stride not in (None, 8, 16, 32):
            raise ConfigError(f"output_stride: {self.output_stride} is not one of 8, 16, 32")
        if self.weights_file is not None and self.pretrained is False:
            raise ConfigError("weights_file: set pretrained: true to load a weights file")


@dataclass(frozen=True)
class ModelsConfig:
    """The two students trained together."""

    cnn: StudentConfig = field(
        default_factory=lambda: StudentConfig(
            arch="deeplabv3plus", encoder="resnet18", output_stride=16
        )
    )
    vit: StudentConfig = field(
        default_factory=lambda: StudentConfig(arch="segformer", encoder="pvt_v2_b0")
    )


@dataclass(frozen=True)
class Params:
    """Every knob of the pipeline, grouped by stage."""

    data: DataConfig = field(default_factory=DataConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Parse and validate ``params.yaml``; errors name the file and the offending key."""
    data = load_yaml_mapping(path)
    try:
        return from_mapping(Params, data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
