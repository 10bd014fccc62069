"""Albumentations pipelines built from config, so augmentation is chosen without code changes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
import numpy as np
import torch
from hydra.utils import instantiate


def build_transform(steps: Sequence[Any] | None, bbox: bool, seed: int | None = None) -> A.Compose:
    """Compose `steps` (transforms or `_target_` dicts); with `bbox`, boxes follow the pixels.

    Boxes are pascal_voc pixels with labels in a separate field, and a box cut to less than
    30 % of its area by a crop is dropped rather than kept as a sliver.
    """
    transforms = [
        step if isinstance(step, (A.BasicTransform, A.BaseCompose)) else instantiate(step)
        for step in steps or []
    ]
    bbox_params = (
        A.BboxParams(format="pascal_voc", label_fields=["labels"], min_visibility=0.3)
        if bbox
        else None
    )
    return A.Compose(transforms, bbox_params=bbox_params, seed=seed)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 HxW or HxWxC -> float [C, H, W] in [0, 1]: the one conversion data and
    predictors share, so the network sees the same numbers in training and in service."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).float().div_(255.0)
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
