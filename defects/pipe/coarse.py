"""Boxes -> coarse index masks: the first, crude segmentation labels of box-only data.

Each box is filled with its class (index mask value ``class_id + 1``, 0 = background).

Overlap rule (shared with `defects.pipe.refine`): boxes are painted largest first, so a
smaller box lands on top: a small defect inside a large one keeps its own class instead of
vanishing under it. Boxes of equal pixel area are ordered by class id, the lower id on top
(painted last), then by their order in the file, so the result never depends on dict or
thread order.

A pixel belongs to a box when its centre lies inside it: the box ``[x1, x2) x [y1, y2)``
covers columns ``ceil(x1 - 0.5) .. ceil(x2 - 0.5) - 1``. A box around a mask component
(integer corners) therefore covers exactly the component's bounding rectangle.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from defects.formats.errors import FormatError
from defects.formats.io import atomic_directory
from defects.formats.layout import SPLITS, is_image_file
from defects.formats.mask_folder import mask_components, write_index_mask
from defects.formats.yolo import YoloBox, read_class_names, read_yolo_labels
from defects.progress import progress

__all__ = [
    "box_pixels",
    "boxes_from_index_mask",
    "coarse_mask",
    "coarse_masks",
    "image_size",
    "mask_components",
    "paint_order",
]

PixelBox = tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels, x2/y2 exclusive


def box_pixels(box: YoloBox, width: int, height: int) -> PixelBox:
    """Pixel rectangle whose pixel centres lie inside the box, clipped to the image."""
    x1, y1, x2, y2 = box.to_xyxy(width, height)

    def edge(v: float, size: int) -> int:
        return min(max(math.ceil(v - 0.5), 0), size)

    return edge(x1, width), edge(y1, height), edge(x2, width), edge(y2, height)


def paint_order(boxes: Sequence[YoloBox], width: int, height: int) -> list[int]:
    """Indices of ``boxes`` in painting order: largest first, so smaller boxes end on top."""

    def key(i: int) -> tuple[int, int, int]:
        x1, y1, x2, y2 = box_pixels(boxes[i], width, height)
        area = max(x2 - x1, 0) * max(y2 - y1, 0)
        return (-area, -boxes[i].class_id, i)

    return sorted(range(len(boxes)), key=key)


def coarse_mask(boxes: Sequence[YoloBox], width: int, height: int) -> np.ndarray:
    """(height, width) uint8 index mask with every box filled by ``class_id + 1``."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    mask = np.zeros((height, width), np.uint8)
    for i in paint_order(boxes, width, height):
        if boxes[i].class_id > 254:
            raise ValueError(f"class id {boxes[i].class_id} does not fit a uint8 index mask")
        x1, y1, x2, y2 = box_pixels(boxes[i], width, height)
        mask[y1:y2, x1:x2] = boxes[i].class_id + 1
    return mask


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) from the image header; FormatError naming the file if unreadable."""
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as exc:
        raise FormatError(path, f"cannot read image header ({exc})") from None


_Item = tuple[str, list[YoloBox], int, int]  # stem, boxes, width, height


def _read_split(root: Path, split: str, num_classes: int) -> list[_Item]:
    """Every image's stem, boxes and size in one split; raises before anything is written."""
    images_dir = root / split / "images"
    items: list[_Item] = []
    seen: set[str] = set()
    for path in sorted(p for p in images_dir.iterdir() if is_image_file(p)):
        if path.stem in seen:
            raise FormatError(path, f"another image in {images_dir} has the stem {path.stem!r}")
        seen.add(path.stem)
        width, height = image_size(path)
        boxes = read_yolo_labels(root / split / "labels" / f"{path.stem}.txt", num_classes)
        items.append((path.stem, boxes, width, height))
    return items


def coarse_masks(
    dataset_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    splits: Sequence[str] = SPLITS,
) -> dict[str, int]:
    """Write ``{out_dir}/{split}/coarse_masks/<stem>.png`` for every image of a YOLO dataset.

    ``out_dir`` defaults to ``dataset_dir`` (masks beside the images). Labels are read
    strictly: run this on cleaned data (`defects.pipe.clean`); a bad line raises FormatError
    naming the file and line. All labels are read before anything is written and each
    split's folder is built under a temp name and swapped in only when all succeeded, so a
    failure leaves no partial output. Splits without ``images`` are skipped. Returns the mask
    count per split.
    """
    root = Path(dataset_dir)
    out_root = Path(out_dir) if out_dir is not None else root
    names = read_class_names(root / "data.yaml")
    plan = {
        split: _read_split(root, split, len(names))
        for split in splits
        if (root / split / "images").is_dir()
    }
    with ExitStack() as stack:
        for split, items in plan.items():
            tmp = stack.enter_context(atomic_directory(out_root / split / "coarse_masks"))
            for stem, boxes, width, height in progress(items, f"coarse masks {split}"):
                write_index_mask(tmp / f"{stem}.png", coarse_mask(boxes, width, height))
    return {split: len(items) for split, items in plan.items()}


# --------------------------------------------------------------------------- masks -> boxes


def boxes_from_index_mask(mask: np.ndarray) -> list[YoloBox]:
    """One YOLO box per 8-connected component of each class in an index mask (1-based ids).

    Boxes are the components' tight pixel bounds, class id = mask value - 1, ordered by class
    then component (top-left first), so labels are a pure function of the mask.
    """
    height, width = mask.shape
    boxes = []
    for value in range(1, int(mask.max()) + 1 if mask.size else 1):
        for x, y, w, h, _ in mask_components(mask == value):
            boxes.append(YoloBox.from_xyxy(value - 1, x, y, x + w, y + h, width, height))
    return boxes
