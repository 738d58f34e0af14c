"""codistill.study: per-image counts, paired t-intervals, the two-level bootstrap and Holm."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import t

from codistill.evaluation.metrics import confusion_matrix, mean_iou, segmentation_scores
from codistill.evaluation.scoring import tally_predictions
from codistill.study.image_counts import (
    ImageCounts,
    counts_path,
    read_image_counts,
    write_image_counts,
)
from codistill.study.statistics import (
    bootstrap_interval,
    holm_adjusted,
    paired_interval,
    paired_p_value,
)

K = 4


def test_paired_interval_is_the_t_interval_of_the_seedwise_differences():
    ours = {0: 31.0, 1: 32.2, 2: 32.6, 3: 40.0}
    reference = {0: 30.0, 1: 31.0, 2: 31.5, 4: 10.0}  # seeds 3 and 4 are not paired
    interval = paired_interval(ours, reference)
    differences = np.array([1.0, 1.2, 1.1])
    half = t.ppf(0.975, 2) * differences.std(ddof=1) / math.sqrt(3)
    assert interval.n == 3
    assert (interval.low, interval.mean, interval.high) == pytest.approx(
        (1.1 - half, 1.1, 1.1 + half)
    )
    assert interval.verdict() == "gain"
    assert paired_interval({0: 1.0, 1: 2.0}, {0: 2.0, 1: 0.0}).verdict() == "no separation"
    assert paired_interval({0: 1.0}, {0: 0.0}).verdict() == "too few seeds"
    assert paired_interval({0: 1.0}, {1: 0.0}) is None
    with pytest.raises(ValueError, match="two seeds"):
        paired_p_value({0: 1.0}, {0: 0.0})


def test_holm_multiplies_the_ith_smallest_p_by_m_minus_i_and_keeps_the_order():
    p = {"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005}
    # d: 4 * 0.005; a: 3 * 0.01; c: 2 * 0.03; b: 1 * 0.04 raised to c's 0.06 (step-down order)
    assert holm_adjusted(p) == pytest.approx({"d": 0.02, "a": 0.03, "c": 0.06, "b": 0.06})
    assert holm_adjusted({"x": 0.5, "y": 0.6}) == {"x": 1.0, "y": 1.0}


def random_confusions(generator, images, classes=K):
    """Per-image K×K confusion matrices; the last class is never labelled nor predicted."""
    confusions = generator.integers(0, 50, size=(images, classes, classes))
    confusions[:, -1, :] = 0
    confusions[:, :, -1] = 0
    return confusions


def counts_of(confusions):
    diagonal = np.diagonal(confusions, axis1=-2, axis2=-1)
    union = confusions.sum(-2) + confusions.sum(-1) - diagonal
    return np.stack([diagonal, union], axis=-2)


def test_counts_give_the_evaluation_miou_and_can_leave_a_class_out():
    confusions = random_confusions(np.random.default_rng(1), images=6)
    counts = counts_of(confusions)
    scores = segmentation_scores(confusions.sum(0))
    seen = [v for v in scores["per_class_iou"] if v is not None]  # computed on its own
    assert mean_iou(counts.sum(0)) == pytest.approx(scores["miou"]) == pytest.approx(np.mean(seen))
    assert scores["per_class_iou"][-1] is None  # an unseen class counts in neither mean
    kept = [v for v in scores["per_class_iou"][1:] if v is not None]
    assert mean_iou(counts.sum(0), leave_out=0) == pytest.approx(np.mean(kept))


def test_the_tally_keeps_each_images_counts_and_they_add_up_to_the_split():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, K, (3, 5, 7), generator=generator)
    labels[1, 0, 0] = 255  # an ignored pixel
    predictions = torch.randint(0, K, (3, 5, 7), generator=generator)
    guesses = iter(predictions)
    tally = tally_predictions({"m": lambda _: next(guesses)}, [(None, y) for y in labels], K)["m"]
    counts = tally.image_counts()
    assert counts.shape == (3, 2, K) and counts.dtype == np.int64
    for image in range(3):  # each image's own counts, not a running total
        own = confusion_matrix(predictions[image], labels[image], K).numpy()
        np.testing.assert_array_equal(counts[image], counts_of(own))
    confusion = tally.confusion.numpy()
    assert mean_iou(counts.sum(0)) == pytest.approx(segmentation_scores(confusion)["miou"])


def test_image_counts_round_trip_and_refuse_what_they_cannot_hold(tmp_path):
    counts = counts_of(random_confusions(np.random.default_rng(2), images=3))
    stored = ImageCounts({"val": ("a", "b", "c")}, {("val", "cnn"): counts})
    path = counts_path(tmp_path / "ours-seed5.json")
    assert path.name == "ours-seed5.images.npz"
    write_image_counts(path, stored)
    back = read_image_counts(path)
    assert back.ids == {"val": ("a", "b", "c")}
    np.testing.assert_array_equal(back.counts[("val", "cnn")], counts)
    with pytest.raises(ValueError, match="for 2 images"):
        ImageCounts({"val": ("a", "b")}, {("val", "cnn"): counts})
    with pytest.raises(ValueError, match="outside"):
        write_image_counts(path, ImageCounts({"val": ("a", "b", "c")}, {("val", "cnn"): -counts}))
    np.testing.assert_array_equal(read_image_counts(path).counts[("val", "cnn")], counts)
    with pytest.raises(ValueError, match="split 'test', which has no ids"):
        ImageCounts({"val": ("a", "b", "c")}, {("test", "cnn"): counts})
    broken = tmp_path / "broken.images.npz"
    broken.write_bytes(b"not an npz")
    with pytest.raises(ValueError, match=r"broken\.images\.npz: not a per-image counts file"):
        read_image_counts(broken)


def study(generator, seeds=5, images=40):
    """S×N×2×K counts of a reference method."""
    return np.stack([counts_of(random_confusions(generator, images)) for _ in range(seeds)])


def test_bootstrap_of_identical_methods_is_zero_and_repeatable():
    reference = study(np.random.default_rng(3))
    interval = bootstrap_interval(reference, reference.copy(), resamples=2000)
    assert (interval.mean, interval.low, interval.high) == (0.0, 0.0, 0.0)
    ours = reference.copy()
    ours[:, :, 0, 0] += 3  # more of class 0 found in every image
    ours[:, :, 1, 0] += 3
    first = bootstrap_interval(ours, reference, resamples=2000)
    assert first == bootstrap_interval(ours, reference, resamples=2000)
    observed = 100 * (mean_iou(ours.sum(1)) - mean_iou(reference.sum(1))).mean()
    assert first.mean == pytest.approx(observed) and first.separated and first.low > 0
    with pytest.raises(ValueError, match="S×N×2×K"):
        bootstrap_interval(ours[:, :5], reference)


def test_bootstrap_resamples_seeds_and_images_together():
    generator = np.random.default_rng(4)
    one_run = counts_of(random_confusions(generator, images=40))
    same_runs = np.stack([one_run] * 4)
    # seeds that disagree: two gain on class 0, two lose; every image alike within a run
    ours = same_runs.copy()
    ours[:2, :, 0, 0] = np.minimum(ours[:2, :, 0, 0] + 10, ours[:2, :, 1, 0])
    ours[2:, :, 0, 0] = 0
    interval = bootstrap_interval(ours, same_runs, resamples=4000)
    assert interval.low < 0 < interval.high  # the seeds' disagreement reaches the interval
    # seeds that agree, images that differ: the image draw alone gives a spread
    varied = study(generator, seeds=4)
    better = varied.copy()
    better[:, ::2, 0, 0] = better[:, ::2, 1, 0]  # every other image: class 0 perfect
    spread = bootstrap_interval(better, varied, resamples=4000)
    assert spread.high - spread.low > 0.1 and spread.low > 0
