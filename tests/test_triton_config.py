"""Triton model configurations generated from the ONNX graphs, read back with tritonclient."""

import json
import shutil
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
import torch
from tritonclient.grpc import model_config_pb2 as pb

from codistill.config import ConfigError, parse_params
from codistill.input_size import min_native_side
from codistill.serving.local_server import inference_scale, warmup_inputs
from codistill.serving.model_repository import write_model_repository
from codistill.serving.triton_config import model_config, read_config
from tests.conftest import over_repo, repo_params

TRITON_TYPES = {"tensor(float)": pb.TYPE_FP32, "tensor(uint8)": pb.TYPE_UINT8}
ROLES = ("cnn", "vit")


def expected_tensors(session_values) -> list[tuple[str, int, list[int]]]:
    """(name, Triton type, dims without the batch axis) as ONNX Runtime sees the graph."""
    return [
        (v.name, TRITON_TYPES[v.type], [d if isinstance(d, int) else -1 for d in v.shape[1:]])
        for v in session_values
    ]


def test_every_generated_config_matches_its_onnx_graph(exported_students, tmp_path):
    settings = repo_params(
        {
            "serving.max_batch_size": 16,
            "serving.preferred_batch_sizes": [2, 16],
            "serving.instances": 2,
            "serving.max_queue_delay_us": 1500,
        }
    ).serving
    written = write_model_repository(exported_students, tmp_path / "repo", settings, ROLES)
    assert set(written) == {"codistill_cnn", "codistill_vit"}
    for name, model_dir in written.items():
        session = ort.InferenceSession(str(model_dir / "1" / "model.onnx"))
        configs = {p.stem: read_config(p) for p in (model_dir / "configs").glob("*.pbtxt")}
        assert set(configs) == {"cpu", "gpu"}
        assert read_config(model_dir / "config.pbtxt") == configs["cpu"]
        for device, config in configs.items():
            assert config.name == name and config.backend == "onnxruntime"
            assert config.max_batch_size == 16
            inputs = [(t.name, t.data_type, list(t.dims)) for t in config.input]
            outputs = [(t.name, t.data_type, list(t.dims)) for t in config.output]
            assert inputs == expected_tensors(session.get_inputs())
            assert outputs == expected_tensors(session.get_outputs())
            assert list(config.dynamic_batching.preferred_batch_size) == [2, 16]
            assert config.dynamic_batching.max_queue_delay_microseconds == 1500
            group = config.instance_group[0]
            assert group.count == 2
            assert group.kind == (
                pb.ModelInstanceGroup.KIND_GPU
                if device == "gpu"
                else pb.ModelInstanceGroup.KIND_CPU
            )
        accelerators = configs["gpu"].optimization.execution_accelerators
        assert [a.name for a in accelerators.gpu_execution_accelerator] == ["tensorrt"]
        assert not configs["cpu"].optimization.execution_accelerators.gpu_execution_accelerator
    cnn_logits = read_config(written["codistill_cnn"] / "config.pbtxt").output[0]
    assert list(cnn_logits.dims) == [11, -1, -1]


def test_the_repository_carries_the_graphs_preprocessing_contract(exported_students, tmp_path):
    """The server sizes the smallest image it accepts by the contract's inference scale."""
    graphs = Path(shutil.copytree(exported_students, tmp_path / "graphs"))
    contract = json.loads((graphs / "preprocessing.json").read_text())
    (graphs / "preprocessing.json").write_text(json.dumps({**contract, "inference_scale": 0.375}))
    write_model_repository(graphs, tmp_path / "repo", repo_params().serving, ROLES)
    copied = json.loads((tmp_path / "repo" / "preprocessing.json").read_text())
    assert copied == {**contract, "inference_scale": 0.375}
    assert min_native_side(inference_scale(tmp_path / "repo")) == 86  # 32 px once at 3/8
    (graphs / "preprocessing.json").unlink()  # graphs without one: the old one goes
    write_model_repository(graphs, tmp_path / "repo", repo_params().serving, ROLES)
    assert not (tmp_path / "repo" / "preprocessing.json").exists()


def test_kept_variants_get_their_own_graph_file_and_configuration(exported_variants, tmp_path):
    written = write_model_repository(
        exported_variants, tmp_path / "repo", repo_params().serving, ROLES
    )
    for model_dir in written.values():
        assert sorted(p.name for p in (model_dir / "1").iterdir()) == [
            "model.fp16.onnx",
            "model.int8.onnx",
            "model.onnx",
        ]
        configs = {p.stem: read_config(p) for p in (model_dir / "configs").glob("*.pbtxt")}
        assert set(configs) == {"cpu", "gpu", "cpu-int8", "gpu-fp16"}
        assert configs["cpu"].default_model_filename == ""  # Triton's default, model.onnx
        assert configs["cpu-int8"].default_model_filename == "model.int8.onnx"
        assert configs["gpu-fp16"].default_model_filename == "model.fp16.onnx"
        assert configs["cpu-int8"].instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU
        assert configs["gpu-fp16"].instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU
        assert not configs["gpu-fp16"].optimization.execution_accelerators.gpu_execution_accelerator
        for config in configs.values():
            graph = model_dir / "1" / (config.default_model_filename or "model.onnx")
            session = ort.InferenceSession(str(graph))
            assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == (
                expected_tensors(session.get_inputs())
            )
            assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == (
                expected_tensors(session.get_outputs())
            )
    int8 = onnx.load(str(written["codistill_cnn"] / "1" / "model.int8.onnx")).graph
    assert any(node.op_type == "QuantizeLinear" for node in int8.node)
    fp16 = onnx.load(str(written["codistill_vit"] / "1" / "model.fp16.onnx")).graph
    assert onnx.TensorProto.FLOAT16 in {tensor.data_type for tensor in fp16.initializer}
    # a variant the export stage dropped has neither a graph nor a configuration
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("cnn.onnx", "cnn.fp16.onnx"):
        (partial / name).write_bytes((exported_variants / name).read_bytes())
    model_dir = write_model_repository(partial, tmp_path / "p", repo_params().serving, ("cnn",))[
        "codistill_cnn"
    ]
    assert sorted(p.stem for p in (model_dir / "configs").iterdir()) == ["cpu", "gpu", "gpu-fp16"]
    assert not (model_dir / "1" / "model.int8.onnx").exists()


