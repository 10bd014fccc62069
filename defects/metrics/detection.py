"""Detection mAP with torchmetrics (faster_coco_eval backend) and the numbers we report."""

from __future__ import annotations

from collections.abc import Sequence

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
    return metrics


def pr_curves(result: dict, class_names: Sequence[str], iou: float = 0.5) -> list[dict]:
    """Precision over the 101 COCO recall points at one IoU, per class (all areas, 100 dets).

    Needs a metric made with `extended=True`. Recall points where COCO has no precision (-1)
    are dropped.
    """
    precision = result["precision"]  # [T, R, K, A, M]
    iou_index = int(round((iou - 0.5) / 0.05))
    recall_points = np.linspace(0.0, 1.0, precision.shape[1])
    classes = torch.atleast_1d(result["classes"]).tolist()
    rows = []
    for k, class_id in enumerate(classes):
        if not 1 <= class_id <= len(class_names):
            continue
        curve = precision[iou_index, :, k, 0, -1].numpy()
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
