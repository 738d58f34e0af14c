"""The export stage: ONNX graphs with dynamic shapes, and the parity gate against PyTorch."""

import contextlib
import io
import json

import onnx
import pytest
import torch

from codistill.config import parse_params
from codistill.engine.checkpoint import save_checkpoint
from codistill.export.parity import ParityError
from codistill.export.stage import run_export
from codistill.models import build_student
from tests.conftest import TINY_MODELS, TINY_SPLITS, over_repo, repo_params

pytestmark = pytest.mark.cost(55)

TINY_EXPORT = {
    "export": {"parity": {"resolutions": [[48, 64], [32, 48]], "batch_sizes": [1, 2]}},
    "train": {"scale": [0.75, 1.25]},
    "evaluate": {"scale": 1.0},  # the tiny images are too small for the ViT at a smaller scale
    "tracking": {"enabled": False},
}


@pytest.fixture(scope="module")
def students_dir(tmp_path_factory):
    """Untrained students saved the way the train stage saves them."""
    folder = tmp_path_factory.mktemp("students")
    params = repo_params(TINY_MODELS)
    torch.manual_seed(0)
    for role, cfg in (("cnn", params.models.cnn), ("vit", params.models.vit)):
        save_checkpoint(folder / f"{role}.pt", build_student(cfg, 11).state_dict())
    return folder


@pytest.fixture(scope="module")
def prepared_96x128(tmp_path_factory):
    """A tiny CamVid at 96x128: at half size still large enough for the ViT's attention."""
    from codistill.data import create_reader, prepare_dataset
    from tests.conftest import build_camvid_tree

    base = tmp_path_factory.mktemp("prepared96")
    tree = build_camvid_tree(base / "camvid", size=(96, 128))
    prepare_dataset(create_reader("camvid", tree), base / "prepared", repo_params().prepare)
    return base / "prepared"


EXPORT_AT_HALF_SCALE = {
    "export": {
        "parity": {"resolutions": [[96, 128], [80, 112]], "batch_sizes": [1, 2]},
        "opset": 18,
        "variants": ["int8", "fp16"],
    },
    "train": {"scale": [0.5, 1.0]},
    "evaluate": {"scale": 0.5},
}


@pytest.fixture(scope="module", params=["torchscript", "dynamo"])
def exported(request, prepared_96x128, students_dir, tmp_path_factory):
    """Both students exported once per exporter at half scale: (params, folder, progress)."""
    exporter = {**EXPORT_AT_HALF_SCALE["export"], "exporter": request.param}
    raw = {**EXPORT_AT_HALF_SCALE, "export": exporter}
    params = parse_params(over_repo(raw, TINY_MODELS), "test")
    folder = tmp_path_factory.mktemp(f"export-{request.param}")
    with contextlib.redirect_stdout(io.StringIO()) as progress:  # off a terminal
        run_export(params, prepared_96x128, students_dir, folder)
    return params, folder, progress.getvalue()


def dims(value) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def test_export_writes_dynamic_graphs_with_logits_and_labels(exported):
    _, folder, progress = exported
    for role in ("cnn", "vit"):
        wrote = f"export {role}: wrote and checked {role}.onnx"
        assert f"{wrote}\nexport {role}: parity passed" in progress  # one line per phase
    parity = json.loads((folder / "parity.json").read_text())
    for role in ("cnn", "vit"):
        graph = onnx.load(str(folder / f"{role}.onnx")).graph
        assert [i.name for i in graph.input] == ["image"]
        assert [o.name for o in graph.output] == ["logits", "labels"]
        image, logits, labels = graph.input[0], graph.output[0], graph.output[1]
        assert image.type.tensor_type.elem_type == onnx.TensorProto.UINT8
        assert labels.type.tensor_type.elem_type == onnx.TensorProto.UINT8
        # batch, height and width are symbolic; the channel and class counts are fixed
        assert [isinstance(d, str) for d in dims(image)] == [True, True, True, False]
        assert dims(image)[3] == 3  # N x H x W x RGB
        assert dims(logits)[1] == 11 and all(isinstance(d, str) for d in dims(labels))
        # training-only adapters are not in the graph
        assert not any("adapter" in init.name for init in graph.initializer)
        cases = parity["cases"][role]
        assert {(c["height"], c["width"], c["batch"]) for c in cases} == {
            (96, 128, 1),
            (96, 128, 2),
            (80, 112, 1),
            (80, 112, 2),
        }
        assert all(c["passed"] and c["label_agreement"] >= 0.999 for c in cases)
        assert all(c["fp32_path_label_agreement"] >= 0.999 for c in cases)
    assert_variants_kept_within_the_gate(folder)


