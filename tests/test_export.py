"""The export stage: ONNX graphs with dynamic shapes, and the parity gate against PyTorch."""

import json

import onnx
import pytest
import torch

from codistill.config import parse_params
from codistill.engine.checkpoint import save_checkpoint
from codistill.export import ParityError
from codistill.export.stage import run_export
from codistill.models import build_student

TINY_EXPORT = {
    "export": {"parity": {"resolutions": [[48, 64], [32, 48]], "batch_sizes": [1, 2]}},
    "tracking": {"enabled": False},
}


@pytest.fixture(scope="module")
def students_dir(tmp_path_factory):
    """Untrained students saved the way the train stage saves them."""
    folder = tmp_path_factory.mktemp("students")
    params = parse_params({}, "defaults")
    torch.manual_seed(0)
    for role, cfg in (("cnn", params.models.cnn), ("vit", params.models.vit)):
        save_checkpoint(folder / f"{role}.pt", build_student(cfg, 11).state_dict())
    return folder


def dims(value) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_export_writes_dynamic_graphs_with_logits_and_labels(
    validated_tiny, students_dir, tmp_path, exporter
):
    prepared, _ = validated_tiny
    raw = {**TINY_EXPORT, "export": {**TINY_EXPORT["export"], "exporter": exporter, "opset": 18}}
    run_export(parse_params(raw, "test"), prepared, students_dir, tmp_path / "export")
    parity = json.loads((tmp_path / "export" / "parity.json").read_text())
    for role in ("cnn", "vit"):
        graph = onnx.load(str(tmp_path / "export" / f"{role}.onnx")).graph
        assert [i.name for i in graph.input] == ["image"]
        assert [o.name for o in graph.output] == ["logits", "labels"]
        image, logits, labels = graph.input[0], graph.output[0], graph.output[1]
        assert image.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert labels.type.tensor_type.elem_type == onnx.TensorProto.UINT8
        # batch, height and width are symbolic; the channel and class counts are fixed
        assert [isinstance(d, str) for d in dims(image)] == [True, False, True, True]
        assert dims(logits)[1] == 11 and all(isinstance(d, str) for d in dims(labels))
        # training-only adapters are not in the graph
        assert not any("adapter" in init.name for init in graph.initializer)
        cases = parity["cases"][role]
        assert {(c["height"], c["width"], c["batch"]) for c in cases} == {
            (48, 64, 1),
            (48, 64, 2),
            (32, 48, 1),
            (32, 48, 2),
        }
        assert all(c["passed"] and c["label_agreement"] >= 0.999 for c in cases)


def test_a_graph_that_disagrees_fails_the_stage_and_keeps_the_previous_export(
    validated_tiny, students_dir, tmp_path, monkeypatch
):
    from codistill.export import stage

    export_onnx = stage.export_onnx

    def export_another_student(student, path, *args):
        torch.manual_seed(1)
        return export_onnx(build_student(parse_params({}, "d").models.cnn, 11), path, *args)

    monkeypatch.setattr(stage, "export_onnx", export_another_student)
    prepared, _ = validated_tiny
    out = tmp_path / "export"
    out.mkdir()
    (out / "cnn.onnx").write_text("the previous export")
    with pytest.raises(ParityError, match=r"cnn 48x64 batch 1: max \|logit diff\| \d"):
        run_export(parse_params(TINY_EXPORT, "test"), prepared, students_dir, out)
    assert (out / "cnn.onnx").read_text() == "the previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no staging folder left behind


def test_a_missing_student_is_named_and_leaves_no_staging_folder(validated_tiny, tmp_path):
    prepared, _ = validated_tiny
    with pytest.raises(FileNotFoundError, match="no trained cnn student"):
        run_export(parse_params(TINY_EXPORT, "test"), prepared, tmp_path / "none", tmp_path / "x")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("parity", "message"),
    [
        ({"resolutions": [[64, 64]]}, "resolutions: .* needs two or more different sizes"),
        ({"batch_sizes": [2, 2]}, r"batch_sizes: \[2, 2\] needs two or more sizes"),
        ({"max_abs_logit_diff": -1}, r"max_abs_logit_diff: -1\.0 must be positive"),
    ],
)
def test_parity_settings_that_would_defeat_the_gate_are_refused(parity, message):
    from codistill.config import ConfigError

    with pytest.raises(ConfigError, match=r"export\.parity\." + message):
        parse_params({"export": {"parity": parity}}, "test")


def test_a_bad_exporter_name_is_a_config_error_naming_the_key():
    from codistill.config import ConfigError

    with pytest.raises(ConfigError, match=r"export\.exporter: 'onnxscript' is not one of"):
        parse_params({"export": {"exporter": "onnxscript"}}, "test")
