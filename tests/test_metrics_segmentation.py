"""Kaggle Dice against a direct per-pair reference, including the empty and full cases; the
image-level rates and the gated report's every number against numpy."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from defects.metrics.segmentation import (
    SeverstalDice,
    false_alarm_at_recall,
    image_rates,
    pair_dice,
)


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
    assert result["dice_clean"].item() == 1.0  # the one clean pair left empty
    assert result["dice/a"].item() == pytest.approx(result["dice"].item())


def test_all_empty_predictor_cannot_hide_behind_the_kaggle_mean() -> None:
    metric = SeverstalDice(["a"])
    metric.update(*masks(*[(EMPTY, EMPTY)] * 9, (EMPTY, LEFT)))
    result = metric.compute()
    assert result["dice"].item() == pytest.approx(0.9)
    assert result["dice_defective"].item() == 0.0
    metric.update(*masks((LEFT, EMPTY)))  # a false alarm on a clean pair
    assert metric.compute()["dice_clean"].item() == pytest.approx(9 / 10)


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="N, C, H, W"):
        pair_dice(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))


def numpy_report(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """The report's numbers, one pair and one class at a time."""
    n, k = truth.shape[:2]
    dice = np.ones((n, k))
    for i in range(n):
        for c in range(k):
            p, t = pred[i, c], truth[i, c]
            if p.sum() + t.sum():
                dice[i, c] = 2 * (p & t).sum() / (p.sum() + t.sum())
    defective = truth.reshape(n, k, -1).any(-1)
    ious = []
    for c in range(k):
        union = (pred[:, c] | truth[:, c]).sum()
        ious.append((pred[:, c] & truth[:, c]).sum() / union if union else 1.0)
    flagged, bad = pred.reshape(n, -1).any(1), defective.any(1)
    return {
        "dice": dice.mean(),
        "dice_defective": dice[defective].mean(),
        "dice_clean": dice[~defective].mean(),
        "mean_iou": float(np.mean(ious)),
        "iou": ious,
        "image_recall": flagged[bad].mean(),
        "image_false_alarm": flagged[~bad].mean(),
    }


def test_image_rates_and_false_alarm_at_recall_match_numpy() -> None:
    rng = np.random.default_rng(3)
    scores, defective = rng.random(200), rng.random(200) < 0.2
    scores[defective] += 0.3
    flagged = scores > 0.6
    rates = image_rates(flagged, defective)
    assert rates["image_recall"] == np.mean(flagged[defective])
    assert rates["image_false_alarm"] == np.mean(flagged[~defective])
    for recall in (0.5, 0.9, 0.99, 1.0):
        # the highest cut that flags `recall` of the defective images, and what it rejects
        need = int(np.ceil(recall * defective.sum() - 1e-9))
        cut = np.sort(scores[defective])[::-1][need - 1]
        expected = np.mean(scores[~defective] >= cut)
        assert false_alarm_at_recall(scores, defective, recall) == pytest.approx(expected)
    assert image_rates(np.zeros(3, bool), np.zeros(3, bool)) == {
        "image_recall": 1.0,  # nothing to find, nothing missed
        "image_false_alarm": 0.0,
    }


def test_report_shows_every_objective_as_numpy_computes_it() -> None:
    """The gated kind's `evaluate` on a stand-in predictor whose masks are known: Kaggle,
    defective and clean Dice, per-class and mean IoU, image recall and false-alarm rate,
    all as numpy computes them."""
    from defects.kinds.gated.evaluate import evaluate

    rng = np.random.default_rng(11)
    n, names = 16, ["a", "b", "c"]
    truth = np.zeros((n, len(names), 16, 24), bool)
    pred = np.zeros_like(truth)
    for i in range(n):
        c, (y, x) = rng.integers(len(names)), rng.integers(0, 8, 2)
        if rng.random() < 0.5:  # a defect, found (shifted, cut short) or missed
            truth[i, c, y : y + 6, x : x + 9] = True
            pred[i, c, y + 1 : y + 7, x : x + 7] = rng.random() < 0.8
        if rng.random() < 0.3:  # a false blob
            pred[i, rng.integers(len(names)), 10:14, 2:8] = True
    gate = rng.random(n) + truth.reshape(n, -1).any(1) * 0.3
    samples = [SimpleNamespace(image=i) for i in range(n)]
    predictor = SimpleNamespace(
        class_names=names,
        tuned=SimpleNamespace(gate=0.0),
        thresholds={},
        meta={},
        predict_many=lambda images: [
            (None, SimpleNamespace(masks=pred[i], gate=float(gate[i]))) for i in images
        ],
    )
    data = SimpleNamespace(eval_samples=lambda split: samples, truth=lambda s: truth[s.image])
    metrics = evaluate(predictor, data, "test").metrics  # type: ignore[arg-type]
    expected = numpy_report(pred, truth)
    assert expected["image_false_alarm"] > 0.0 and expected["mean_iou"] < 1.0  # not trivial
    for key in ("dice", "dice_defective", "dice_clean", "mean_iou"):
        assert metrics[f"test/{key}"] == pytest.approx(expected[key], abs=1e-6), key
    for name, value in zip(names, expected["iou"], strict=True):
        assert metrics[f"test/iou/{name}"] == pytest.approx(value, abs=1e-6), name
    assert metrics["test/image_recall"] == expected["image_recall"]
    assert metrics["test/image_false_alarm"] == expected["image_false_alarm"]
    defective = truth.reshape(n, -1).any(1)
    at_99 = false_alarm_at_recall(gate, defective, 0.99)
    assert metrics["test/gate_false_alarm_at_99_recall"] == at_99
