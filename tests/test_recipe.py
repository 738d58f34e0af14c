"""The recipe's pieces: class weights, learning-rate warm-up, and the inference scale."""

import pytest
import torch

from codistill.config import ConfigError, parse_params
from codistill.data.spec import IGNORE_INDEX
from codistill.distill import StudentPair
from codistill.distill.supervised import class_weights, supervised_loss
from codistill.engine.optim import poly_schedule
from codistill.models import StudentOutput, segment
from tests.conftest import over_repo


def test_class_weights_follow_median_frequency_to_the_given_power():
    counts = [100, 400, 25, 0]
    assert torch.equal(class_weights(counts, 0.0)[:3], torch.ones(3))
    full = class_weights(counts, 1.0)
    # median of the seen counts is 100: weights 1, 1/4, 4; the unseen class gets the largest
    assert torch.allclose(full, torch.tensor([1.0, 0.25, 4.0, 4.0]))
    assert torch.allclose(class_weights(counts, 0.5), torch.tensor([1.0, 0.5, 2.0, 2.0]))
    with pytest.raises(ValueError, match="at least one labelled pixel"):
        class_weights([0, 0], 1.0)


def test_weighted_supervised_loss_is_the_weighted_mean_of_pixel_ce():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 2, 2)
    labels = torch.tensor([[[0, 1], [2, IGNORE_INDEX]]])
    out = StudentOutput(logits, logits, logits)
    pair = StudentPair(out, out, labels)
    weights = torch.tensor([1.0, 2.0, 4.0])
    ce = pair.cnn_ce[0].flatten()[:3]
    expected = 2 * (ce * weights).sum() / weights.sum()  # both students have the same CE
    assert torch.allclose(supervised_loss(pair, weights), expected)
    assert torch.allclose(supervised_loss(pair, torch.ones(3)), supervised_loss(pair))


def test_poly_schedule_ramps_up_over_its_warmup():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    schedule = poly_schedule(optimizer, total_iters=100, power=1.0, warmup_iters=4)
    rates = []
    for _ in range(6):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[:4] == pytest.approx([0.25 * 1.0, 0.5 * 0.99, 0.75 * 0.98, 1.0 * 0.97])
    assert rates[4:] == pytest.approx([0.96, 0.95])


def test_segment_runs_the_student_at_the_scale_and_answers_at_the_input_size():
    seen = []

    def student(images):
        seen.append(tuple(images.shape[-2:]))
        return StudentOutput(images[:, :2, ::4, ::4], images, images)

    logits = segment(student, torch.randn(1, 3, 64, 96), 0.5)
    assert seen == [(32, 48)] and logits.shape == (1, 2, 64, 96)


def test_an_evaluation_scale_outside_the_training_range_is_refused():
    with pytest.raises(ConfigError, match=r"evaluate\.scale: 0\.375 lies outside train\.scale"):
        parse_params(over_repo({"train": {"scale": [0.4, 0.6]}}), "params")
    parsed = parse_params(
        over_repo({"train": {"scale": [0.4, 0.6]}, "evaluate": {"scale": 0.5}}), "p"
    )
    assert parsed.evaluate.scale == 0.5
