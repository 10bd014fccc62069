"""Detection mAP with torchmetrics (faster_coco_eval backend) and the numbers we report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torchmetrics.detection import MeanAveragePrecision


def make_map_metric(extended: bool = False) -> MeanAveragePrecision:
    """COCO-style box mAP with per-class AP; `extended` keeps the precision array for PR curves.

    Thresholds are COCO's float64 ones: torchmetrics' default float32 linspace turns 0.55
    into 0.550000011920929, which shifts mAP by up to ~2e-3 against pycocotools.
    """
    return MeanAveragePrecision(
        box_format="xyxy",
        iou_thresholds=np.linspace(0.5, 0.95, 10).tolist(),
        rec_thresholds=np.linspace(0.0, 1.0, 101).tolist(),
        iou_type="bbox",
        class_metrics=True,
        backend="faster_coco_eval",
        extended_summary=extended,
    )


def summarize_map(result: dict, class_names: Sequence[str], prefix: str) -> dict[str, float]:
    """Flatten torchmetrics' result into plain floats: mAP, mAP50, mAP50-95, mAP75, AP per class.

    Classes absent from both predictions and ground truth get no entry instead of COCO's -1.
    """
    metrics = {
        f"{prefix}/mAP": float(result["map"]),
        f"{prefix}/mAP50": float(result["map_50"]),
        f"{prefix}/mAP50-95": float(result["map"]),
        f"{prefix}/mAP75": float(result["map_75"]),
        f"{prefix}/mAR100": float(result["mar_100"]),
    }
    classes = torch.atleast_1d(result["classes"]).tolist()
    per_class = torch.atleast_1d(result["map_per_class"]).tolist()
    for class_id, ap in zip(classes, per_class, strict=True):
        if 1 <= class_id <= len(class_names) and ap >= 0:
            metrics[f"{prefix}/AP/{class_names[class_id - 1]}"] = float(ap)
    if "precision" in result:  # an extended metric: AP50 per class too (COCO's own rule)
        for class_id, ap50 in zip(classes, ap50_per_class(result), strict=True):
            if 1 <= class_id <= len(class_names) and ap50 >= 0:
                metrics[f"{prefix}/AP50/{class_names[class_id - 1]}"] = ap50
    return metrics


def iou_index(iou: float) -> int:
    """The index of an IoU threshold in `make_map_metric`'s 0.50:0.05:0.95."""
    return int(round((iou - 0.5) / 0.05))


def ap50_per_class(result: dict) -> list[float]:
    """AP at IoU 0.5 per class of `result["classes"]` from an extended metric's precision
    array (all areas, 100 detections): the mean of the precisions COCO defines (-1 when a
    class has none), as pycocotools computes its per-class AP."""
    precision = result["precision"]  # [T, R, K, A, M]
    at_50 = iou_index(0.5)
    out = []
    for k in range(precision.shape[2]):
        values = precision[at_50, :, k, 0, -1]
        valid = values[values > -1]
        out.append(float(valid.double().mean()) if valid.numel() else -1.0)
    return out


def pr_curves(result: dict, class_names: Sequence[str], iou: float = 0.5) -> list[dict]:
    """Precision over the 101 COCO recall points at one IoU, per class (all areas, 100 dets).

    Needs a metric made with `extended=True`. Recall points where COCO has no precision (-1)
    are dropped.
    """
    precision = result["precision"]  # [T, R, K, A, M]
    at_iou = iou_index(iou)
    recall_points = np.linspace(0.0, 1.0, precision.shape[1])
    classes = torch.atleast_1d(result["classes"]).tolist()
    rows = []
    for k, class_id in enumerate(classes):
        if not 1 <= class_id <= len(class_names):
            continue
        curve = precision[at_iou, :, k, 0, -1].numpy()
        for recall, value in zip(recall_points, curve, strict=True):
            if value >= 0:
                rows.append(
                    {
                        "class": class_names[class_id - 1],
                        "recall": round(float(recall), 4),
                        "precision": round(float(value), 6),
                    }
                )
    return rows


@dataclass
class Matching:
    """How one image's detections met its truth boxes (`match_boxes`): which detections and
    which truth boxes found a partner, and each truth box's IoU with its partner or, when it
    was missed, with the closest detection of its class (0 when there is none)."""

    pred_matched: np.ndarray
    truth_matched: np.ndarray
    truth_iou: np.ndarray