def test_every_export_variant_has_a_served_configuration():
    from codistill.export.variants import VARIANTS
    from codistill.serving.model_repository import SERVED_CONFIGS

    assert {s.variant for s in SERVED_CONFIGS} == {None, *VARIANTS}


def test_a_graph_with_a_fixed_batch_cannot_be_batched_by_triton(tmp_path):
    model = torch.nn.Conv2d(3, 2, 1)
    path = tmp_path / "fixed.onnx"
    torch.onnx.export(
        model, (torch.randn(1, 3, 8, 8),), str(path), dynamo=False, input_names=["image"]
    )
    with pytest.raises(ValueError, match="image: first axis 1 is not a dynamic batch"):
        model_config(path, "fixed", repo_params().serving, "cpu")


def test_bad_settings_and_missing_models_are_named(exported_students, tmp_path):
    with pytest.raises(ConfigError, match=r"serving\.preferred_batch_sizes: \[16\] not within"):
        parse_params(over_repo({"serving": {"preferred_batch_sizes": [4, 16]}}), "test")
    with pytest.raises(ValueError, match="device: 'tpu' is not one of cpu, gpu"):
        model_config(exported_students / "cnn.onnx", "x", repo_params().serving, "tpu")
    with pytest.raises(FileNotFoundError, match="no exported seg"):
        write_model_repository(
            exported_students, tmp_path / "repo", repo_params().serving, ("seg",)
        )


def test_every_config_warms_up_and_the_gpu_ones_cache_their_tensorrt_engine(
    exported_variants, tmp_path
):
    settings = repo_params(
        {"serving.warmup_size": [64, 96], "serving.tensorrt_cache": "/cache"}
    ).serving
    written = write_model_repository(exported_variants, tmp_path / "repo", settings, ROLES)
    for name, model_dir in written.items():
        for path in (model_dir / "configs").glob("*.pbtxt"):
            config = read_config(path)
            (warmup,) = config.model_warmup
            assert warmup.batch_size == 1 and warmup.count == 1
            image = warmup.inputs[config.input[0].name]
            assert image.zero_data and image.data_type == config.input[0].data_type
            assert list(image.dims) == [64, 96, 3]
            # the warm-up request is one the graph accepts
            graph = model_dir / "1" / (config.default_model_filename or "model.onnx")
            session = ort.InferenceSession(str(graph))
            outputs = session.run(None, {"image": warmup_inputs(config)[0]["image"]})
            assert outputs[1].shape == (1, 64, 96)
            tensorrt = [
                a
                for a in config.optimization.execution_accelerators.gpu_execution_accelerator
                if a.name == "tensorrt"
            ]
            if path.stem == "gpu":
                assert tensorrt[0].parameters["trt_engine_cache_enable"] == "1"
                assert tensorrt[0].parameters["trt_engine_cache_path"] == f"/cache/{name}"
            else:
                assert tensorrt == []
    with pytest.raises(ConfigError, match=r"serving\.warmup_size"):
        parse_params(over_repo({"serving": {"warmup_size": [8, 8]}}), "params")
    with pytest.raises(ConfigError, match=r"serving\.tensorrt_cache"):
        parse_params(over_repo({"serving": {"tensorrt_cache": "relative/path"}}), "params")


def test_the_local_server_keeps_the_memory_of_a_full_batch_of_warm_up_images_only(
    exported_students, tmp_path
):
    from codistill.serving.backend_repository import Limits, backend_config, chosen_config

    settings = repo_params(
        {
            "serving.warmup_size": [64, 96],
            "serving.max_batch_size": 4,
            "serving.preferred_batch_sizes": [2, 4],
        }
    )
    written = write_model_repository(exported_students, tmp_path / "repo", settings.serving, ROLES)
    limits = Limits(max_pixels=4096 * 4, min_side=32, max_logit_pixels=4096)

    def retained(config) -> str:
        served = backend_config(config, model_dir / "1" / "model.onnx", limits)
        assert not served.model_warmup  # codistill serve sends it end to end instead
        return served.parameters["retained_pixels"].string_value

    for model_dir in written.values():
        config = chosen_config(model_dir, "cpu")
        assert retained(config) == str(4 * 64 * 96)
        config.max_batch_size = 0  # a graph Triton does not batch: one image a call
        assert retained(config) == str(64 * 96)
        config.ClearField("model_warmup")
        assert retained(config) == "0"
