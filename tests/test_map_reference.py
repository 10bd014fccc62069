"""make_map_metric (torchmetrics, faster_coco_eval backend) vs pycocotools on the same input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("pycocotools")

from defects.metrics.coco_reference import (  # noqa: E402
    STAT_KEYS,
    map_differences,
    pycocotools_map,
    synthetic_predictions,
)
from defects.metrics.detection import ap50_per_class, make_map_metric  # noqa: E402

TOLERANCE = 1e-6


def _evaluate(preds: list[dict], targets: list[dict]) -> tuple:
    metric = make_map_metric()
    metric.update(preds, targets)
    return metric, metric.compute()


def _mismatches(diffs: dict[str, float]) -> dict[str, float]:
    return {key: value for key, value in diffs.items() if value > TOLERANCE}


def _metric_uses_coco_thresholds() -> bool:
    metric = make_map_metric()
    return np.array_equal(
        np.array(metric.iou_thresholds, dtype=np.float64), np.linspace(0.5, 0.95, 10)
    ) and np.array_equal(
        np.array(metric.rec_thresholds, dtype=np.float64), np.linspace(0.0, 1.0, 101)
    )


def test_synthetic_predictions_are_deterministic_and_realistic() -> None:
    preds, targets = synthetic_predictions(20, seed=1)
    again, _ = synthetic_predictions(20, seed=1)
    assert len(preds) == len(targets) == 20
    for a, b in zip(preds, again, strict=True):
        assert all(torch.equal(a[key], b[key]) for key in ("boxes", "scores", "labels"))
    labels = torch.cat([t["labels"] for t in targets]).unique().tolist()
    assert set(labels) <= {1, 2, 3, 4} and len(labels) >= 3
    assert any(len(t["boxes"]) == 0 for t in targets)  # defect-free images too
    boxes = torch.cat([p["boxes"] for p in preds])
    assert (boxes[:, 2:] > boxes[:, :2]).all()


def test_make_map_metric_matches_pycocotools_with_the_same_thresholds() -> None:
    preds, targets = synthetic_predictions(20, seed=1)
    metric, result = _evaluate(preds, targets)
    reference = pycocotools_map(preds, targets, metric.iou_thresholds, metric.rec_thresholds)
    diffs = map_differences(result, reference)
    assert len(diffs) == len(STAT_KEYS) + 2 * len(reference["classes"])
    assert not _mismatches(diffs)
    assert 0.0 < reference["map"] < reference["map_50"] < 1.0


@pytest.mark.xfail(
    condition=not _metric_uses_coco_thresholds(),
    strict=True,
    reason="make_map_metric keeps torchmetrics' float32 torch.linspace IoU/recall thresholds "
    "(0.55 -> 0.550000011920929); pass np.linspace(0.5, 0.95, 10).tolist() and "
    "np.linspace(0.0, 1.0, 101).tolist() to MeanAveragePrecision to match COCO",
)
def test_make_map_metric_matches_pycocotools_coco_defaults() -> None:
    preds, targets = synthetic_predictions(20, seed=1)
    _, result = _evaluate(preds, targets)
    assert not _mismatches(map_differences(result, pycocotools_map(preds, targets)))


def test_edge_cases_match() -> None:
    """An image with neither boxes nor predictions, a missed object, a class only predicted."""
    empty = torch.zeros((0, 4))
    no_label = torch.zeros(0, dtype=torch.int64)
    targets = [
        {
            "boxes": torch.tensor([[10.0, 10.0, 50.0, 40.0], [60.0, 5.0, 200.0, 120.0]]),
            "labels": torch.tensor([1, 2]),
        },
        {"boxes": empty, "labels": no_label},
        {"boxes": torch.tensor([[5.0, 5.0, 20.0, 20.0]]), "labels": torch.tensor([1])},
    ]
    preds = [
        {
            "boxes": torch.tensor([[12.0, 11.0, 49.0, 42.0], [0.0, 0.0, 30.0, 30.0]]),
            "scores": torch.tensor([0.9, 0.4]),
            "labels": torch.tensor([1, 3]),
        },
        {"boxes": empty, "scores": torch.zeros(0), "labels": no_label},
        {"boxes": empty, "scores": torch.zeros(0), "labels": no_label},
    ]
    metric, result = _evaluate(preds, targets)
    reference = pycocotools_map(preds, targets, metric.iou_thresholds, metric.rec_thresholds)
    assert reference["classes"] == [1, 2, 3]
    assert reference["map_per_class"][2] == -1.0  # predicted only: no AP, as in COCO
    assert not _mismatches(map_differences(result, reference))


def test_ap50_per_class_matches_pycocotools() -> None:
    preds, targets = synthetic_predictions(20, seed=3)
    metric = make_map_metric(extended=True)
    metric.update(preds, targets)
    result = metric.compute()
    reference = pycocotools_map(preds, targets, metric.iou_thresholds, metric.rec_thresholds)
    ours = ap50_per_class(result)
    assert len(ours) == len(reference["map_50_per_class"]) >= 3
    assert ours == pytest.approx(reference["map_50_per_class"], abs=TOLERANCE)
    assert len(set(np.round(ours, 4))) > 1  # classes differ: the test can tell them apart
    assert np.mean(ours) == pytest.approx(float(result["map_50"]), abs=TOLERANCE)