def match_boxes(pred: dict, truth: dict, iou_threshold: float = 0.5) -> Matching:
    """Greedy matching within each class, COCO's rule: detections by descending score take
    the unmatched truth box of their class with the highest IoU >= `iou_threshold`, one match
    each. `pred`: {boxes [N, 4], scores [N], labels [N]}; `truth`: {boxes, labels}; xyxy."""
    from torchvision.ops import box_iou

    p_boxes = torch.as_tensor(pred["boxes"]).float().reshape(-1, 4)
    p_labels = torch.as_tensor(pred["labels"]).reshape(-1)
    t_boxes = torch.as_tensor(truth["boxes"]).float().reshape(-1, 4)
    t_labels = torch.as_tensor(truth["labels"]).reshape(-1)
    same = p_labels[:, None] == t_labels[None, :]
    iou = box_iou(p_boxes, t_boxes) if len(p_boxes) and len(t_boxes) else same.float()
    iou = torch.where(same, iou, torch.zeros_like(iou))
    pred_matched = torch.zeros(len(p_boxes), dtype=torch.bool)
    truth_matched = torch.zeros(len(t_boxes), dtype=torch.bool)
    truth_iou = iou.max(0).values if len(p_boxes) else torch.zeros(len(t_boxes))
    order = torch.argsort(torch.as_tensor(pred["scores"]).float(), descending=True, stable=True)
    for i in order.tolist():
        row = torch.where(truth_matched | ~same[i], torch.full_like(iou[i], -1.0), iou[i])
        if len(row) and float(row.max()) >= iou_threshold:
            j = int(row.argmax())
            truth_matched[j], pred_matched[i] = True, True
            truth_iou[j] = iou[i, j]
    return Matching(pred_matched.numpy(), truth_matched.numpy(), truth_iou.double().numpy())


def match_counts(
    preds: Sequence[dict], truths: Sequence[dict], iou_threshold: float = 0.5
) -> dict[int, tuple[int, int, int]]:
    """Per label: (true positives, false positives, false negatives) of fixed detections,
    matched per image by `match_boxes`. `preds`: {boxes [N, 4], scores [N], labels [N]};
    `truths`: {boxes, labels}; xyxy pixels."""
    counts: dict[int, list[int]] = {}
    for pred, truth in zip(preds, truths, strict=True):
        matching = match_boxes(pred, truth, iou_threshold)
        p_labels = torch.as_tensor(pred["labels"]).reshape(-1).numpy()
        t_labels = torch.as_tensor(truth["labels"]).reshape(-1).numpy()
        for label in np.unique(np.concatenate([p_labels, t_labels])).tolist():
            tally = counts.setdefault(int(label), [0, 0, 0])
            found = matching.pred_matched[p_labels == label]
            tally[0] += int(found.sum())
            tally[1] += int((~found).sum())
            tally[2] += int((~matching.truth_matched[t_labels == label]).sum())
    return {label: (tp, fp, fn) for label, (tp, fp, fn) in sorted(counts.items())}


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def precision_recall(
    preds: Sequence[dict], truths: Sequence[dict], iou_threshold: float = 0.5
) -> dict[str, float]:
    """Precision, recall and F1 of a fixed set of detections (already cut at a score),
    pooled over classes (see `match_counts` for the matching rule)."""
    counts = match_counts(preds, truths, iou_threshold).values()
    return _prf(*(sum(c[k] for c in counts) for k in range(3)))


def per_class_precision_recall(
    preds: Sequence[dict],
    truths: Sequence[dict],
    class_names: Sequence[str],
    iou_threshold: float = 0.5,
) -> dict[str, dict[str, float]]:
    """{class name: {precision, recall, f1}} for classes seen in predictions or truth;
    `labels` are 1-based (class_names[label - 1])."""
    return {
        class_names[label - 1]: _prf(*counts)
        for label, counts in match_counts(preds, truths, iou_threshold).items()
        if 1 <= label <= len(class_names)
    }


def confusion_matrix(
    preds: Sequence[dict], truths: Sequence[dict], num_classes: int, iou_threshold: float = 0.5
) -> np.ndarray:
    """Counts [predicted, true] of shape (C + 1, C + 1); index C is background.

    Class-agnostic matching, so a box found with the wrong class lands off the diagonal:
    per image, detections by descending score take the unmatched truth box of highest IoU
    >= `iou_threshold` (whatever its class); unmatched detections are [class, background]
    (false alarms), unmatched truth boxes [background, class] (misses). 1-based labels.
    """
    from torchvision.ops import box_iou

    matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    for pred, truth in zip(preds, truths, strict=True):
        p_boxes = torch.as_tensor(pred["boxes"]).float().reshape(-1, 4)
        p_labels = torch.as_tensor(pred["labels"]).long() - 1
        order = torch.argsort(torch.as_tensor(pred["scores"]).float(), descending=True, stable=True)
        p_boxes, p_labels = p_boxes[order], p_labels[order]
        t_boxes = torch.as_tensor(truth["boxes"]).float().reshape(-1, 4)
        t_labels = torch.as_tensor(truth["labels"]).long() - 1
        matched = torch.zeros(len(t_boxes), dtype=torch.bool)
        iou = box_iou(p_boxes, t_boxes) if len(p_boxes) and len(t_boxes) else None
        for i, label in enumerate(p_labels.tolist()):
            if iou is not None:
                row = torch.where(matched, torch.full_like(iou[i], -1.0), iou[i])
                j = int(row.argmax())
                if float(row[j]) >= iou_threshold:
                    matched[j] = True
                    matrix[label, int(t_labels[j])] += 1
                    continue
            matrix[label, num_classes] += 1
        for label in t_labels[~matched].tolist():
            matrix[num_classes, label] += 1
    return matrix


def normalize_columns(matrix: np.ndarray) -> np.ndarray:
    """Each true class's column as fractions (what share of its boxes went where);
    the background column is the share of false alarms per predicted class."""
    totals = matrix.sum(axis=0, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
