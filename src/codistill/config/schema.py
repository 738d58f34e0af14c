"""The typed shape of ``params.yaml``: one dataclass per stage group."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
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
    image_size: tuple[int, int] | None = None  # height, width of every image; None: any

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


# The students' roles, in the order every stage lists them: the fields of ModelsConfig.
ROLES: tuple[str, ...] = tuple(f.name for f in fields(ModelsConfig))


Method = Literal["independent", "dml", "kdcl", "ours"]


@dataclass(frozen=True)
class HFDConfig:
    """Heterogeneous feature distillation on the stage-1 features."""

    mode: Literal["mimic", "crossfeed"] = "mimic"


@dataclass(frozen=True)
class RegionBSDConfig:
    """Region-wise selective distillation on decoder features."""

    window: int = 8
    margin: float = 0.0
    score: Literal["ce", "entropy"] = "ce"

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ConfigError(f"window: {self.window} must be at least 1")
        if self.margin < 0:
            raise ConfigError(f"margin: {self.margin} must not be negative")


@dataclass(frozen=True)
class TemperatureConfig:
    """A distillation term whose only knob is the softmax temperature."""

    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ConfigError(f"temperature: {self.temperature} must be positive")


@dataclass(frozen=True)
class PixelBSDConfig(TemperatureConfig):
    """Pixel-wise selective distillation on logits: a selection rule and a temperature."""

    rule: Literal["correct_only", "correct_or_more_confident", "lower_ce"] = (
        "correct_or_more_confident"
    )


@dataclass(frozen=True)
class DistillConfig:
    """Options and weights of every distillation term (used only when the term is on)."""

    weights: dict[str, float] = field(
        default_factory=lambda: {"hfd": 1.0, "rbsd": 1.0, "pbsd": 1.0, "dml": 1.0, "kdcl": 1.0}
    )
    warmup_iters: int = 0
    hfd: HFDConfig = field(default_factory=HFDConfig)
    rbsd: RegionBSDConfig = field(default_factory=RegionBSDConfig)
    pbsd: PixelBSDConfig = field(default_factory=PixelBSDConfig)
    dml: TemperatureConfig = field(default_factory=TemperatureConfig)
    kdcl: TemperatureConfig = field(default_factory=TemperatureConfig)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.weights) - DISTILL_TERMS)
        if unknown:
            raise ConfigError(
                f"weights.{unknown[0]}: not a distillation term "
                f"({', '.join(sorted(DISTILL_TERMS))})"
            )
        if self.warmup_iters < 0:
            raise ConfigError(f"warmup_iters: {self.warmup_iters} must not be negative")


DISTILL_TERMS = frozenset({"hfd", "rbsd", "pbsd", "dml", "kdcl"})


@dataclass(frozen=True)
class SGDConfig:
    """The CNN student's optimizer: SGD with momentum and a poly schedule."""

    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9
    warmup_iters: int = 0

    def __post_init__(self) -> None:
        _check_warmup(self.warmup_iters)


@dataclass(frozen=True)
class AdamWConfig:
    """The ViT student's optimizer: AdamW, a faster head, and a poly schedule."""

    lr: float = 6e-5
    head_lr_mult: float = 10.0
    weight_decay: float = 0.01
    poly_power: float = 1.0
    warmup_iters: int = 0

    def __post_init__(self) -> None:
        _check_warmup(self.warmup_iters)


def _check_warmup(warmup_iters: int) -> None:
    if warmup_iters < 0:
        raise ConfigError(f"warmup_iters: {warmup_iters} must not be negative")


