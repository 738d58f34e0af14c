import onnx
import torch
from onnx import numpy_helper
from torch.utils.flop_counter import FlopCounterMode

from codistill.export.folding import FoldedSegFormer, inference_form
from codistill.export.onnx_graph import Normalization, export_onnx
from codistill.models import build_student
from tests.conftest import repo_params

NORMALIZATION = Normalization((0.4, 0.4, 0.4), (0.3, 0.3, 0.3))


def trained_like(role: str) -> torch.nn.Module:
    """A student with batch-norm statistics and affine parameters away from their defaults."""
    torch.manual_seed(0)
    student = build_student(getattr(repo_params().models, role), 11).train()
    with torch.no_grad():
        for _ in range(3):
            student(torch.randn(2, 3, 64, 96))
        for module in student.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return student.eval()


def forward_gflop(model: torch.nn.Module, image: torch.Tensor) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(image)
    return counter.get_total_flops() / 1e9


def test_the_folded_vit_computes_the_trained_function_with_far_fewer_flops():
    student = trained_like("vit")
    folded = inference_form(student)
    assert isinstance(folded, FoldedSegFormer)
    image = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        original, fast = student(image), folded(image)
    scale = original.logits.abs().max()
    assert (original.logits - fast.logits).abs().max() <= 1e-5 * scale
    assert torch.allclose(original.dec, fast.dec, atol=1e-5 * original.dec.abs().max())
    assert forward_gflop(folded, image) < 0.6 * forward_gflop(student, image)


def test_a_student_without_a_fold_is_exported_as_it_is():
    cnn = trained_like("cnn")
    assert inference_form(cnn) is cnn


def test_a_fold_that_went_wrong_would_show():
    # the comparison above can fail: a fold that drops the batch-norm shift differs
    student = trained_like("vit")
    folded = FoldedSegFormer(student)
    folded.bias.zero_()
    image = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert (student(image).logits - folded(image).logits).abs().max() > 1e-3


def test_the_exported_vit_graph_has_no_fuse_over_the_concatenated_stages(tmp_path):
    student = trained_like("vit")
    path = export_onnx(student, tmp_path / "vit.onnx", "torchscript", 17, (64, 96), NORMALIZATION)
    graph = onnx.load(str(path)).graph
    in_channels = {numpy_helper.to_array(t).shape[1] for t in graph.initializer if len(t.dims) == 4}
    width = repo_params().models.vit.decoder_channels
    # the 1024-channel fuse convolution is gone; each stage maps to the decoder width itself
    assert 4 * width not in in_channels
    out_channels = [
        numpy_helper.to_array(t).shape[0] for t in graph.initializer if len(t.dims) == 4
    ]
    assert out_channels.count(width) >= 4
