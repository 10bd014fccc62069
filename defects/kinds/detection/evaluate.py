"""Score a detection predictor on a split from its own outputs, and write the report files.

mAP is computed on every detection the predictor's network keeps (`detect_all`, the ranking
COCO needs); precision, recall and F1 on what `predict` returns at the bundle's score
threshold. Both are outputs of the same predictor on the original images, so
`defects predict` reproduces them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from defects.kinds.base import EvalData, EvalSample, Report, split_prefix
from defects.kinds.detection.predictor import DetectionPredictor
from defects.metrics.detection import (
    confusion_matrix,
    make_map_metric,
    per_class_precision_recall,
    pr_curves,
    precision_recall,
    summarize_map,
)
from defects.progress import progress
from defects.reports import write_confusion_matrix, write_metrics_json, write_pr_curves
from defects.results import Detections


def as_target(det: Detections) -> dict[str, torch.Tensor]:
    """Detections as torchmetrics wants them (1-based labels, as the detector's)."""
    return {
        "boxes": torch.as_tensor(det.boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.as_tensor(det.scores, dtype=torch.float32),
        "labels": torch.as_tensor(det.class_ids, dtype=torch.int64) + 1,
    }


def score_detections(
    ranked: list[Detections],
    truths: list[dict[str, np.ndarray]],
    class_names: list[str],
    score_threshold: float,
    prefix: str,
) -> tuple[dict[str, float], dict[str, Any]]:
    """(metrics, {pr_rows, confusion}) of detections against truth {boxes, class_ids}: mAP
    and PR curves on `ranked`; P/R/F1 (pooled and per class) and the confusion matrix
    [predicted, true] (last index background) on `ranked` cut at `score_threshold`."""
    metric = make_map_metric(extended=True)
    targets = [
        {
            "boxes": torch.as_tensor(t["boxes"], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(t["class_ids"], dtype=torch.int64) + 1,
        }
        for t in truths
    ]
    preds = [as_target(d) for d in ranked]
    metric.update(preds, targets)
    result = metric.compute()
    metrics = summarize_map(result, class_names, prefix)
    cut = [as_target(d.above(score_threshold)) for d in ranked]
    metrics.update({f"{prefix}/{k}": v for k, v in precision_recall(cut, targets).items()})
    for name, values in per_class_precision_recall(cut, targets, class_names).items():
        metrics[f"{prefix}/precision/{name}"] = values["precision"]
        metrics[f"{prefix}/recall/{name}"] = values["recall"]
    curves = {
        "pr_rows": pr_curves(result, class_names),
        "confusion": confusion_matrix(cut, targets, len(class_names)),
    }
    return metrics, curves


SCORE_GRID = tuple(round(0.05 * k, 2) for k in range(1, 20))  # 0.05 ... 0.95


def ranked_detections(
    predictor: DetectionPredictor, samples: Sequence[EvalSample]
) -> Iterator[tuple[np.ndarray, Detections]]:
    """(decoded image, every detection the network keeps) of each sample, in order."""
    ranked = predictor.predict_many([s.image for s in samples], step=predictor.detect_all)
    return iter(progress(ranked, "detect", len(samples)))


def tune(predictor: DetectionPredictor, datamodule: EvalData) -> tuple[dict[str, Any], float]:
    """The score threshold with the best validation F1 (IoU 0.5): what `predict` cuts at.

    mAP does not depend on it; precision and recall of the delivered boxes do, and a fixed
    0.5 is arbitrary for a model trained from scratch. Ties keep the higher threshold.
    """
    samples = datamodule.eval_samples("valid")
    ranked = [det for _, det in ranked_detections(predictor, samples)]
    truths = [datamodule.truth(s) for s in samples]
    targets = [
        {
            "boxes": torch.as_tensor(t["boxes"], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(t["class_ids"], dtype=torch.int64) + 1,
        }
        for t in truths
    ]
    best = max(
        SCORE_GRID,
        key=lambda th: (
            precision_recall([as_target(d.above(th)) for d in ranked], targets)["f1"],
            th,
        ),
    )
    f1 = precision_recall([as_target(d.above(best)) for d in ranked], targets)["f1"]
    return {**predictor.thresholds, "score": float(best)}, f1


def evaluate(
    predictor: DetectionPredictor, datamodule: EvalData, split: str, n_samples: int = 8
) -> Report:
    """COCO mAP, P/R/F1 at the score threshold, PR curves and a few pictures of `split`."""
    prefix = split_prefix(split)
    samples = datamodule.eval_samples(split)
    ranked: list[Detections] = []
    truths: list[dict[str, np.ndarray]] = []
    pictures: list[tuple[np.ndarray, dict[str, np.ndarray], dict[str, Any]]] = []
    for sample, (image, det) in zip(samples, ranked_detections(predictor, samples), strict=True):
        truth = datamodule.truth(sample)
        ranked.append(det)
        truths.append(truth)
        if len(pictures) < n_samples:
            shown = det.above(predictor.score_threshold)
            pictures.append(
                (
                    image,
                    truth,
                    {
                        "boxes": shown.boxes,
                        "class_ids": shown.class_ids.tolist(),
                        "scores": shown.scores.tolist(),
                    },
                )
            )
    metrics, curves = score_detections(
        ranked, truths, predictor.class_names, predictor.score_threshold, prefix
    )
    return Report(metrics, prefix, {**curves, "pictures": pictures})


def write_report(
    report: Report, class_names: list[str], metrics_json: Path, plots_dir: Path
) -> list[Path]:
    """metrics JSON (AP, AP50, P, R per class nested), PR CSV + PNG, confusion matrix CSV + PNG
    (normalized per true class), a predictions figure."""
    from defects.plots import plot_predictions

    prefix = report.prefix
    nest = {
        "AP": "AP",
        "AP50": "AP50",
        "precision": "precision_per_class",
        "recall": "recall_per_class",
    }
    outputs = [write_metrics_json(report.metrics, prefix, metrics_json, nest)]
    outputs += write_pr_curves(report.extras["pr_rows"], plots_dir, prefix)
    outputs += write_confusion_matrix(report.extras["confusion"], class_names, plots_dir, prefix)
    if report.extras["pictures"]:
        images, truths, preds = zip(*report.extras["pictures"], strict=True)
        outputs.append(
            plot_predictions(
                images, truths, preds, class_names, plots_dir / f"{prefix}_predictions.png"
            )
        )
    return outputs
