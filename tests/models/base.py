"""A battery of tests that every student architecture gets by subclassing with a few fields."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from codistill.config import StudentConfig
from codistill.models import StudentOutput, build_student, count_parameters, upsample_logits

NUM_CLASSES = 11


class StudentTests:
    """Subclasses set ``config``, ``parameter_range`` (millions) and ``low_channels``."""

    config: StudentConfig
    parameter_range: tuple[float, float]
    low_channels: int

    @pytest.fixture(scope="class")
    def student(self) -> torch.nn.Module:
        torch.manual_seed(0)
        return build_student(self.config, NUM_CLASSES)

    def test_outputs_at_camvid_native_size(self, student):
        student.eval()
        with torch.no_grad():
            out = student(torch.randn(1, 3, 360, 480))
        assert isinstance(out, StudentOutput)
        assert out.logits.shape == (1, NUM_CLASSES, 90, 120)
        assert out.low.shape == (1, self.low_channels, 90, 120)
        assert out.dec.shape == (1, self.config.decoder_channels, 90, 120)
        assert all(torch.isfinite(t).all() for t in out)

    @pytest.mark.parametrize("size", [(97, 130), (33, 45), (250, 190)])
    def test_sizes_that_are_not_multiples_of_32(self, student, size):
        student.eval()
        with torch.no_grad():
            out = student(torch.randn(2, 3, *size))
        quarter = (math.ceil(size[0] / 4), math.ceil(size[1] / 4))
        assert out.logits.shape == (2, NUM_CLASSES, *quarter)
        assert out.dec.shape[2:] == out.low.shape[2:] == quarter
        assert upsample_logits(out.logits, size).shape == (2, NUM_CLASSES, *size)

    def test_every_parameter_receives_a_gradient(self, student):
        # Two steps: timm zero-initialises residual blocks' last norm, which blocks the
        # gradient of those branches until the first update has moved it.
        student.train()
        optimizer = torch.optim.SGD(student.parameters(), lr=0.05)
        labels = torch.randint(0, NUM_CLASSES, (2, 64, 80))
        labels[:, :4] = 255
        for _ in range(2):
            optimizer.zero_grad()
            out = student(torch.randn(2, 3, 64, 80))
            F.cross_entropy(
                upsample_logits(out.logits, (64, 80)), labels, ignore_index=255
            ).backward()
            assert [n for n, p in student.named_parameters() if p.grad is None] == []
            optimizer.step()
        dead = [
            n
            for n, p in student.named_parameters()
            if not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0
        ]
        assert dead == []

    def test_a_single_image_batch_trains(self, student):
        student.train()
        out = student(torch.randn(1, 3, 48, 64))
        assert torch.isfinite(out.logits).all()

    def test_parameter_count_is_in_the_method_range(self, student):
        low, high = self.parameter_range
        assert low * 1e6 <= count_parameters(student) <= high * 1e6

    def test_eval_mode_is_deterministic(self, student):
        student.eval()
        image = torch.randn(2, 3, 64, 96)
        with torch.no_grad():
            first, second = student(image), student(image)
        for a, b in zip(first, second, strict=True):
            assert torch.equal(a, b)

    def test_training_mode_differs_from_eval_only_through_dropout_and_norm(self, student):
        torch.manual_seed(1)
        image = torch.randn(2, 3, 64, 96)
        student.eval()
        with torch.no_grad():
            eval_out = student(image).logits
            student.train()
            # in training mode, with only the dropout and batch-norm layers in eval mode,
            # the student must compute exactly what it computes in eval mode
            switched = [m for m in student.modules() if mode_dependent(m)]
            assert switched
            for module in switched:
                module.eval()
            masked_out = student(image).logits
            student.train()
            train_out = student(image).logits
        student.eval()
        assert torch.equal(masked_out, eval_out)
        assert not torch.equal(train_out, eval_out)

    def test_config_with_other_decoder_width(self):
        student = build_student(replace(self.config, decoder_channels=64), NUM_CLASSES).eval()
        with torch.no_grad():
            out = student(torch.randn(1, 3, 32, 32))
        assert out.dec.shape[1] == 64


def mode_dependent(module: torch.nn.Module) -> bool:
    """Whether a layer computes differently in training mode: dropout, drop-path, batch norm."""
    kinds = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.dropout._DropoutNd)
    return isinstance(module, kinds) or type(module).__name__ == "DropPath"
