"""Albumentations pipelines built from config, so augmentation is chosen without code changes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
import numpy as np
import torch
from hydra.utils import instantiate

from defects.data.mosaic import FastMosaic


def build_transform(
    steps: Sequence[Any] | None,
    bbox: bool,
    seed: int | None = None,
    min_visibility: float = 0.3,
    min_box_px: float = 0.0,
) -> A.Compose:
    """Compose `steps` (transforms or `_target_` dicts); with `bbox`, boxes follow the pixels.

    Boxes are pascal_voc pixels with labels in a separate field. A box a crop cuts to less
    than `min_visibility` of its area, or to under `min_box_px` wide or high, is dropped
    rather than kept as a sliver. The threshold is a trade: a dropped box leaves its visible
    pixels in the picture as background, a kept sliver is a box of a few pixels of defect.
    """
    transforms = [
        step if isinstance(step, (A.BasicTransform, A.BaseCompose)) else instantiate(step)
        for step in steps or []
    ]
    bbox_params = (
        A.BboxParams(
            format="pascal_voc",
            label_fields=["labels"],
            min_visibility=min_visibility,
            min_width=min_box_px,
            min_height=min_box_px,
        )
        if bbox
        else None
    )
    return A.Compose(transforms, bbox_params=bbox_params, seed=seed)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 HxW or HxWxC -> float [C, H, W] in [0, 1]: the one conversion data and
    predictors share, so the network sees the same numbers in training and in service."""
    if not image.flags.writeable:  # a cached picture (defects.data.cache): torch wants its own
        image = image.copy()
    tensor = torch.from_numpy(np.ascontiguousarray(image)).float().div_(255.0)
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)


def canvas_mosaic(
    size: int,
    fill: float = 114,
    p: float = 1.0,
    grid: int = 3,
    aspect: float | None = None,
) -> FastMosaic:
    """An albumentations `Mosaic` of `size` cells on a 2·size canvas, for an affine step and a
    `size` centre crop after it.

    Cropping after the affine step, not before, is what YOLO training expects of mosaic: a
    scale below 1 brings the neighbours' content into view instead of a grey border around
    one shrunken quarter.

    `grid` 3 (the default): the canvas is a window at a uniformly random place on a 3x3 grid
    of images, so the centre view always holds one junction of four images at a uniformly
    random point of it -- Ultralytics' rule (mosaic centre anywhere in the middle half of its
    canvas) -- and zooming out shows up to nine images. `grid` 2 puts the junction always at
    the centre: every picture is then four quarter images cut through their middles, and a
    whole frame's context is seen only after close-mosaic (measured: a winding test mAP50 of
    0.17 against 0.36 for the same module on Ultralytics' own mosaic; benchmarks/README.md).

    `aspect` (the frames' height / width; null: square cells): each image is fitted into a
    cell of that shape, `size` on its long side. Set it to the frames' own (4:3 video: 0.75)
    and feed them unpadded, so that they meet edge to edge as in Ultralytics' mosaic instead
    of through the letterbox's grey bands (a quarter of every 4:3 square cell).
    """
    if grid not in (2, 3):
        raise ValueError(f"canvas_mosaic: grid must be 2 or 3, got {grid}")
    if aspect is not None and aspect <= 0:
        raise ValueError(f"canvas_mosaic: aspect must be > 0 (height / width), got {aspect}")
    if aspect is None:
        cell = (size, size)
    elif aspect <= 1:
        cell = (round(size * aspect), size)
    else:
        cell = (size, round(size / aspect))
    return FastMosaic(
        grid_yx=(grid, grid),
        target_size=(2 * size, 2 * size),
        cell_shape=cell,
        center_range=(0.0, 1.0),
        fit_mode="contain",
        fill=fill,
        p=p,
    )
