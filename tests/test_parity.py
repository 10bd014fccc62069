"""Pairing two backends' detections is free of NMS order and of rounding at sort keys."""

from __future__ import annotations

import numpy as np
import pytest

from defects.parity import max_differences, pair_detections
from defects.results import Detections


def _detections(boxes: list[list[float]], classes: list[int], scores: list[float]) -> Detections:
    names = ["a", "b"]
    return Detections(
        np.asarray(boxes, np.float32).reshape(-1, 4),
        [names[c] for c in classes],
        np.asarray(classes),
        np.asarray(scores, np.float32),
        names,
    )


def test_pairs_equal_scores_in_any_order() -> None:
    """The failure that sorting by (class, rounded score, box) had: two boxes of one class
    whose scores round differently on the two backends come out swapped."""
    a = _detections(
        [[24, 72, 40, 88], [24, 56, 40, 72], [1, 2, 3, 4]], [0, 0, 1], [0.50004, 0.5, 0.9]
    )
    b = _detections(
        [[24, 56.0005, 40, 72], [1, 2, 3, 4], [24, 72, 40, 88.0002]], [0, 1, 0], [0.49996, 0.9, 0.5]
    )
    ia, ib = pair_detections(a, b)
    assert ib.tolist() == [2, 0, 1]
    box, score = max_differences(a, b)
    assert box == pytest.approx(5e-4, abs=1e-5) and score == pytest.approx(4e-5, abs=1e-6)


def test_refuses_count_and_class_mismatches() -> None:
    a = _detections([[0, 0, 1, 1]], [0], [0.5])
    with pytest.raises(ValueError, match="counts differ"):
        pair_detections(a, _detections([], [], []))
    with pytest.raises(ValueError, match="no partner"):
        pair_detections(a, _detections([[0, 0, 1, 1]], [1], [0.5]))
    assert max_differences(_detections([], [], []), _detections([], [], [])) == (0.0, 0.0)
