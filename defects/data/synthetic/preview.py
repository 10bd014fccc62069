"""Grid preview of a YOLO-layout dataset with its boxes drawn, saved as a plot artifact.

Looking at the data is the cheapest check that labels line up with defects, so every
prepared dataset is rendered to one PNG without a GUI (Agg, default font only).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from defects.data.images import list_images, read_image
from defects.formats.yolo import read_class_names, read_yolo_labels

__all__ = ["preview_images", "save_preview"]


def preview_images(root: Path, split: str, n: int) -> list[Path]:
    """The first ``n`` images of a split, refusing an empty selection up front."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    images = list_images(root / split / "images")[:n]
    if not images:
        raise FileNotFoundError(f"no images under {root / split / 'images'}")
    return images


def save_preview(
    root: str | Path, out_png: str | Path, n: int = 8, split: str = "train", channels: int = 1
) -> Path:
    """Draw the first ``n`` images of ``root/split`` with their labelled boxes into ``out_png``."""
    from defects.plots import draw_boxes, image_grid, save_figure  # matplotlib only when drawing

    root = Path(root)
    images = preview_images(root, split, n)
    data_yaml = root / "data.yaml"
    names = list(read_class_names(data_yaml)) if data_yaml.is_file() else []
    first = read_image(images[0], channels)
    fig, axes = image_grid(len(images), first.shape[0] / first.shape[1])
    for ax, path in zip(axes, images, strict=True):
        image = read_image(path, channels)
        height, width = image.shape[:2]
        ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")  # grey if 2-D
        boxes = read_yolo_labels(root / split / "labels" / f"{path.stem}.txt", len(names) or None)
        xyxy = np.array([b.to_xyxy(width, height) for b in boxes]).reshape(-1, 4)
        draw_boxes(ax, xyxy, [b.class_id for b in boxes], names)
        count = f"{len(boxes)} defect{'s' if len(boxes) != 1 else ''}" if boxes else "no defects"
        ax.set_title(f"{split}/{path.name} ({count})", fontsize=7)
    return save_figure(fig, out_png)
