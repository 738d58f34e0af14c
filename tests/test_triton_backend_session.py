"""The session the served model opens inside Triton's Python backend (its stub is faked)."""

import importlib.util
import json
import sys
import types

import onnx
from onnx import TensorProto, helper

from codistill.serving.backend_repository import MODEL_SOURCE


def tiny_graph(path):
    graph = helper.make_graph(
        [helper.make_node("Cast", ["image"], ["logits"], to=TensorProto.FLOAT)],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, [1, 4, 4, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4, 4, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def test_the_served_session_neither_keeps_an_arena_nor_spins_between_requests(
    tmp_path, monkeypatch
):
    # Triton's stub module exists only inside the backend process: an empty stand-in.
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", types.ModuleType("stub"))
    # loaded as Triton loads it: a file of its own (model.py), not a module of the package
    spec = importlib.util.spec_from_file_location("served_model", MODEL_SOURCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = {
        "input": [{"name": "image"}],
        "parameters": {
            "onnx_path": {"string_value": str(tiny_graph(tmp_path / "model.onnx"))},
            "spatial_axes": {"string_value": "1,2"},
            "max_pixels": {"string_value": "100"},
            "max_logit_pixels": {"string_value": "50"},
            "min_side": {"string_value": "2"},
        },
    }
    model = module.TritonPythonModel()
    model.initialize({"model_config": json.dumps(config)})
    options = model.session.get_session_options()
    assert options.enable_cpu_mem_arena is False
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert (model.axes, model.max_pixels, model.min_side) == ((1, 2), 100, 2)
    assert model.max_logit_pixels == 50
