"""timm encoders in ``features_only`` mode, with local or hub weights."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from timm.models._features import FeatureListNet
from torch import nn

from codistill.config import ConfigError, StudentConfig


class EncoderError(ConfigError):
    """An encoder cannot be built as configured; the message names the encoder."""


def create_encoder(cfg: StudentConfig) -> nn.Module:
    """Build ``cfg.encoder`` as a multi-scale feature extractor.

    With ``pretrained: true`` the weights come from ``weights_file`` when it is set (a state
    dict of the plain timm classification model), else from the model hub.
    """
    kwargs: dict = {"features_only": True, "pretrained": cfg.pretrained}
    if cfg.output_stride is not None:
        kwargs["output_stride"] = cfg.output_stride
    if cfg.weights_file is not None:
        if not Path(cfg.weights_file).is_file():
            raise EncoderError(f"{cfg.encoder}: weights_file {cfg.weights_file} does not exist")
        kwargs["pretrained_cfg_overlay"] = {"file": str(cfg.weights_file)}
    if cfg.encoder not in timm.list_models():
        raise EncoderError(f"unknown timm encoder {cfg.encoder!r}")
    try:
        return timm.create_model(cfg.encoder, **kwargs)
    except Exception as err:
        if cfg.pretrained and cfg.weights_file is None:
            raise EncoderError(
                f"{cfg.encoder}: could not fetch pretrained weights ({type(err).__name__}: "
                f"{err}); on a machine without network name a local weights_file"
            ) from err
        raise EncoderError(f"{cfg.encoder}: cannot build with {kwargs}: {err}") from err


def finest_feature_index(reductions: list[int], minimum: int = 4) -> int:
    """Index of the earliest feature at the smallest stride of at least ``minimum``."""
    candidates = [r for r in reductions if r >= minimum] or reductions
    return reductions.index(min(candidates))


def features_from(encoder: nn.Module, index: int, feature: torch.Tensor) -> list:
    """Run ``encoder`` onward from its feature ``index``, given that feature's value.

    Returns the full feature list with earlier entries as None. Works for timm's sequential
    ``FeatureListNet`` encoders; others raise EncoderError.
    """
    if not isinstance(encoder, FeatureListNet):
        raise EncoderError(f"{type(encoder).__name__} encoders cannot resume from a feature")
    names = list(encoder.return_layers)
    modules = list(encoder.items())
    start = [name for name, _ in modules].index(names[index]) + 1
    features: list = [None] * index + [feature]
    x = feature
    for name, module in modules[start:]:
        x = module(x)
        if name in encoder.return_layers:
            features.append(x)
    return features
