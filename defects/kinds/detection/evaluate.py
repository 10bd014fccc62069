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

from defects.examples import Candidate, Panel, Slot, pick_examples, picked_indices
from defects.kinds.base import EvalData, EvalSample, Report, split_prefix
from defects.kinds.detection.predictor import DetectionPredictor
from defects.metrics.detection import (
    confusion_matrix,
    make_map_metric,
    match_boxes,
    per_class_precision_recall,
    pr_curves,
    precision_recall,
    summarize_map,
)
from defects.progress import progress
from defects.reports import (
    threshold_curve,
    write_class_bars,
    write_confusion_matrix,
    write_metrics_json,
    write_pr_curves,
)
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
    targets = [truth_target(t) for t in truths]
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


def truth_target(truth: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Ground truth {boxes, class_ids} as torchmetrics wants it (1-based labels)."""
    return {
        "boxes": torch.as_tensor(truth["boxes"], dtype=torch.float32).reshape(-1, 4),
        "labels": torch.as_tensor(truth["class_ids"], dtype=torch.int64) + 1,
    }


def ranked_detections(
    predictor: DetectionPredictor, samples: Sequence[EvalSample]
) -> Iterator[tuple[np.ndarray, Detections]]:
    """(decoded image, every detection the network keeps) of each sample, in order."""
    ranked = predictor.predict_many([s.image for s in samples], step=predictor.detect_all)
    return iter(progress(ranked, "detect", len(samples)))


def tune(
    predictor: DetectionPredictor, datamodule: EvalData
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The score threshold with the best validation F1 (IoU 0.5): what `predict` cuts at;
    and the F1 / precision / recall curve it was chosen from (`threshold_curve`).

    mAP does not depend on it; precision and recall of the delivered boxes do, and a fixed
    0.5 is arbitrary for a model trained from scratch. Ties keep the higher threshold.
    """
    samples = datamodule.eval_samples("valid")
    ranked = [det for _, det in ranked_detections(predictor, samples)]
    targets = [truth_target(datamodule.truth(s)) for s in samples]
    rates = [
        precision_recall([as_target(d.above(th)) for d in ranked], targets) for th in SCORE_GRID
    ]
    best = max(range(len(SCORE_GRID)), key=lambda k: (rates[k]["f1"], SCORE_GRID[k]))
    series = {name: [r[name.lower()] for r in rates] for name in ("F1", "precision", "recall")}
    curve = threshold_curve("score threshold", "", "F1", SCORE_GRID, series, SCORE_GRID[best])
    return {**predictor.thresholds, "score": float(SCORE_GRID[best])}, [curve]


#: the example figure's rows: per class the best hit, the worst miss and the most confident
#: false alarm; then the clean image that came closest to a false alarm
CLASS_SLOTS = (
    Slot("hit", True, "{group}: best hit (IoU {value:.2f})", "{group}: no box found"),
    Slot("miss", False, "{group}: worst miss (IoU {value:.2f})", "{group}: no box missed"),
    Slot(
        "false_alarm", True, "{group}: false alarm (score {value:.2f})", "{group}: no false alarm"
    ),
)
CLEAN_SLOT = Slot(
    "clean",
    True,
    "clean image, left empty (top score {value:.2f})",
    "no defect-free image\nleft empty in this split",
)


def box_candidates(
    index: int,
    ranked: Detections,
    truth: dict[str, np.ndarray],
    score_threshold: float,
    iou_threshold: float = 0.5,
) -> list[Candidate]:
    """What image `index` could be shown for: each truth box as a hit or a miss (its IoU),
    each delivered box matching none as a false alarm (its score), or, without either, a
    clean image left empty (its best score under the threshold)."""
    shown = ranked.above(score_threshold)
    matching = match_boxes(as_target(shown), truth_target(truth), iou_threshold)
    names = ranked.class_names
    found: list[Candidate] = []
    for j, (box, class_id) in enumerate(zip(truth["boxes"], truth["class_ids"], strict=True)):
        outcome = "hit" if matching.truth_matched[j] else "miss"
        value = float(matching.truth_iou[j])
        found.append(Candidate(index, names[int(class_id)], outcome, value, as_box(box)))
    for i in np.flatnonzero(~matching.pred_matched):
        name, score = names[int(shown.class_ids[i])], float(shown.scores[i])
        found.append(Candidate(index, name, "false_alarm", score, as_box(shown.boxes[i])))
    if not found:
        top = float(ranked.scores.max()) if len(ranked) else 0.0
        found.append(Candidate(index, "", "clean", top))
    return found


def as_box(box: Any) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return x1, y1, x2, y2


def evaluate(predictor: DetectionPredictor, datamodule: EvalData, split: str) -> Report:
    """COCO mAP, P/R/F1 at the score threshold, PR curves, the confusion matrix and the
    images worth looking at (`box_candidates`, picked by `pick_examples`)."""
    prefix = split_prefix(split)
    samples = datamodule.eval_samples(split)
    threshold = predictor.score_threshold
    ranked: list[Detections] = []
    truths: list[dict[str, np.ndarray]] = []
    candidates: list[Candidate] = []
    for index, (sample, (_, det)) in enumerate(
        zip(samples, ranked_detections(predictor, samples), strict=True)
    ):
        truth = datamodule.truth(sample)
        ranked.append(det)
        truths.append(truth)
        candidates += box_candidates(index, det, truth, threshold)
    metrics, curves = score_detections(ranked, truths, predictor.class_names, threshold, prefix)
    rows = pick_examples(
        candidates, [*((name, CLASS_SLOTS) for name in predictor.class_names), ("", [CLEAN_SLOT])]
    )
    pictures = {
        i: (predictor.decode(samples[i].image), truths[i], ranked[i].above(threshold))
        for i in picked_indices(rows)
    }
    extras = {
        **curves,
        "examples": rows,
        "pictures": pictures,
        "score_threshold": threshold,
        "tuning": list(predictor.meta.get("tuning") or []),
    }
    return Report(metrics, prefix, extras)


def write_report(
    report: Report, class_names: list[str], metrics_json: Path, plots_dir: Path
) -> list[Path]:
    """metrics JSON (AP, AP50, P, R per class nested), PR CSV + PNG, confusion matrix CSV + PNG
    (normalized per true class), per-class AP bars, the score-threshold curve the bundle was
    tuned on, and the picked examples."""
    from defects.plots import plot_threshold_curves

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
    groups = {"AP (IoU .50:.95)": "AP", "AP50": "AP50"}
    outputs.append(write_class_bars(report, groups, class_names, plots_dir, "AP per class"))
    outputs.append(
        plot_threshold_curves(
            report.extras["tuning"],
            plots_dir / f"{prefix}_thresholds.png",
            "score threshold tuned on validation (F1 at IoU 0.5)",
        )
    )
    outputs.append(plot_box_examples(report, class_names, plots_dir / f"{prefix}_predictions.png"))
    return outputs


def plot_box_examples(report: Report, class_names: list[str], out: Path) -> Path:
    """The picked examples: truth dashed, delivered boxes solid with scores, the box a panel
    is about in a thick white frame."""
    from matplotlib.axes import Axes
    from matplotlib.patches import Rectangle

    from defects.plots import draw_boxes, plot_examples

    pictures = report.extras["pictures"]

    def draw(ax: Axes, panel: Panel) -> None:
        assert panel.candidate is not None
        image, truth, shown = pictures[panel.candidate.index]
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        draw_boxes(ax, truth["boxes"], truth["class_ids"], class_names, dashed=True)
        draw_boxes(ax, shown.boxes, shown.class_ids.tolist(), class_names, shown.scores.tolist())
        if panel.candidate.box is not None:
            x1, y1, x2, y2 = panel.candidate.box
            frame = (x1 - 3, y1 - 3), x2 - x1 + 6, y2 - y1 + 6
            ax.add_patch(Rectangle(*frame, fill=False, lw=2.5, edgecolor="white"))

    first = next(iter(pictures.values()), None)
    aspect = first[0].shape[0] / first[0].shape[1] if first else 1.0
    heading = (
        f"{report.prefix}: examples picked per class (truth dashed, found solid at score >= "
        f"{report.extras['score_threshold']:.2f}, IoU 0.5; the panel's box framed white)"
    )
    return plot_examples(report.extras["examples"], draw, aspect, out, heading)