@dataclass(frozen=True)
class TrainConfig:
    """The co-training run: method, ablation switches, schedule and augmentation."""

    method: Method = "ours"
    hfd: bool | None = None
    rbsd: bool | None = None
    pbsd: bool | None = None
    seed: int = 0
    iterations: int = 400
    batch_size: int = 8
    crop: tuple[int, int] = (192, 256)
    scale: tuple[float, float] = (0.5, 2.0)
    flip: bool = True
    class_balance: float = 0.0
    num_workers: int = 2
    log_every: int = 10
    checkpoint_every: int = 50
    amp: bool = True
    channels_last: bool = True
    compile: bool = False
    cnn_optimizer: SGDConfig = field(default_factory=SGDConfig)
    vit_optimizer: AdamWConfig = field(default_factory=AdamWConfig)

    def __post_init__(self) -> None:
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


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow tracking of every stage (the URI comes from MLFLOW_TRACKING_URI)."""

    enabled: bool = True


@dataclass(frozen=True)
class EvaluateConfig:
    """Whole-image, single-scale evaluation: the image resized by ``scale``, scored natively."""

    split: str = "test"
    overlays: int = 4
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.overlays < 0:
            raise ConfigError(f"overlays: {self.overlays} must not be negative")
        if not 0.1 <= self.scale <= 4:
            raise ConfigError(f"scale: {self.scale} must be within [0.1, 4]")


@dataclass(frozen=True)
class ParityConfig:
    """How closely the exported graph must match PyTorch, and on which inputs."""

    resolutions: tuple[tuple[int, int], ...] = ((360, 480), (256, 320))
    batch_sizes: tuple[int, ...] = (1, 2)
    max_abs_logit_diff: float = 1e-3
    min_label_agreement: float = 0.999

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


@dataclass(frozen=True)
class ExportConfig:
    """ONNX export of each student."""

    exporter: str = "torchscript"
    opset: int = 17
    parity: ParityConfig = field(default_factory=ParityConfig)
    variants: tuple[Literal["int8", "fp16"], ...] = ("int8", "fp16")
    calibration_images: int = 32

    def __post_init__(self) -> None:
        if self.exporter not in EXPORTERS:
            raise ConfigError(f"exporter: {self.exporter!r} is not one of {', '.join(EXPORTERS)}")
        if self.opset < 13:
            raise ConfigError(f"opset: {self.opset} must be at least 13")
        if len(set(self.variants)) != len(self.variants):
            raise ConfigError(f"variants: {list(self.variants)} names a variant twice")
        if self.calibration_images < 1:
            raise ConfigError(f"calibration_images: {self.calibration_images} must be at least 1")


@dataclass(frozen=True)
class GatesConfig:
    """Quality bars a student must clear before it is promoted."""

    min_miou: float = 0.2
    max_quant_drop: float = 1.0  # mIoU points a faster export variant may lose

    def __post_init__(self) -> None:
        if not 0 <= self.min_miou <= 1:
            raise ConfigError(f"min_miou: {self.min_miou} must be within [0, 1]")
        if not 0 <= self.max_quant_drop <= 100:
            raise ConfigError(f"max_quant_drop: {self.max_quant_drop} must be within [0, 100]")


@dataclass(frozen=True)
class ServingConfig:
    """How Triton serves each student: batching, instances, warm-up, the GPU accelerator."""

    max_batch_size: int = 8
    preferred_batch_sizes: tuple[int, ...] = (4, 8)
    max_queue_delay_us: int = 2000
    instances: int = 1
    tensorrt_precision: Literal["FP32", "FP16"] = "FP16"
    tensorrt_cache: str = "/trt-cache"
    warmup_size: tuple[int, int] = (360, 480)

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

    data: DataConfig = field(default_factory=DataConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    gates: GatesConfig = field(default_factory=GatesConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        low, high = self.train.scale
        if not low <= self.evaluate.scale <= high:
            raise ConfigError(
                f"evaluate.scale: {self.evaluate.scale} lies outside train.scale "
                f"[{low}, {high}]; the students would be scored at a scale they never trained on"
            )


PROFILE_KEYS = ("profile", "profiles")


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
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
    return _merge(base, sections.get(profile) or {}) if profile else base


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
