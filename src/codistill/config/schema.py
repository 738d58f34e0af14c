"""The typed shape of ``params.yaml``: one dataclass per stage group."""

from __future__ import annotations

import copy
import typing
from dataclasses import dataclass, fields, is_dataclass, make_dataclass
from pathlib import Path
from typing import Any, Literal

from codistill.config.loader import ConfigError, from_mapping, load_yaml_mapping
from codistill.config.terms import METHODS, SWITCHABLE_TERMS, TERM_NAMES, TERMS

DatasetName = Literal["camvid", "cityscapes", "voc"]


@dataclass(frozen=True)
class DataConfig:
    """Which dataset the pipeline reads."""

    dataset: DatasetName


@dataclass(frozen=True)
class PrepareConfig:
    """How raw images and masks are encoded into shards."""

    jpeg_quality: int
    shard_mib: int
    max_total_mib: float

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

    default: tuple[float, float]
    per_class: dict[str, tuple[float, float]]

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

    split_sizes: dict[str, int]
    class_share: ClassShareBounds
    image_size: tuple[int, int] | None

    def __post_init__(self) -> None:
        for split, size in self.split_sizes.items():
            if size < 0:
                raise ConfigError(f"split_sizes.{split}: {size} must not be negative")
        if self.image_size is not None and min(self.image_size) < 1:
            raise ConfigError(f"image_size: {list(self.image_size)} must be positive")


@dataclass(frozen=True)
class StudentConfig:
    """One student: an architecture name from the model registry and a timm encoder name.

    ``output_stride``, ``aspp_rates`` and ``low_level_channels`` are read by ``deeplabv3plus``
    only; ``segformer`` keeps the encoder's native strides, so its section omits them. They
    are the schema's only defaults: ``params.yaml`` sets every value the pipeline runs with.
    """

    arch: str
    encoder: str
    pretrained: bool
    weights_file: str | None
    decoder_channels: int
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

    cnn: StudentConfig
    vit: StudentConfig


# The students' roles, in the order every stage lists them: the fields of ModelsConfig.
ROLES: tuple[str, ...] = tuple(f.name for f in fields(ModelsConfig))


def _check_distill(self: DistillConfig) -> None:
    missing = [name for name in TERM_NAMES if name not in self.weights]
    unknown = sorted(set(self.weights) - set(TERM_NAMES))
    if unknown or missing:
        raise ConfigError(
            f"weights.{(unknown or missing)[0]}: "
            + ("not a distillation term" if unknown else "missing")
            + f" (one weight per term: {', '.join(TERM_NAMES)})"
        )
    if self.warmup_iters < 0:
        raise ConfigError(f"warmup_iters: {self.warmup_iters} must not be negative")


# One section of options per registered term, after the weights and the warm-up.
DistillConfig = make_dataclass(
    "DistillConfig",
    [
        ("weights", dict[str, float]),
        ("warmup_iters", int),
        *((term.name, term.options) for term in TERMS),
    ],
    namespace={
        "__doc__": "Each term's weight and options (used only when the term is on), and the "
        "linear warm-up of all weights.",
        "__post_init__": _check_distill,
    },
    frozen=True,
)
DistillConfig.__module__ = __name__

# The method, then one ablation switch per switchable term: true/false forces the term on/off,
# null keeps the method's choice.
_MethodChoice = make_dataclass(
    "_MethodChoice",
    [("method", str), *((name, bool | None) for name in SWITCHABLE_TERMS)],
    frozen=True,
)
_MethodChoice.__module__ = __name__


@dataclass(frozen=True)
class SGDConfig:
    """The CNN student's optimizer: SGD with momentum and a poly schedule."""

    lr: float
    momentum: float
    weight_decay: float
    poly_power: float
    warmup_iters: int

    def __post_init__(self) -> None:
        _check_warmup(self.warmup_iters)


@dataclass(frozen=True)
class AdamWConfig:
    """The ViT student's optimizer: AdamW, a faster head, and a poly schedule."""

    lr: float
    head_lr_mult: float
    weight_decay: float
    poly_power: float
    warmup_iters: int

    def __post_init__(self) -> None:
        _check_warmup(self.warmup_iters)


def _check_warmup(warmup_iters: int) -> None:
    if warmup_iters < 0:
        raise ConfigError(f"warmup_iters: {warmup_iters} must not be negative")


