"""The threshold objectives (`tune.objective`) on split statistics small enough to check by
hand, the old Kaggle Dice search reproduced exactly, and what the search says its chosen
thresholds score against a direct numpy computation on the masks they serve."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from defects.config import ConfigError
from defects.kinds.gated.thresholds import OBJECTIVES, Thresholds, ThresholdSearch, binarize
from defects.metrics.segmentation import pair_dice
from tests.test_metrics_segmentation import numpy_report


def search_over(objective: str, gate, probs, truth, **grid) -> ThresholdSearch:
    search = ThresholdSearch(objective=objective, **grid)  # type: ignore[arg-type]
    search.update(torch.as_tensor(gate), torch.as_tensor(probs), torch.as_tensor(truth))
    return search


def mostly_clean() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One class, ten 8 x 8 images, one defective: its 4-pixel defect is found exactly;
    images 1 and 2 are clean but get a 6-pixel false blob. The gate passes everything."""
    truth = torch.zeros(10, 1, 8, 8, dtype=torch.bool)
    truth[0, 0, :2, :2] = True
    probs = truth.float() * 0.9
    probs[1:3, 0, 4:6, :3] = 0.9
    return torch.full((10, 1), 0.9), probs, truth


# min area 0: pair Dice 1 (image 0), 0, 0 (the blobs), 1 x 7 -> Kaggle 0.8, defective 1,
# clean 7/9, IoU 4 / (4 + 12). Min area 5 drops the defect and keeps the blobs -> Kaggle
# 0.7. Min area 10 drops everything -> Kaggle 0.9 ("no defect" wins), defective 0, clean 1.
@pytest.mark.parametrize(
    ("objective", "min_area", "score"),
    [
        ("kaggle_dice", 10, 0.9),
        ("defective_dice", 0, (1.0 + 7 / 9) / 2),
        ("class_iou", 0, 4 / 16),
        ("recall_at_fpr", 0, 1 - 2 / 9),  # recall 1 needs the defect; 2 of 9 clean flagged
    ],
)
def test_each_objective_on_a_mostly_clean_split(objective: str, min_area: int, score: float):
    search = search_over(objective, *mostly_clean(), pixel_grid=(0.5,), area_grid=(0, 5, 10))
    best, value = search.best()
    assert best == Thresholds(0.0, [0.5], [min_area])
    assert value == pytest.approx(score)


def test_defective_dice_is_not_won_by_predicting_everything_everywhere() -> None:
    """A model that marks every pixel of every image: the defective-pairs mean alone would
    take it (8/68 > 0 for predicting nothing); the clean half refuses it."""
    gate, _, truth = mostly_clean()
    everything = torch.full_like(truth, 0.9, dtype=torch.float32)
    grid = dict(pixel_grid=(0.5,), area_grid=(0, 100))
    search = search_over("defective_dice", gate, everything, truth, **grid)
    best, value = search.best()
    assert best.min_area == [100]  # predict nothing: clean half 1, defective half 0
    assert value == pytest.approx(0.5)
    everywhere = search.summary(Thresholds(0.0, [0.5], [0]))
    assert everywhere["dice_defective"] == pytest.approx(8 / 68) and everywhere["dice_clean"] == 0


def test_class_iou_weighs_pixels_where_dice_weighs_pairs() -> None:
    """Two defective images: a 60-pixel defect found exactly, and a 2-pixel defect drowned in
    a 40-pixel prediction. Dropping masks under 50 pixels loses the small pair (mean Dice
    (1 + 4/42) / 2 -> 1/2) but pools IoU (60 + 2) / (60 + 40) -> 60 / 62."""
    truth = torch.zeros(2, 1, 10, 10, dtype=torch.bool)
    truth[0, 0, :6] = True
    truth[1, 0, 9, :2] = True
    probs = truth.float() * 0.9
    probs[1, 0, 6:] = 0.9
    gate = torch.ones(2, 1)
    grid = dict(pixel_grid=(0.5,), area_grid=(0, 50))
    for objective, area, score in (
        ("kaggle_dice", 0, (1 + 4 / 42) / 2),
        ("defective_dice", 0, (1 + 4 / 42) / 2),  # no clean pair: the defective mean alone
        ("class_iou", 50, 60 / 62),
    ):
        best, value = search_over(objective, gate, probs, truth, **grid).best()
        assert (best.min_area, value) == ([area], pytest.approx(score)), objective


