"""The session the served model opens inside Triton's Python backend (its stub is faked)."""

import importlib.util
import json
import sys
import types

import numpy as np
import onnx
import pytest
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


class GaugeFamily:
    """The part of the stub's MetricFamily the served model uses: gauges that hold a value."""

    GAUGE = "gauge"

    def __init__(self, name: str, description: str, kind: str) -> None:
        assert kind == self.GAUGE and name.startswith("codistill_") and description

    def Metric(self, labels: dict[str, str]) -> types.SimpleNamespace:  # noqa: N802 (Triton's name)
        gauge = types.SimpleNamespace(labels=labels, value=None)
        gauge.set = lambda value: setattr(gauge, "value", value)
        return gauge


class Tensor:
    """The part of the stub's input tensor the served model reads."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def as_numpy(self) -> np.ndarray:
        return self.array

    def shape(self) -> list[int]:
        return list(self.array.shape)


def test_the_served_session_keeps_a_bounded_arena_and_stops_spinning_when_a_call_returns(
    tmp_path, monkeypatch
):
    # Triton's stub module exists only inside the backend process: a stand-in with what the
    # served model uses (metric families, output tensors, responses)
    stub = types.ModuleType("stub")
    stub.MetricFamily = GaugeFamily
    stub.Tensor = lambda name, value: (name, value)
    stub.InferenceResponse = lambda tensors: tensors
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", stub)
    monkeypatch.setenv("CODISTILL_SERVER_RESTARTS", "2")
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
            "retained_pixels": {"string_value": "16"},
        },
    }
    model = module.TritonPythonModel()
    model.initialize({"model_config": json.dumps(config), "model_name": "codistill_vit"})
    assert model.restarts.labels == {"model": "codistill_vit"} and model.restarts.value == 2.0
    options = model.session.get_session_options()
    assert options.enable_cpu_mem_arena is True
    # spinning between a call's operators, stopped when the call returns (ONNX Runtime takes
    # any key: the names are the ones its library holds, checked against its strings once)
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"
    with pytest.raises(RuntimeError, match="does not have configuration"):
        options.get_session_config_entry("session.intra_op.allow_spinning")  # the default: on
    assert (model.axes, model.max_pixels, model.min_side) == ((1, 2), 100, 2)
    assert model.max_logit_pixels == 50
    # a call of up to retained_pixels keeps the arena's memory; a larger one gives it back
    session, run_options = model.session, []

    def run(names, feeds, options=None):
        run_options.append(options)
        return session.run(names, feeds, options)

    model.session = types.SimpleNamespace(run=run)
    image = np.arange(48, dtype=np.uint8).reshape(1, 4, 4, 3)
    responses = [None]
    for retained in (16, 15):
        model.retained_pixels = retained
        model._answer([0], ("logits",), [Tensor(image)], responses)
        ((name, logits),) = responses[0]
        assert name == "logits" and np.array_equal(logits, image.astype(np.float32))
    assert run_options[0] is None and run_options[1] is model.give_back
    shrink = "memory.enable_memory_arena_shrinkage"
    assert model.give_back.get_run_config_entry(shrink) == "cpu:0"
