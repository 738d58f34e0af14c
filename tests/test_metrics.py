import numpy as np
import pytest
import torch

from codistill.evaluation.metrics import confusion_matrix, segmentation_scores


def test_confusion_matrix_counts_rows_as_truth_and_skips_ignore():
    labels = torch.tensor([[0, 0, 1, 255], [2, 2, 2, 1]])
    predictions = torch.tensor([[0, 1, 1, 2], [2, 2, 0, 1]])
    assert confusion_matrix(predictions, labels, 4).tolist() == [
        [1, 1, 0, 0],
        [0, 2, 0, 0],
        [1, 0, 2, 0],
        [0, 0, 0, 0],
    ]


def test_scores_against_a_hand_computed_confusion_with_a_class_that_never_appears():
    # classes: 0 seen and predicted, 1 seen, 2 predicted but never labelled, 3 never anywhere
    confusion = np.array(
        [
            [6, 2, 2, 0],
            [1, 3, 0, 0],
            [0, 0, 0, 0],
            [0, 0, 0, 0],
        ]
    )
    scores = segmentation_scores(confusion)
    iou0 = 6 / (10 + 7 - 6)
    iou1 = 3 / (4 + 5 - 3)
    assert scores["per_class_iou"] == [pytest.approx(iou0), pytest.approx(iou1), 0.0, None]
    assert scores["miou"] == pytest.approx((iou0 + iou1 + 0.0) / 3)
    assert scores["pixel_accuracy"] == pytest.approx(9 / 14)


def test_empty_confusion_scores_zero_not_nan():
    scores = segmentation_scores(np.zeros((3, 3)))
    assert scores == {"miou": 0.0, "pixel_accuracy": 0.0, "per_class_iou": [None] * 3}
