"""Refine box-filled masks inside each box, and measure masks against the truth.

Coarse masks fill whole boxes (`defects.pipe.coarse`), which is wrong everywhere the defect
does not fill its box. Two ways to do better without new labels, both confined to the boxes
a person drew (the box is the one thing we trust):

- `refine_boxes` / `refine_mask`: each box takes its class baseline's prediction inside it
  (a per-class model trained on the finely labelled subset), falling back to the full box
  when the baseline sees (almost) nothing there. The baselines see one box at a time:
  `crop_window` is the box with some context around it and `crop_image` scales it to the
  baseline's input size, in training (`defects.pipe.layout.write_crop_layout`) as in
  refinement, and `uncrop` brings the prediction back into the box. A box-sized task
  ("which of these pixels is the defect?") is what refinement asks, and it is learnt from
  far fewer fine labels than finding defects in whole frames;
- `grabcut_mask`: OpenCV GrabCut started from each box, a model-free baseline.

Overlaps follow the coarse rule: boxes are painted largest first, so a smaller box lands on
top (`defects.pipe.coarse.paint_order`); only the pixels a box claims are painted, so a
small box's background does not punch a hole into a larger box's defect.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from defects.formats.yolo import YoloBox
from defects.pipe.coarse import PixelBox, box_pixels, paint_order

__all__ = [
    "crop_image",
    "crop_window",
    "grabcut_mask",
    "mask_iou_per_class",
    "refine_box",
    "refine_boxes",
    "refine_mask",
    "uncrop",
]

ProbabilityMaps = Mapping[int, np.ndarray] | np.ndarray  # class id -> (H, W), or (K, H, W)


def _class_map(maps: ProbabilityMaps, class_id: int) -> np.ndarray | None:
    """The probability map of one class, or None when that class has no baseline."""
    if isinstance(maps, np.ndarray):
        return maps[class_id] if 0 <= class_id < len(maps) else None
    return maps.get(class_id)


def _shape(maps: ProbabilityMaps) -> tuple[int, int]:
    """(H, W) shared by all maps; ValueError if they disagree or are not 2-D."""
    arrays = list(maps) if isinstance(maps, np.ndarray) else list(maps.values())
    if not arrays:
        raise ValueError("no probability maps given")
    shapes = {np.shape(a) for a in arrays}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"probability maps must all be (H, W) of one size, got {sorted(shapes)}")
    return next(iter(shapes))  # type: ignore[return-value]


def crop_window(rect: PixelBox, width: int, height: int, context: float = 0.25) -> PixelBox:
    """The box grown by ``context`` times its size on each side (at least 2 px), clipped to
    the image: what a baseline sees of one box."""
    x1, y1, x2, y2 = rect
    pad_x = max(2, round(context * (x2 - x1)))
    pad_y = max(2, round(context * (y2 - y1)))
    return max(x1 - pad_x, 0), max(y1 - pad_y, 0), min(x2 + pad_x, width), min(y2 + pad_y, height)


def crop_image(image: np.ndarray, window: PixelBox, size: int, nearest: bool = False) -> np.ndarray:
    """``image[window]`` scaled to ``size`` x ``size`` (bilinear; ``nearest`` for masks)."""
    x1, y1, x2, y2 = window
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"empty crop window {window}")
    crop = np.ascontiguousarray(np.asarray(image)[y1:y2, x1:x2])
    interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    out = cv2.resize(crop, (size, size), interpolation=interpolation)
    return out.reshape(size, size, *crop.shape[2:])


def uncrop(probability: np.ndarray, window: PixelBox, rect: PixelBox) -> np.ndarray:
    """A crop's (size, size) probability map scaled back to ``window`` (bilinear) and cut
    to the box ``rect`` inside it: box-sized, ready for `refine_box`."""
    wx1, wy1, wx2, wy2 = window
    x1, y1, x2, y2 = rect
    full = cv2.resize(
        np.asarray(probability, np.float32), (wx2 - wx1, wy2 - wy1), interpolation=cv2.INTER_LINEAR
    )
    return full[y1 - wy1 : y2 - wy1, x1 - wx1 : x2 - wx1]


def refine_box(
    probability: np.ndarray | None,
    shape: tuple[int, int],
    threshold: float = 0.5,
    min_fraction: float = 0.02,
) -> tuple[np.ndarray, bool]:
    """(bool region of the box, whether it fell back to the full box).

    ``probability`` is the baseline's map over the box (``shape``: its height, width), or
    None without a baseline. If the prediction covers less than ``min_fraction`` of the box,
    the box itself is kept: a person saw a defect there, so an empty prediction is the
    baseline's miss, not a reason to drop the label.
    """
    full = np.ones((max(shape[0], 0), max(shape[1], 0)), bool)
    if probability is None or full.size == 0:
        return full, True
    if np.shape(probability) != full.shape:
        raise ValueError(f"box probability is {np.shape(probability)}, the box {full.shape}")
    region = np.asarray(probability) > threshold
    if region.sum() < min_fraction * full.size or not region.any():
        return full, True
    return region, False


def refine_boxes(
    boxes: Sequence[YoloBox],
    box_probabilities: Sequence[np.ndarray | None],
    height: int,
    width: int,
    threshold: float = 0.5,
    min_fraction: float = 0.02,
) -> tuple[np.ndarray, int]:
    """((H, W) uint8 index mask, fallback count): box i painted with its own probability map
    ``box_probabilities[i]`` (box-sized, or None: the full box) thresholded inside it.

    Nothing is ever painted outside a box; mask values are ``class_id + 1``.
    """
    if not 0.0 <= min_fraction <= 1.0:
        raise ValueError(f"min_fraction must be in [0, 1], got {min_fraction}")
    if len(box_probabilities) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(box_probabilities)} probability maps")
    mask = np.zeros((height, width), np.uint8)
    fallbacks = 0
    for i in paint_order(boxes, width, height):
        x1, y1, x2, y2 = box_pixels(boxes[i], width, height)
        region, fell_back = refine_box(
            box_probabilities[i], (y2 - y1, x2 - x1), threshold, min_fraction
        )
        fallbacks += fell_back
        mask[y1:y2, x1:x2][region] = boxes[i].class_id + 1
    return mask, fallbacks


def refine_mask(
    coarse_boxes: Sequence[YoloBox],
    probability_maps_per_class: ProbabilityMaps,
    threshold: float = 0.5,
    min_fraction: float = 0.02,
) -> np.ndarray:
    """(H, W) uint8 index mask: each box replaced by its class's prediction inside the box.

    ``probability_maps_per_class`` maps a class id (the YOLO id, 0-based) to that class
    baseline's foreground probability over the whole image (or is a (K, H, W) array). A
    class without a map (a rare class with no baseline) keeps its full boxes. Nothing is
    ever painted outside a box. Mask values are ``class_id + 1``.
    """
    height, width = _shape(probability_maps_per_class)
    per_box: list[np.ndarray | None] = []
    for box in coarse_boxes:
        x1, y1, x2, y2 = box_pixels(box, width, height)
        full = _class_map(probability_maps_per_class, box.class_id)
        per_box.append(None if full is None else np.asarray(full)[y1:y2, x1:x2])
    return refine_boxes(coarse_boxes, per_box, height, width, threshold, min_fraction)[0]


def _grabcut_box(
    image: np.ndarray, rect: PixelBox, iterations: int, context: float, min_fraction: float
) -> np.ndarray | None:
    """GrabCut's foreground inside ``rect`` (bool, box-sized), or None when it has (almost)
    none: less than ``min_fraction`` of the box.

    GrabCut runs on a window around the box (``context`` times the box size on each side,
    at least 8 px), which is faster than the whole frame and keeps the background model
    local. The RNG is reseeded so a run is reproducible.
    """
    x1, y1, x2, y2 = rect
    height, width = image.shape[:2]
    if x2 - x1 < 2 or y2 - y1 < 2:
        return None
    pad_x = max(8, int(context * (x2 - x1)))
    pad_y = max(8, int(context * (y2 - y1)))
    wx1, wy1 = max(x1 - pad_x, 0), max(y1 - pad_y, 0)
    wx2, wy2 = min(x2 + pad_x, width), min(y2 + pad_y, height)
    if (wx1, wy1, wx2, wy2) == (x1, y1, x2, y2):
        return None  # the box is the whole window: no background to learn from
    window = np.ascontiguousarray(image[wy1:wy2, wx1:wx2])
    gc = np.zeros(window.shape[:2], np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    try:
        cv2.grabCut(
            window, gc, (x1 - wx1, y1 - wy1, x2 - x1, y2 - y1), bgd, fgd, iterations,
            cv2.GC_INIT_WITH_RECT,
        )  # fmt: skip
    except cv2.error:
        return None  # e.g. too few pixels of one kind to fit its colour model
    fg = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
    region = fg[y1 - wy1 : y2 - wy1, x1 - wx1 : x2 - wx1]
    return region if region.any() and region.mean() >= min_fraction else None


def grabcut_mask(
    image: np.ndarray,
    boxes: Sequence[YoloBox],
    iterations: int = 5,
    context: float = 0.25,
    min_fraction: float = 0.01,
) -> np.ndarray:
    """(H, W) uint8 index mask from GrabCut initialised with each box (GC_INIT_WITH_RECT).

    The result is clipped to the box; a box where GrabCut finds nothing (less than
    ``min_fraction`` of it, e.g. a stray pixel) or cannot run falls back to the full box.
    ``image`` is uint8 grey (H, W) or colour (H, W, 3). Overlaps as in `refine_mask`.
    """
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ValueError(f"image must be uint8 (H, W) or (H, W, 3), got {img.dtype} {img.shape}")
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] != 3:
        raise ValueError(f"image must have 3 channels, got {img.shape[2]}")
    height, width = img.shape[:2]
    mask = np.zeros((height, width), np.uint8)
    for i in paint_order(boxes, width, height):
        rect = box_pixels(boxes[i], width, height)
        x1, y1, x2, y2 = rect
        region = _grabcut_box(img, rect, iterations, context, min_fraction)
        if region is None:
            region = np.ones((y2 - y1, x2 - x1), bool)
        mask[y1:y2, x1:x2][region] = boxes[i].class_id + 1
    return mask


def mask_iou_per_class(
    pred_index_mask_list: Sequence[np.ndarray],
    true_index_mask_list: Sequence[np.ndarray],
    num_classes: int,
) -> np.ndarray:
    """Per-class IoU over a set of index masks: sum of intersections / sum of unions.

    Masks hold 0 (background) .. ``num_classes``; returns ``num_classes`` values, index k-1
    for class value k, NaN for a class absent from both sides everywhere. Summing before
    dividing weights images by their defect area (as a confusion matrix over all pixels
    does) instead of letting a tiny defect's IoU count as much as a large one's.
    """
    if len(pred_index_mask_list) != len(true_index_mask_list):
        raise ValueError(
            f"{len(pred_index_mask_list)} predicted masks but {len(true_index_mask_list)} true"
        )
    inter = np.zeros(num_classes, np.int64)
    union = np.zeros(num_classes, np.int64)
    for k, (pred, true) in enumerate(zip(pred_index_mask_list, true_index_mask_list, strict=True)):
        pred, true = np.asarray(pred), np.asarray(true)
        if pred.shape != true.shape:
            raise ValueError(f"mask pair {k}: shapes differ, {pred.shape} vs {true.shape}")
        for c in range(1, num_classes + 1):
            p, t = pred == c, true == c
            inter[c - 1] += np.count_nonzero(p & t)
            union[c - 1] += np.count_nonzero(p | t)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)
