"""FastMosaic gives albumentations' Mosaic's pixels and boxes for the same seed."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest

from defects.data.mosaic import FastMosaic


def _pictures(rng: np.random.Generator, shape: tuple[int, ...], count: int) -> list[dict]:
    items = []
    for index in range(count):
        height, width = shape[:2]
        image = rng.integers(0, 256, size=shape, dtype=np.uint8)
        mask = (rng.random((height, width)) < 0.1).astype(np.uint8)
        boxes, labels = [], []
        for _ in range(index % 4):  # some pictures have no box
            x1, y1 = rng.uniform(0, width - 20), rng.uniform(0, height - 20)
            boxes.append(
                [x1, y1, x1 + rng.uniform(2, width - x1), y1 + rng.uniform(2, height - y1)]
            )
            labels.append(int(rng.integers(3)))
        items.append(
            {
                "image": image,
                "mask": mask,
                "bboxes": np.asarray(boxes, np.float32).reshape(-1, 4),
                "labels": np.asarray(labels, np.int64),
            }
        )
    return items


def _pipeline(mosaic: type, size: int, cell: tuple[int, int], grid: int, seed: int) -> A.Compose:
    step = mosaic(
        grid_yx=(grid, grid),
        target_size=(2 * size, 2 * size),
        cell_shape=cell,
        center_range=(0.0, 1.0),
        fit_mode="contain",
        fill=114,
        p=1.0,
    )
    boxes = A.BboxParams(
        format="pascal_voc", label_fields=["labels"], min_visibility=0.1, min_width=2
    )
    return A.Compose([step], bbox_params=boxes, seed=seed)


@pytest.mark.parametrize(
    ("shape", "cell", "grid"),
    [
        ((200, 200, 3), (224, 224), 3),  # NEU-DET: square pictures, square cells
        ((240, 320, 3), (168, 224), 3),  # 4:3 frames in 4:3 cells (the winding default)
        ((250, 320), (224, 224), 3),  # grey frames letterboxed into square cells (odd padding)
        ((300, 170), (160, 160), 2),  # portrait pictures (odd padding), junction at the centre
    ],
)
def test_fast_mosaic_equals_albumentations(shape, cell, grid):
    rng = np.random.default_rng(0)
    pictures = _pictures(rng, shape, 40)
    size = max(cell)
    reference = _pipeline(A.Mosaic, size, cell, grid, seed=7)
    fast = _pipeline(FastMosaic, size, cell, grid, seed=7)
    boxes_seen = 0
    for index in range(12):
        primary = pictures[index]
        others = [pictures[int(i)] for i in rng.choice(len(pictures), size=grid * grid - 1)]
        want = reference(**primary, mosaic_metadata=others)
        got = fast(**primary, mosaic_metadata=others)
        np.testing.assert_array_equal(got["image"], want["image"])
        np.testing.assert_array_equal(got["mask"], want["mask"])
        np.testing.assert_allclose(
            np.asarray(got["bboxes"]).reshape(-1, 4),
            np.asarray(want["bboxes"]).reshape(-1, 4),
            atol=1e-3,
        )
        np.testing.assert_array_equal(got["labels"], want["labels"])
        boxes_seen += len(want["bboxes"])
    assert boxes_seen > 10  # the comparison covered boxes, not only empty lists


def test_fast_mosaic_refuses_cover_mode():
    with pytest.raises(ValueError, match="contain"):
        FastMosaic(target_size=(64, 64), cell_shape=(32, 32), fit_mode="cover")
