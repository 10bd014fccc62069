"""Albumentations pipelines built from config, so augmentation is chosen without code changes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
import numpy as np
import torch
from hydra.utils import instantiate


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
    tensor = torch.from_numpy(np.ascontiguousarray(image)).float().div_(255.0)
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)


def canvas_mosaic(size: int, fill: float = 114, p: float = 1.0) -> A.Mosaic:
    """A 2x2 albumentations `Mosaic` kept whole: four images fitted into `size` cells on a
    2·size canvas, for an affine step and a `size` centre crop after it.

    Cropping after the affine step, not before, is what YOLO training expects of mosaic: a
    scale below 1 brings the neighbours' content into view (about 4/3 more objects per
    picture over scale 0.5-1.5) instead of a grey border around one shrunken quarter.
    """
    return A.Mosaic(
        grid_yx=(2, 2),
        target_size=(2 * size, 2 * size),
        cell_shape=(size, size),
        fit_mode="contain",
        fill=fill,
        p=p,
    )