def gated_split(**grid) -> ThresholdSearch:
    """One class, ten images, every one with a mask (exact on the four defective images, a
    false blob on the six clean): an image is flagged exactly when the gate passes it."""
    truth = torch.zeros(10, 1, 8, 8, dtype=torch.bool)
    truth[:4, 0, 2:4, 2:4] = True
    probs = truth.float() * 0.9
    probs[4:, 0, 5:7, 5:7] = 0.9
    gate = torch.tensor([0.9, 0.8, 0.7, 0.3, 0.6, 0.5, 0.4, 0.2, 0.1, 0.05])[:, None]
    search = ThresholdSearch(pixel_grid=(0.5,), area_grid=(0,), **grid)
    search.update(gate, probs, truth)
    return search


@pytest.mark.parametrize(
    ("objective", "target", "cuts", "gate", "false_alarm"),
    [
        # every defective image kept: the gate must pass 0.3, and with it 0.6, 0.5, 0.4
        ("recall_at_fpr", 1.0, 2, 0.25, 3 / 6),
        # three of four suffice: just under 0.7, no clean image passes
        ("recall_at_fpr", 0.75, 2, 0.65, 0.0),
        # Kaggle, every cut tried: 3 + 6 of 10 pairs right at 0.65 beats 4 + 3 at 0.25
        ("kaggle_dice", 0.75, 64, 0.65, 0.0),
    ],
)
def test_recall_at_fpr_keeps_the_target_recall(
    objective: str, target: float, cuts: int, gate: float, false_alarm: float
) -> None:
    search = gated_split(objective=objective, target_recall=target, gate_cuts=cuts)
    best, value = search.best()
    assert best.gate == pytest.approx(gate)
    rates = search.summary(best)
    assert rates["image_recall"] >= target and rates["image_false_alarm"] == false_alarm
    if objective == "recall_at_fpr":
        assert value == pytest.approx(1 - false_alarm)
        # two cuts on nine gaps: 0.075 and 0.85 only; the cut under 0.3 comes from recall
        assert 0.25 not in search.gate_candidates()


def test_recall_out_of_reach_takes_the_best_recall_and_says_so(caplog) -> None:
    gate, probs, truth = mostly_clean()
    probs[0] = 0.0  # the defect is never predicted: image recall is 0 whatever the cut
    search = search_over("recall_at_fpr", gate, probs, truth, pixel_grid=(0.5,), area_grid=(0, 10))
    with caplog.at_level(logging.WARNING, logger="defects"):
        best, value = search.best()
    assert "out of reach" in caplog.text
    assert best.min_area == [10] and value == 1.0  # recall 0 either way: no false alarm