def assert_variants_kept_within_the_gate(folder):
    """variants.json is consistent with the files on disk, and each kept graph is what it says."""
    report = json.loads((folder / "variants.json").read_text())
    kept = json.loads((folder / "export.json").read_text())["variants"]
    assert report["calibration"] == {"split": "train", "images": TINY_SPLITS["train"]}
    for role in ("cnn", "vit"):
        student = report["students"][role]
        assert student["fp32"]["images"] == TINY_SPLITS["val"]
        for variant in ("int8", "fp16"):
            entry = student[variant]
            drop = 100 * (student["fp32"]["miou"] - entry["miou"])
            assert entry["miou_drop_points"] == pytest.approx(drop)
            assert entry["kept"] == (drop <= report["max_quant_drop_points"])
            path = folder / f"{role}.{variant}.onnx"
            assert path.exists() == entry["kept"] == (variant in kept[role])
            if not entry["kept"]:
                continue
            graph = onnx.load(str(path)).graph
            assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
            assert [o.name for o in graph.output] == ["logits", "labels"]
            if variant == "int8":
                assert any(n.op_type == "QuantizeLinear" for n in graph.node)
                assert {i.data_type for i in graph.initializer} & {onnx.TensorProto.INT8}
            else:
                weights = [i for i in graph.initializer if i.name.endswith("weight")]
                assert weights and all(i.data_type == onnx.TensorProto.FLOAT16 for i in weights)


def test_the_graph_normalizes_after_the_resize_and_int8_quantizes_only_the_student(
    exported, tmp_path
):
    """The serving wrapper stays FP32: the image is quantized once, where the student starts."""
    import numpy as np

    from codistill.export.variants import quantize_int8, serving_wrapper_nodes

    _, folder, _ = exported
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (1, 96, 128, 3), dtype=np.uint8) for _ in range(2)]
    quantize_int8(folder / "vit.onnx", tmp_path / "vit.int8.onnx", images)
    wrapper = ["Transpose", "Cast", "Resize", "Mul", "Add"]  # normalized at the student's scale
    outputs = ["Resize", "ArgMax"]  # the logits upsampled and read in FP32
    for path, around_student in (
        (folder / "vit.onnx", [*wrapper, *outputs]),
        (tmp_path / "vit.int8.onnx", [*wrapper, "QuantizeLinear", "DequantizeLinear", *outputs]),
    ):
        graph = onnx.load(str(path)).graph
        op_types = {node.name: node.op_type for node in graph.node}
        assert [op_types[n] for n in serving_wrapper_nodes(graph)] == around_student, path.name


def test_a_variant_over_the_quantization_gate_is_deleted_and_reported(tmp_path, monkeypatch):
    from codistill.export import variant_gate

    def fake_builder(variant, source, calibration):
        target = source.with_name(f"{source.stem}.{variant}.onnx")
        target.write_text(variant)
        return target

    def fake_scores(graphs, prepared_dir, split, label):
        miou = {"fp32": 0.500, "int8": 0.489, "fp16": 0.4995}  # drops of 1.1 and 0.05 points
        latency = {"fp32": 0.20, "int8": 0.05, "fp16": 0.25}
        return {
            name: {"miou": miou[name], "images": 2, "seconds_per_image": latency[name]}
            for name in graphs
        }

    monkeypatch.setattr(variant_gate, "build_variant", fake_builder)
    monkeypatch.setattr(variant_gate, "score_graphs", fake_scores)
    monkeypatch.setattr(variant_gate, "evenly_spaced_images", lambda *args: [])
    (tmp_path / "cnn.onnx").write_text("fp32")
    params = parse_params(over_repo({"gates": {"max_quant_drop_points": 1.0}}), "test")
    report = variant_gate.faster_variants(params, tmp_path, tmp_path, ("cnn",))
    cnn = report["students"]["cnn"]
    assert cnn["int8"]["kept"] is False and cnn["int8"]["file"] is None
    assert cnn["int8"]["miou_drop_points"] == pytest.approx(1.1)
    assert cnn["int8"]["speedup"] == pytest.approx(4.0)
    assert cnn["fp16"]["kept"] is True and cnn["fp16"]["speedup"] == pytest.approx(0.8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn.fp16.onnx", "cnn.onnx"]
    loose = parse_params(over_repo({"gates": {"max_quant_drop_points": 1.2}}), "test")
    (tmp_path / "cnn.fp16.onnx").unlink()
    report = variant_gate.faster_variants(loose, tmp_path, tmp_path, ("cnn",))
    assert report["students"]["cnn"]["int8"]["kept"] is True


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"gates": {"max_quant_drop_points": -0.5}},
            r"gates\.max_quant_drop_points: -0\.5 must be",
        ),
        ({"export": {"variants": ["int4"]}}, r"export\.variants: 'int4' is not one of int8, fp16"),
        ({"export": {"variants": ["int8", "int8"]}}, r"export\.variants: .* names a variant twice"),
        ({"export": {"calibration_images": 0}}, r"export\.calibration_images: 0 must be at least"),
        ({"gates": {"max_quant_drop": 1.0}}, r"unknown key gates\.max_quant_drop \(allowed"),
    ],
)
def test_bad_variant_settings_are_config_errors_naming_the_key(section, message):
    from codistill.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        parse_params(over_repo(section), "test")


