"""Kaggle Dice against a direct per-pair reference, including the empty and full cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from defects.metrics.segmentation import SeverstalDice, pair_dice


def reference_dice(pred: np.ndarray, target: np.ndarray) -> float:
    """The competition's definition, one pair at a time."""
    if pred.sum() == 0 and target.sum() == 0:
        return 1.0
    return 2.0 * np.logical_and(pred, target).sum() / (pred.sum() + target.sum())


def masks(*pairs: tuple[np.ndarray, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    pred = torch.tensor(np.stack([p for p, _ in pairs]))[:, None]
    target = torch.tensor(np.stack([t for _, t in pairs]))[:, None]
    return pred, target


EMPTY = np.zeros((4, 6), bool)
FULL = np.ones((4, 6), bool)
LEFT = np.zeros((4, 6), bool)
LEFT[:, :3] = True


@pytest.mark.parametrize(
    ("pred", "target", "expected"),
    [
        (EMPTY, EMPTY, 1.0),
        (EMPTY, FULL, 0.0),
        (FULL, EMPTY, 0.0),
        (FULL, FULL, 1.0),
        (LEFT, FULL, 2 * 12 / 36),
        (LEFT, LEFT, 1.0),
        (LEFT, ~LEFT, 0.0),
    ],
)
def test_pair_dice_known_cases(pred: np.ndarray, target: np.ndarray, expected: float) -> None:
    p, t = masks((pred, target))
    assert pair_dice(p, t).item() == pytest.approx(expected)


def test_pair_dice_matches_reference_on_random_masks() -> None:
    rng = np.random.default_rng(0)
    pred = rng.random((5, 4, 16, 24)) > rng.uniform(0.5, 1.0, (5, 4, 1, 1))
    target = rng.random((5, 4, 16, 24)) > rng.uniform(0.5, 1.0, (5, 4, 1, 1))
    pred[0, 1] = target[0, 1] = False  # an empty-empty pair
    got = pair_dice(torch.tensor(pred), torch.tensor(target)).numpy()
    expected = np.array(
        [[reference_dice(pred[n, c], target[n, c]) for c in range(4)] for n in range(5)]
    )
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_metric_accumulates_kaggle_mean_and_defective_pairs() -> None:
    metric = SeverstalDice(["a"])
    # batch 1: empty-empty (1.0) and half overlap (0.5); batch 2: missed defect (0.0)
    metric.update(*masks((EMPTY, EMPTY), (LEFT, FULL)))
    metric.update(*masks((EMPTY, LEFT)))
    result = metric.compute()
    assert result["dice"].item() == pytest.approx((1.0 + 2 * 12 / 36 + 0.0) / 3)
    assert result["dice_defective"].item() == pytest.approx((2 * 12 / 36 + 0.0) / 2)
    assert result["dice/a"].item() == pytest.approx(result["dice"].item())


def test_all_empty_predictor_cannot_hide_behind_the_kaggle_mean() -> None:
    metric = SeverstalDice(["a"])
    metric.update(*masks(*[(EMPTY, EMPTY)] * 9, (EMPTY, LEFT)))
    result = metric.compute()
    assert result["dice"].item() == pytest.approx(0.9)
    assert result["dice_defective"].item() == 0.0


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="N, C, H, W"):
        pair_dice(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
