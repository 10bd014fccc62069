"""Per-class precision/recall and the detection confusion matrix, on hand-made cases."""

from __future__ import annotations

import numpy as np
import torch

from defects.metrics.detection import (
    confusion_matrix,
    normalize_columns,
    per_class_precision_recall,
    precision_recall,
)


def boxes(*rows: tuple[float, float, float, float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


# Image 1: a class-1 box found; a class-2 box found as class 1 (wrong class); a false alarm
# of class 2. Image 2: a class-2 box missed, nothing predicted.
PREDS = [
    {
        "boxes": boxes((0, 0, 10, 10), (50, 50, 70, 70), (100, 100, 110, 110)),
        "scores": torch.tensor([0.9, 0.8, 0.7]),
        "labels": torch.tensor([1, 1, 2]),
    },
    {"boxes": boxes(), "scores": torch.tensor([]), "labels": torch.tensor([], dtype=torch.long)},
]
TRUTHS = [
    {"boxes": boxes((1, 1, 10, 10), (50, 50, 71, 70)), "labels": torch.tensor([1, 2])},
    {"boxes": boxes((5, 5, 20, 20)), "labels": torch.tensor([2])},
]


def test_confusion_matrix_puts_each_box_where_it_went() -> None:
    matrix = confusion_matrix(PREDS, TRUTHS, num_classes=2)
    expected = np.array(
        [
            [1, 1, 0],  # predicted class 1: one right, one that was class 2
            [0, 0, 1],  # predicted class 2: one false alarm
            [0, 1, 0],  # background: one class-2 box missed
        ]
    )
    np.testing.assert_array_equal(matrix, expected)
    fractions = normalize_columns(matrix)
    np.testing.assert_allclose(fractions[:, 1], [0.5, 0.0, 0.5])  # class 2's two boxes
    np.testing.assert_allclose(fractions[:, 0], [1.0, 0.0, 0.0])


def test_a_higher_score_takes_the_truth_box_first() -> None:
    pred = {
        "boxes": boxes((0, 0, 10, 10), (0, 0, 10, 10)),
        "scores": torch.tensor([0.3, 0.9]),
        "labels": torch.tensor([2, 1]),
    }
    truth = {"boxes": boxes((0, 0, 10, 10)), "labels": torch.tensor([1])}
    matrix = confusion_matrix([pred], [truth], num_classes=2)
    assert matrix[0, 0] == 1 and matrix[1, 2] == 1 and matrix.sum() == 2


def test_per_class_precision_recall_add_up_to_the_pooled_numbers() -> None:
    per_class = per_class_precision_recall(PREDS, TRUTHS, ["a", "b"])
    # class a: 2 predicted, 1 right -> P 0.5; 1 truth box found -> R 1
    assert per_class["a"]["precision"] == 0.5 and per_class["a"]["recall"] == 1.0
    # class b: 1 predicted, none right; 2 truth boxes, none found
    assert per_class["b"]["precision"] == 0.0 and per_class["b"]["recall"] == 0.0
    pooled = precision_recall(PREDS, TRUTHS)
    assert pooled["precision"] == 1 / 3 and pooled["recall"] == 1 / 3