@dataclass(frozen=True)
class TrainConfig(_MethodChoice):
    """The co-training run: method, ablation switches, schedule and augmentation."""

    seed: int
    iterations: int
    batch_size: int
    crop: tuple[int, int]
    scale: tuple[float, float]
    flip: bool
    class_balance: float
    num_workers: int
    log_every: int
    checkpoint_every: int
    amp: bool
    channels_last: bool
    compile: bool
    cnn_optimizer: SGDConfig
    vit_optimizer: AdamWConfig

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method: {self.method!r} is not one of {', '.join(METHODS)}")
        for name in ("iterations", "batch_size", "log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: {getattr(self, name)} must be at least 1")
        if self.num_workers < 0:
            raise ConfigError(f"num_workers: {self.num_workers} must not be negative")
        if min(self.crop) < 8:
            raise ConfigError(f"crop: {list(self.crop)} must be at least 8 pixels each way")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ConfigError(f"scale: {list(self.scale)} is not a range of positive factors")
        if not 0 <= self.class_balance <= 1:
            raise ConfigError(f"class_balance: {self.class_balance} must be within [0, 1]")

    def switches(self) -> dict[str, bool | None]:
        """The ablation switch of each switchable term."""
        return {name: getattr(self, name) for name in SWITCHABLE_TERMS}


