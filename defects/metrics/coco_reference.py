"""Reference COCO box mAP with pycocotools, on the inputs `make_map_metric` takes.

The library reports mAP with torchmetrics on the faster_coco_eval backend. This module runs the
original COCO evaluation (pycocotools, a dev dependency imported lazily) on the same
torchmetrics-style predictions and targets, so the two can be compared number by number, and
builds a deterministic, realistic prediction set to compare them on.

Inputs follow torchmetrics: one dict per image, `boxes` [N,4] xyxy pixels (float32), `labels`
[N] int, plus `scores` [N] for predictions. COCO areas are box areas (w*h), as torchmetrics
computes them when no `area` is given, and maxDets is (1, 10, 100).

Thresholds matter at the 1e-3 level: torchmetrics' default IoU and recall thresholds come from a
float32 `torch.linspace` (0.55 -> 0.550000011920929, 0.3 -> 0.30000001192...), while COCO's are
float64 `np.linspace`. A recall of exactly 3/10 then misses the 0.3 recall point, so
`MeanAveragePrecision` with default thresholds can sit below COCO's mAP on small sets. Pass a
metric's `iou_thresholds`/`rec_thresholds` to `pycocotools_map` to reproduce it exactly, or
leave them out for COCO's own.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_convert

# COCOeval.stats, in order, under torchmetrics' key names (maxDets 1, 10, 100).
STAT_KEYS = (
    "map",
    "map_50",
    "map_75",
    "map_small",
    "map_medium",
    "map_large",
    "mar_1",
    "mar_10",
    "mar_100",
    "mar_small",
    "mar_medium",
    "mar_large",
)
MAX_DETS = [1, 10, 100]


def _xywh_rows(boxes: torch.Tensor) -> list[list[float]]:
    """xyxy -> xywh the way torchmetrics converts them (torchvision, in the boxes' dtype)."""
    if boxes.numel() == 0:
        return []
    return box_convert(boxes, in_fmt="xyxy", out_fmt="xywh").cpu().tolist()


def coco_classes(preds: Sequence[Mapping], targets: Sequence[Mapping]) -> list[int]:
    """Every label seen in predictions or targets, sorted (torchmetrics' `classes`)."""
    labels = [t["labels"].reshape(-1) for t in (*preds, *targets)]
    if not labels:
        return []
    return torch.cat(labels).unique().cpu().tolist()


def to_coco(
    preds: Sequence[Mapping[str, torch.Tensor]], targets: Sequence[Mapping[str, torch.Tensor]]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A COCO ground-truth dataset dict and a COCO results list (xywh boxes), image i -> id i.

    Categories are every label seen in either, so a class that is only predicted is evaluated
    (and scores -1) exactly as torchmetrics does it.
    """
    if len(preds) != len(targets):
        raise ValueError(f"{len(preds)} prediction dicts for {len(targets)} target dicts")
    images, annotations, detections = [], [], []
    for image_id, (pred, target) in enumerate(zip(preds, targets, strict=True)):
        images.append({"id": image_id})
        for box, label in zip(_xywh_rows(target["boxes"]), target["labels"].tolist(), strict=True):
            annotations.append(
                {
                    "id": len(annotations) + 1,  # COCO ids start at 1
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
        for box, label, score in zip(
            _xywh_rows(pred["boxes"]), pred["labels"].tolist(), pred["scores"].tolist(), strict=True
        ):
            detections.append(
                {
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": box,
                    "score": float(score),
                }
            )
    categories = [{"id": c, "name": str(c)} for c in coco_classes(preds, targets)]
    gt = {
        "info": {"description": "defects.metrics.coco_reference"},
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    return gt, detections


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def pycocotools_map(
    preds: Sequence[Mapping[str, torch.Tensor]],
    targets: Sequence[Mapping[str, torch.Tensor]],
    iou_thresholds: Sequence[float] | None = None,
    rec_thresholds: Sequence[float] | None = None,
) -> dict[str, Any]:
    """COCO box mAP with pycocotools: the 12 COCO stats plus AP and AR@100 per class.

    `iou_thresholds`/`rec_thresholds` replace COCO's (10 IoUs 0.50:0.95, 101 recall points),
    as torchmetrics does with its own; they must keep 0.5 and 0.75 among the IoUs.

    Keys match torchmetrics' result (`map`, `map_50`, ..., `classes`, `map_per_class`,
    `mar_100_per_class`) but hold plain floats/lists. Per-class values come from one
    evaluation's precision/recall arrays (IoU 0.50:0.95, all areas, 100 detections), which is
    what running COCOeval with `params.catIds = [class]` reports as stats[0] and stats[8].
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_dict, detections = to_coco(preds, targets)
    classes = [c["id"] for c in gt_dict["categories"]]
    if not gt_dict["images"] or not detections:
        # Nothing to match (pycocotools' loadRes rejects an empty list): COCO's "no value".
        return {
            **dict.fromkeys(STAT_KEYS, -1.0),
            "classes": classes,
            "map_per_class": [-1.0] * len(classes),
            "mar_100_per_class": [-1.0] * len(classes),
        }
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = gt_dict
        gt.createIndex()
        dt = gt.loadRes(detections)
        evaluator = COCOeval(gt, dt, iouType="bbox")
        evaluator.params.maxDets = list(MAX_DETS)
        if iou_thresholds is not None:
            evaluator.params.iouThrs = np.array(iou_thresholds, dtype=np.float64)
        if rec_thresholds is not None:
            evaluator.params.recThrs = np.array(rec_thresholds, dtype=np.float64)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    result: dict[str, Any] = {
        key: float(value) for key, value in zip(STAT_KEYS, evaluator.stats, strict=True)
    }
    precision = evaluator.eval["precision"]  # [T, R, K, A, M]
    recall = evaluator.eval["recall"]  # [T, K, A, M]
    cat_ids = list(evaluator.params.catIds)
    all_area = evaluator.params.areaRngLbl.index("all")
    max_100 = evaluator.params.maxDets.index(100)
    result["classes"] = classes
    result["map_per_class"] = [
        _mean_valid(precision[:, :, cat_ids.index(c), all_area, max_100]) for c in classes
    ]
    result["mar_100_per_class"] = [
        _mean_valid(recall[:, cat_ids.index(c), all_area, max_100]) for c in classes
    ]
    iou_50 = int(np.argmin(np.abs(evaluator.params.iouThrs - 0.5)))
    result["map_50_per_class"] = [
        _mean_valid(precision[iou_50, :, cat_ids.index(c), all_area, max_100]) for c in classes
    ]
    return result


def map_differences(torchmetrics_result: Mapping[str, Any], reference: Mapping[str, Any]) -> dict:
    """|torchmetrics - reference| per COCO stat and per class (`map_per_class/<id>`, ...).

    Raises ValueError when the two evaluated different classes.
    """
    tm_classes = torch.atleast_1d(torchmetrics_result["classes"]).tolist()
    if tm_classes != list(reference["classes"]):
        raise ValueError(
            f"classes differ: torchmetrics {tm_classes}, reference {reference['classes']}"
        )
    diffs = {key: abs(float(torchmetrics_result[key]) - reference[key]) for key in STAT_KEYS}
    for key in ("map_per_class", "mar_100_per_class"):
        values = torch.atleast_1d(torchmetrics_result[key]).tolist()
        for class_id, value, ref in zip(tm_classes, values, reference[key], strict=True):
            diffs[f"{key}/{class_id}"] = abs(float(value) - ref)
    return diffs


def synthetic_predictions(
    num_images: int = 200,
    num_classes: int = 4,
    seed: int = 0,
    width: int = 384,
    height: int = 256,
    max_objects: int = 4,
    recall: float = 0.8,
    false_positives: float = 1.0,
) -> tuple[list[dict[str, torch.Tensor]], list[dict[str, torch.Tensor]]]:
    """A deterministic detector-like prediction set with its ground truth (labels 1..num_classes).

    Ground truth: 0..max_objects boxes per image, sizes log-uniform over small, medium and large
    COCO areas. Predictions: each object found with probability `recall` as a jittered box
    (sometimes with the wrong class, sometimes with a looser duplicate), plus Poisson
    (`false_positives`) random boxes per image; found objects score higher than the rest.
    """
    rng = np.random.default_rng(seed)

    def random_box(count: int) -> np.ndarray:
        w = np.exp(rng.uniform(np.log(6), np.log(min(160, width)), count))
        h = np.exp(rng.uniform(np.log(6), np.log(min(120, height)), count))
        x1 = rng.uniform(0, width - w)
        y1 = rng.uniform(0, height - h)
        return np.stack([x1, y1, x1 + w, y1 + h], axis=1)

    def jitter(box: np.ndarray, scale: float) -> np.ndarray:
        w, h = box[2] - box[0], box[3] - box[1]
        out = box + rng.normal(0.0, scale, 4) * np.array([w, h, w, h])
        out[[0, 2]] = np.clip(out[[0, 2]], 0, width)
        out[[1, 3]] = np.clip(out[[1, 3]], 0, height)
        out[2] = max(out[2], out[0] + 1.0)
        out[3] = max(out[3], out[1] + 1.0)
        return out

    def other_class(label: int) -> int:
        return int(rng.choice([c for c in range(1, num_classes + 1) if c != label] or [label]))

    preds, targets = [], []
    for _ in range(num_images):
        n_gt = int(rng.integers(0, max_objects + 1))
        gt_boxes = random_box(n_gt)
        gt_labels = rng.integers(1, num_classes + 1, n_gt)
        boxes, labels, scores = [], [], []
        for box, label in zip(gt_boxes, gt_labels, strict=True):
            if rng.random() >= recall:
                continue  # missed
            boxes.append(jitter(box, 0.08))
            labels.append(other_class(label) if rng.random() < 0.05 else int(label))
            scores.append(rng.beta(5, 2))
            if rng.random() < 0.1:  # a looser duplicate of the same object
                boxes.append(jitter(box, 0.25))
                labels.append(int(label))
                scores.append(rng.beta(2, 3))
        n_fp = int(rng.poisson(false_positives))
        boxes.extend(jitter(box, 0.0) for box in random_box(n_fp))
        labels.extend(int(v) for v in rng.integers(1, num_classes + 1, n_fp))
        scores.extend(rng.beta(2, 5, n_fp))
        targets.append(
            {
                "boxes": torch.tensor(gt_boxes, dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor(gt_labels, dtype=torch.int64),
            }
        )
        preds.append(
            {
                "boxes": torch.tensor(np.array(boxes), dtype=torch.float32).reshape(-1, 4),
                "scores": torch.tensor(np.array(scores), dtype=torch.float32).reshape(-1),
                "labels": torch.tensor(labels, dtype=torch.int64),
            }
        )
    return preds, targets