def test_a_graph_that_disagrees_fails_the_stage_and_keeps_the_previous_export(
    validated_tiny, students_dir, tmp_path, monkeypatch
):
    from codistill.export import stage

    export_onnx = stage.export_onnx

    def export_another_student(student, path, *args):
        torch.manual_seed(1)
        return export_onnx(build_student(repo_params(TINY_MODELS).models.cnn, 11), path, *args)

    monkeypatch.setattr(stage, "export_onnx", export_another_student)
    prepared, _ = validated_tiny
    out = tmp_path / "export"
    out.mkdir()
    (out / "cnn.onnx").write_text("the previous export")
    with pytest.raises(ParityError, match=r"cnn 48x64 batch 1: max \|logit diff\| \d"):
        run_export(
            parse_params(over_repo(TINY_EXPORT, TINY_MODELS), "test"), prepared, students_dir, out
        )
    assert (out / "cnn.onnx").read_text() == "the previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no staging folder left behind


def test_a_missing_student_is_named_and_leaves_no_staging_folder(validated_tiny, tmp_path):
    prepared, _ = validated_tiny
    with pytest.raises(FileNotFoundError, match="no trained cnn student"):
        run_export(
            parse_params(over_repo(TINY_EXPORT, TINY_MODELS), "test"),
            prepared,
            tmp_path / "none",
            tmp_path / "x",
        )
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
        parse_params(over_repo({"export": {"parity": parity}}), "test")


def test_a_bad_exporter_name_is_a_config_error_naming_the_key():
    from codistill.config import ConfigError

    with pytest.raises(ConfigError, match=r"export\.exporter: 'onnxscript' is not one of"):
        parse_params(over_repo({"export": {"exporter": "onnxscript"}}), "test")


def test_the_graph_runs_the_student_at_the_evaluation_scale(
    prepared_96x128, students_dir, exported
):
    """A student trained at half size is served at half size: the resize is in the graph."""
    import onnxruntime as ort

    from codistill.evaluation.students import load_students
    from codistill.export.onnx_graph import Normalization
    from codistill.export.parity import evaluation_input
    from codistill.models import segment

    params, folder, _ = exported
    contract = json.loads((folder / "preprocessing.json").read_text())
    assert contract["inference_scale"] == 0.5
    cnn = load_students(params, students_dir, 11)["cnn"].eval()
    normalization = Normalization.of_prepared(prepared_96x128)
    session = ort.InferenceSession(str(folder / "cnn.onnx"))
    for size in ((96, 128), (97, 131)):  # the second does not halve to whole pixels
        image = torch.randint(0, 256, (1, *size, 3), dtype=torch.uint8)
        logits, labels = session.run(None, {"image": image.numpy()})
        assert logits.shape == (1, 11, *size) and labels.shape == (1, *size)
        pixels = evaluation_input(image, normalization)
        with torch.no_grad():
            scaled, full = segment(cnn, pixels, 0.5), segment(cnn, pixels, 1.0)
        assert torch.allclose(torch.from_numpy(logits), scaled, atol=1e-4)
        assert not torch.allclose(torch.from_numpy(logits), full, atol=1e-2)