def random_split(seed: int, n: int = 24, k: int = 3) -> tuple[torch.Tensor, ...]:
    """Noisy probabilities; on each image one class holds a defect (found at some
    confidence, 40 %) or a false blob; the gate leans towards the defective images."""
    gen = torch.Generator().manual_seed(seed)
    truth = torch.zeros(n, k, 32, 48, dtype=torch.bool)
    probs = torch.rand(n, k, 32, 48, generator=gen) * 0.45
    for i in range(n):
        c = int(torch.randint(k, (1,), generator=gen))
        y, x, h, w = (int(v) for v in torch.randint(1, 24, (4,), generator=gen))
        level = 0.35 + 0.6 * float(torch.rand(1, generator=gen))
        if torch.rand(1, generator=gen) < 0.4:
            truth[i, c, y : y + h, x : x + w] = True
            probs[i, c, y : y + h, x : x + w] += level
        else:
            probs[i, c, y : y + h // 2, x : x + w // 2] += level
    gate = truth.flatten(1).any(1).float()[:, None] * 0.3 + torch.rand(n, k, generator=gen)
    return gate, probs.clamp(0, 1), truth


def kaggle_rule(
    search: ThresholdSearch, gate: torch.Tensor, probs: torch.Tensor, truth: torch.Tensor
) -> tuple[Thresholds, float]:
    """The search as it was before objectives, from the served masks: per class the first
    (pixel threshold, min area) in grid order with the best mean pair Dice, and across
    gates the best mean over classes, a later (higher) gate winning a tie."""
    best: tuple[float, Thresholds] | None = None
    for g in search.gate_candidates():
        picks = []
        for c in range(truth.shape[1]):
            top: tuple[float, float, int] | None = None
            for p in search.pixel_grid:
                for a in search.area_grid:
                    masks = binarize(gate, probs[:, c : c + 1], Thresholds(g, [p], [a]))
                    d = float(pair_dice(masks, truth[:, c : c + 1]).mean())
                    if top is None or d > top[0]:
                        top = (d, p, a)
            assert top is not None
            picks.append(top)
        score = float(np.mean([d for d, _, _ in picks]))
        if best is None or score >= best[0] - 1e-12:
            best = (score, Thresholds(g, [p for _, p, _ in picks], [a for _, _, a in picks]))
    assert best is not None
    return best[1], best[0]


# What the search of commit c014c2a (before objectives) returned on these splits.
BEFORE_OBJECTIVES = {
    2: ({"gate": 0.859871, "pixel": [0.5, 0.5, 0.5], "min_area": [0, 8, 128]}, 0.96564715),
    3: ({"gate": 0.686196, "pixel": [0.5, 0.5, 0.7], "min_area": [32, 8, 32]}, 0.94774057),
    4: ({"gate": 0.761973, "pixel": [0.5, 0.5, 0.5], "min_area": [32, 0, 32]}, 0.96674850),
}


@pytest.mark.parametrize("seed", sorted(BEFORE_OBJECTIVES))
def test_kaggle_dice_is_the_search_it_replaced(seed: int) -> None:
    gate, probs, truth = random_split(seed)
    search = ThresholdSearch(area_grid=(0, 8, 32, 128, 512), gate_cuts=8)  # default objective
    search.update(gate[:10], probs[:10], truth[:10])
    search.update(gate[10:], probs[10:], truth[10:])
    assert search.objective == "kaggle_dice"
    best, score = search.best()
    expected, expected_score = BEFORE_OBJECTIVES[seed]
    assert best.as_dict() == expected and score == pytest.approx(expected_score, abs=1e-8)
    rule, rule_score = kaggle_rule(search, gate, probs, truth)
    assert best == rule and score == pytest.approx(rule_score, abs=1e-12)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_summary_is_what_binarize_scores(objective: str) -> None:
    """At the chosen thresholds the search's counts give the numbers of the served masks,
    and its score is the objective's number among them."""
    gate, probs, truth = random_split(7)
    search = ThresholdSearch(objective, 0.8, area_grid=(0, 16, 64), gate_cuts=6)  # type: ignore[arg-type]
    search.update(gate, probs, truth)
    best, score = search.best()
    summary = search.summary(best)
    expected = numpy_report(binarize(gate, probs, best).numpy(), truth.numpy())
    for key, value in summary.items():
        assert value == pytest.approx(expected[key], abs=1e-12), key
    objective_value = {
        "kaggle_dice": summary["dice"],
        "defective_dice": (summary["dice_defective"] + summary["dice_clean"]) / 2,
        "class_iou": summary["mean_iou"],
        "recall_at_fpr": 1 - summary["image_false_alarm"],
    }[objective]
    assert score == pytest.approx(objective_value, abs=1e-12)
    if objective == "recall_at_fpr":
        assert summary["image_recall"] >= 0.8


def test_bad_objective_and_recall_are_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"tune\.objective: 'dice'.*kaggle_dice, defective_dice"):
        ThresholdSearch(objective="dice")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"tune\.target_recall: 1\.5"):
        ThresholdSearch(target_recall=1.5)
