from dataclasses import replace

import pytest
import timm
import torch

from codistill.config import ConfigError
from codistill.models import EncoderError, build_student, list_architectures
from tests.conftest import repo_params


def cnn_with(**fields):
    """The repository's CNN student with ``fields`` changed."""
    return replace(repo_params().models.cnn, **fields)


@pytest.mark.parametrize(
    ("arch", "encoder", "stride"),
    [
        ("deeplabv3plus", "mobilenetv3_small_100", 16),
        ("deeplabv3plus", "convnext_atto", None),
        ("segformer", "resnet18", None),
        ("segformer", "efficientnet_b0", None),
    ],
)
def test_any_timm_features_only_encoder_builds_a_student(arch, encoder, stride):
    cfg = cnn_with(arch=arch, encoder=encoder, output_stride=stride, decoder_channels=32)
    student = build_student(cfg, 5).eval()
    with torch.no_grad():
        out = student(torch.randn(1, 3, 64, 96))
    assert out.logits.shape == (1, 5, 16, 24)
    assert out.dec.shape == (1, 32, 16, 24)
    assert (
        out.low.shape[1]
        == student.encoder.feature_info.channels()[
            [r for r in student.encoder.feature_info.reduction()].index(4)
        ]
    )


def test_registry_lists_both_students():
    assert list_architectures() == ["deeplabv3plus", "segformer"]


def test_local_weights_file_is_loaded_into_the_encoder(tmp_path):
    torch.manual_seed(3)
    reference = timm.create_model("resnet18")
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    cfg = cnn_with(
        arch="deeplabv3plus",
        encoder="resnet18",
        output_stride=16,
        pretrained=True,
        weights_file=str(path),
    )
    student = build_student(cfg, 11)
    assert torch.equal(student.encoder.conv1.weight, reference.conv1.weight)
    assert torch.equal(student.encoder.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)


def test_unknown_architecture_and_encoder_are_named():
    with pytest.raises(ConfigError, match="unknown architecture 'unet'"):
        build_student(cnn_with(arch="unet", encoder="resnet18"), 11)
    with pytest.raises(EncoderError, match="unknown timm encoder 'resnet1800'"):
        build_student(cnn_with(arch="segformer", encoder="resnet1800"), 11)


def test_missing_weights_file_is_named(tmp_path):
    cfg = cnn_with(
        arch="segformer",
        encoder="pvt_v2_b0",
        pretrained=True,
        weights_file=str(tmp_path / "absent.pth"),
    )
    with pytest.raises(EncoderError, match=r"absent\.pth does not exist"):
        build_student(cfg, 11)


def test_pretrained_without_network_asks_for_a_weights_file(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = cnn_with(arch="segformer", encoder="pvt_v2_b0", pretrained=True)
    with pytest.raises(EncoderError, match="name a local weights_file"):
        build_student(cfg, 11)


def test_unsupported_output_stride_is_a_clear_error():
    cfg = cnn_with(arch="deeplabv3plus", encoder="pvt_v2_b0", output_stride=16)
    with pytest.raises(EncoderError, match="pvt_v2_b0: cannot build"):
        build_student(cfg, 11)
