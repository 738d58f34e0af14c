"""Every graph export writes passes ONNX's full checker; an unsorted graph does not."""

import onnx
import pytest
from onnx import TensorProto, helper

from codistill.export.graph_checks import InvalidGraphError, check_graph, sort_topologically


def unsorted_model():
    """A graph computing -relu(x), its two nodes stored in the wrong order."""
    nodes = [helper.make_node("Neg", ["a"], ["y"]), helper.make_node("Relu", ["x"], ["a"])]
    graph = helper.make_graph(
        nodes,
        "unsorted",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_an_unsorted_graph_fails_the_check_and_sorting_mends_it(tmp_path):
    model = unsorted_model()
    path = tmp_path / "graph.onnx"
    onnx.save(model, str(path))
    with pytest.raises(InvalidGraphError, match=r"graph\.onnx: not valid ONNX: .*topologically"):
        check_graph(path)
    sort_topologically(model.graph)
    assert [node.op_type for node in model.graph.node] == ["Relu", "Neg"]
    onnx.save(model, str(path))
    check_graph(path)


def test_a_cycle_cannot_be_sorted():
    model = unsorted_model()
    model.graph.node[1].input[0] = "y"  # Relu now reads Neg's output, which reads Relu's
    with pytest.raises(InvalidGraphError, match="cycle"):
        sort_topologically(model.graph)


def test_every_graph_export_writes_passes_the_full_checker(exported_variants):
    graphs = sorted(exported_variants.glob("*.onnx"))
    names = sorted(f"{r}{v}.onnx" for r in ("cnn", "vit") for v in ("", ".fp16", ".int8"))
    assert [path.name for path in graphs] == names
    for path in graphs:
        onnx.checker.check_model(str(path), full_check=True)