# Knobs that change how a run is carried out or logged, not what it computes: changing one
# neither retrains the students (dvc.yaml) nor makes a study result stale.
RUN_ONLY_KEYS = ("train.num_workers", "train.log_every")


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow tracking of every stage (the URI comes from MLFLOW_TRACKING_URI)."""

    enabled: bool


@dataclass(frozen=True)
class EvaluateConfig:
    """Whole-image, single-scale evaluation: the image resized by ``scale``, scored natively."""

    split: str
    overlays: int
    scale: float

    def __post_init__(self) -> None:
        if self.overlays < 0:
            raise ConfigError(f"overlays: {self.overlays} must not be negative")
        if not 0.1 <= self.scale <= 4:
            raise ConfigError(f"scale: {self.scale} must be within [0.1, 4]")


@dataclass(frozen=True)
class ParityConfig:
    """How closely the exported graph must match PyTorch, and on which inputs."""

    resolutions: tuple[tuple[int, int], ...]
    batch_sizes: tuple[int, ...]
    max_abs_logit_diff: float
    min_label_agreement: float

    def __post_init__(self) -> None:
        if len(set(self.resolutions)) < 2 or min(min(r) for r in self.resolutions) < 32:
            raise ConfigError(
                f"resolutions: {[list(r) for r in self.resolutions]} needs two or more "
                "different sizes of at least 32 px"
            )
        if len(set(self.batch_sizes)) < 2 or min(self.batch_sizes) < 1:
            raise ConfigError(f"batch_sizes: {list(self.batch_sizes)} needs two or more sizes ≥ 1")
        if self.max_abs_logit_diff <= 0:
            raise ConfigError(f"max_abs_logit_diff: {self.max_abs_logit_diff} must be positive")
        if not 0 < self.min_label_agreement <= 1:
            raise ConfigError(f"min_label_agreement: {self.min_label_agreement} not in (0, 1]")


EXPORTERS = ("torchscript", "dynamo")
VARIANTS = ("int8", "fp16")  # faster graphs of an exported student


@dataclass(frozen=True)
class ExportConfig:
    """ONNX export of each student."""

    exporter: str
    opset: int
    parity: ParityConfig
    variants: tuple[str, ...]
    calibration_images: int

    def __post_init__(self) -> None:
        if self.exporter not in EXPORTERS:
            raise ConfigError(f"exporter: {self.exporter!r} is not one of {', '.join(EXPORTERS)}")
        if self.opset < 13:
            raise ConfigError(f"opset: {self.opset} must be at least 13")
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ConfigError(f"variants: {unknown[0]!r} is not one of {', '.join(VARIANTS)}")
        if len(set(self.variants)) != len(self.variants):
            raise ConfigError(f"variants: {list(self.variants)} names a variant twice")
        if self.calibration_images < 1:
            raise ConfigError(f"calibration_images: {self.calibration_images} must be at least 1")


@dataclass(frozen=True)
class GatesConfig:
    """Quality bars a student must clear before it is promoted."""

    min_miou: float
    max_quant_drop: float

    def __post_init__(self) -> None:
        if not 0 <= self.min_miou <= 1:
            raise ConfigError(f"min_miou: {self.min_miou} must be within [0, 1]")
        if not 0 <= self.max_quant_drop <= 100:
            raise ConfigError(f"max_quant_drop: {self.max_quant_drop} must be within [0, 100]")


@dataclass(frozen=True)
class ServingConfig:
    """How Triton serves each student: batching, instances, warm-up, the GPU accelerator."""

    max_batch_size: int
    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_us: int
    instances: int
    tensorrt_precision: Literal["FP32", "FP16"]
    tensorrt_cache: str
    warmup_size: tuple[int, int]

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ConfigError(f"max_batch_size: {self.max_batch_size} must be at least 1")
        outside = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch_size]
        if outside:
            raise ConfigError(
                f"preferred_batch_sizes: {outside} not within 1..{self.max_batch_size}"
            )
        if min(self.warmup_size) < 32:
            raise ConfigError(f"warmup_size: {list(self.warmup_size)} must be 32 pixels or more")
        if not self.tensorrt_cache.startswith("/"):
            raise ConfigError(f"tensorrt_cache: {self.tensorrt_cache!r} must be an absolute path")
        if self.max_queue_delay_us < 0 or self.instances < 1:
            raise ConfigError(
                f"max_queue_delay_us ({self.max_queue_delay_us}) must not be negative and "
                f"instances ({self.instances}) must be at least 1"
            )


@dataclass(frozen=True)
class Params:
    """Every knob of the pipeline, grouped by stage."""

    data: DataConfig
    prepare: PrepareConfig
    validate: ValidateConfig
    models: ModelsConfig
    train: TrainConfig
    distill: DistillConfig
    evaluate: EvaluateConfig
    export: ExportConfig
    gates: GatesConfig
    serving: ServingConfig
    tracking: TrackingConfig

    def __post_init__(self) -> None:
        low, high = self.train.scale
        if not low <= self.evaluate.scale <= high:
            raise ConfigError(
                f"evaluate.scale: {self.evaluate.scale} lies outside train.scale "
                f"[{low}, {high}]; the students would be scored at a scale they never trained on"
            )


PROFILE_KEYS = ("profile", "profiles")


def value_keys(key: str, section: dict[str, Any], schema: type | None = None) -> list[str]:
    """The dotted keys under ``key`` that ``section`` holds, one per value of the schema.

    ``section`` is a ``params.yaml`` mapping (the base, or a profile's overrides). A key whose
    schema type is a dataclass splits into the fields that ``section`` sets; any other key (a
    number, a list, a mapping of names such as ``distill.weights``) is one value. A key that
    ``section`` does not hold has none.
    """
    schema = schema or Params
    head, _, rest = key.partition(".")
    if not isinstance(section, dict) or head not in section:
        return []
    field_type = typing.get_type_hints(schema).get(head)
    if field_type is None:
        raise ConfigError(f"{key}: not a key of {schema.__name__}")
    value = section[head]
    if rest:
        return [f"{head}.{k}" for k in value_keys(rest, value, field_type)]
    if not (is_dataclass(field_type) and isinstance(value, dict)):
        return [head]
    return [
        f"{head}.{k}"
        for child in fields(field_type)
        for k in value_keys(child.name, value, field_type)
    ]


def with_overrides(data: dict, overrides: dict[str, Any]) -> dict:
    """A copy of the mapping ``data`` with each dotted key (``a.b.c``) of ``overrides`` set.

    The value replaces what the key held, a mapping included; missing parents are created.
    """
    result = copy.deepcopy(data)
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        section = result
        for part in parents:
            section = section.setdefault(part, {})
        section[leaf] = value
    return result


def merge_mappings(base: dict, override: dict) -> dict:
    """``override`` merged over ``base``, mapping by mapping; other values replace."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_mappings(merged[key], value)
        else:
            merged[key] = value
    return merged


def apply_profile(data: dict) -> dict:
    """Merge the section ``profiles.<profile>`` over the base keys and drop the profile keys.

    A profile without a section (``cpu`` by convention) is the base configuration itself.
    """
    profile = data.get("profile")
    sections = data.get("profiles") or {}
    if not isinstance(sections, dict):
        raise ConfigError("profiles: expected a mapping of profile name to overrides")
    if profile is not None and profile not in sections and profile != "cpu":
        raise ConfigError(
            f"profile: {profile!r} has no section under profiles "
            f"(found: {', '.join(sorted(sections)) or 'none'})"
        )
    base = {k: v for k, v in data.items() if k not in PROFILE_KEYS}
    return merge_mappings(base, sections.get(profile) or {}) if profile else base


def load_params(path: str | Path = "params.yaml", profile: str | None = None) -> Params:
    """Parse and validate ``params.yaml`` under its profile; errors name the file and key."""
    return parse_params(load_yaml_mapping(path), str(path), profile)


def parse_params(data: dict, source: str, profile: str | None = None) -> Params:
    """Validate a parameters mapping under its profile, or under ``profile`` if given."""
    if profile:
        data = {**data, "profile": profile}
    try:
        return from_mapping(Params, apply_profile(data))
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
