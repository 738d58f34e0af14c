"""The typed shape of ``params.yaml``: one dataclass per stage group."""

from __future__ import annotations

import copy
import typing
from dataclasses import dataclass, fields, is_dataclass, make_dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from codistill.config.loader import (
    NON_NEGATIVE,
    POSITIVE,
    UNIT_INTERVAL,
    ConfigError,
    Range,
    from_mapping,
    load_yaml_mapping,
)
from codistill.config.terms import METHODS, SWITCHABLE_TERMS, TERM_NAMES, TERMS

DatasetName = Literal["camvid", "cityscapes", "voc"]


@dataclass(frozen=True)
class DataConfig:
    """Which dataset the pipeline reads."""

    dataset: DatasetName


@dataclass(frozen=True)
class PrepareConfig:
    """How raw images and masks are encoded into shards."""

    jpeg_quality: Annotated[int, Range(50, 100)]
    shard_mib: Annotated[int, Range(1)]
    max_total_mib: Annotated[float, POSITIVE]


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

    split_sizes: dict[str, Annotated[int, NON_NEGATIVE]]
    class_share: ClassShareBounds
    image_size: tuple[Annotated[int, Range(1)], Annotated[int, Range(1)]] | None


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
    decoder_channels: Annotated[int, Range(1)]
    output_stride: int | None = None
    aspp_rates: tuple[Annotated[int, Range(1)], ...] = (6, 12, 18)
    low_level_channels: Annotated[int, Range(1)] = 48

    def __post_init__(self) -> None:
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


# One section of options per registered term, after the weights and the warm-up.
DistillConfig = make_dataclass(
    "DistillConfig",
    [
        ("weights", dict[str, Annotated[float, NON_NEGATIVE]]),
        ("warmup_iters", Annotated[int, NON_NEGATIVE]),
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

    lr: Annotated[float, POSITIVE]
    momentum: Annotated[float, UNIT_INTERVAL]
    weight_decay: Annotated[float, NON_NEGATIVE]
    poly_power: Annotated[float, NON_NEGATIVE]
    warmup_iters: Annotated[int, NON_NEGATIVE]


@dataclass(frozen=True)
class AdamWConfig:
    """The ViT student's optimizer: AdamW, a faster head, and a poly schedule."""

    lr: Annotated[float, POSITIVE]
    head_lr_mult: Annotated[float, POSITIVE]
    weight_decay: Annotated[float, NON_NEGATIVE]
    poly_power: Annotated[float, NON_NEGATIVE]
    warmup_iters: Annotated[int, NON_NEGATIVE]


@dataclass(frozen=True)
class TrainConfig(_MethodChoice):
    """The co-training run: method, ablation switches, schedule and augmentation."""

    seed: Annotated[int, Range(0, 2**32 - 1)]  # numpy's generators take 32-bit seeds
    iterations: Annotated[int, Range(1)]
    batch_size: Annotated[int, Range(1)]
    crop: tuple[Annotated[int, Range(8)], Annotated[int, Range(8)]]
    scale: tuple[Annotated[float, POSITIVE], Annotated[float, POSITIVE]]
    flip: bool
    class_balance: Annotated[float, UNIT_INTERVAL]
    num_workers: Annotated[int, NON_NEGATIVE]
    log_every: Annotated[int, Range(1)]
    checkpoint_every: Annotated[int, Range(1)]
    amp: bool
    channels_last: bool
    compile: bool
    cnn_optimizer: SGDConfig
    vit_optimizer: AdamWConfig

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method: {self.method!r} is not one of {', '.join(METHODS)}")
        if self.scale[0] > self.scale[1]:
            raise ConfigError(f"scale: {list(self.scale)} is not a range (low, high)")

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
    overlays: Annotated[int, NON_NEGATIVE]
    scale: Annotated[float, Range(0.1, 4)]


@dataclass(frozen=True)
class ParityConfig:
    """How closely the exported graph must match PyTorch, and on which inputs."""

    resolutions: tuple[tuple[int, int], ...]
    batch_sizes: tuple[int, ...]
    max_abs_logit_diff: Annotated[float, POSITIVE]
    min_label_agreement: Annotated[float, Range(0, 1, above=True)]

    def __post_init__(self) -> None:
        if len(set(self.resolutions)) < 2 or min(min(r) for r in self.resolutions) < 32:
            raise ConfigError(
                f"resolutions: {[list(r) for r in self.resolutions]} needs two or more "
                "different sizes of at least 32 px"
            )
        if len(set(self.batch_sizes)) < 2 or min(self.batch_sizes) < 1:
            raise ConfigError(f"batch_sizes: {list(self.batch_sizes)} needs two or more sizes ≥ 1")


EXPORTERS = ("torchscript", "dynamo")
VARIANTS = ("int8", "fp16")  # faster graphs of an exported student


@dataclass(frozen=True)
class ExportConfig:
    """ONNX export of each student."""

    exporter: str
    opset: Annotated[int, Range(13)]
    parity: ParityConfig
    variants: tuple[str, ...]
    calibration_images: Annotated[int, Range(1)]

    def __post_init__(self) -> None:
        if self.exporter not in EXPORTERS:
            raise ConfigError(f"exporter: {self.exporter!r} is not one of {', '.join(EXPORTERS)}")
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ConfigError(f"variants: {unknown[0]!r} is not one of {', '.join(VARIANTS)}")
        if len(set(self.variants)) != len(self.variants):
            raise ConfigError(f"variants: {list(self.variants)} names a variant twice")


@dataclass(frozen=True)
class GatesConfig:
    """Quality bars a student must clear before it is promoted."""

    min_miou_points: Annotated[float, Range(0, 100)]  # a student's test mIoU, in points
    max_quant_drop_points: Annotated[float, Range(0, 100)]  # a variant's validation mIoU loss


@dataclass(frozen=True)
class ServingConfig:
    """How Triton serves each student: batching, instances, warm-up, the GPU accelerator."""

    max_batch_size: Annotated[int, Range(1)]
    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_us: Annotated[int, NON_NEGATIVE]
    instances: Annotated[int, Range(1)]
    tensorrt_precision: Literal["FP32", "FP16"]
    tensorrt_cache: str
    warmup_size: tuple[Annotated[int, Range(32)], Annotated[int, Range(32)]]

    def __post_init__(self) -> None:
        outside = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch_size]
        if outside:
            raise ConfigError(
                f"preferred_batch_sizes: {outside} not within 1..{self.max_batch_size}"
            )
        if not self.tensorrt_cache.startswith("/"):
            raise ConfigError(f"tensorrt_cache: {self.tensorrt_cache!r} must be an absolute path")


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


def check_params_file(path: str | Path) -> tuple[str, ...]:
    """Validate ``path`` as it stands and under each profile it defines; the profiles checked.

    A stage parses the file under one profile only, and ``dvc repro`` runs no stage for a key
    none of them tracks: this check is what makes a misspelled key anywhere fail.
    """
    data = load_yaml_mapping(path)
    profiles = tuple(data.get("profiles") or {})
    parse_params(data, str(path))
    for profile in profiles:
        try:
            parse_params(data, str(path), profile)
        except ConfigError as err:
            raise ConfigError(f"{err} (under profile {profile})") from None
    return profiles


def parse_params(data: dict, source: str, profile: str | None = None) -> Params:
    """Validate a parameters mapping under its profile, or under ``profile`` if given."""
    if profile:
        data = {**data, "profile": profile}
    try:
        return from_mapping(Params, apply_profile(data))
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
