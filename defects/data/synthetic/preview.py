"""Grid preview of a YOLO-layout dataset with its boxes drawn, saved as a plot artifact.

Looking at the data is the cheapest check that labels line up with defects, so every
generated dataset can be rendered to one PNG without a GUI (Agg, default font only).
"""

from __future__ import annotations

import math
from pathlib import Path

from defects.data.images import list_images, read_image
from defects.formats.yolo import read_class_names, read_yolo_labels

__all__ = ["save_preview"]

_COLORS = ("#ff3b30", "#34c759", "#0a84ff", "#ffcc00", "#bf5af2", "#ff9f0a", "#64d2ff", "#ff375f")


def _class_names(root: Path) -> list[str]:
    """Names from ``data.yaml``; an empty list when it is missing so ids are shown instead."""
    data_yaml = root / "data.yaml"
    return list(read_class_names(data_yaml)) if data_yaml.is_file() else []


def save_preview(root: str | Path, out_png: str | Path, n: int = 8, split: str = "train") -> Path:
    """Draw the first ``n`` images of ``root/split`` with their labelled boxes into ``out_png``."""
    # Imported here so generating data (e.g. from a Hydra config) never pays for matplotlib.
    from matplotlib.figure import Figure  # Figure + savefig uses Agg; pyplot is never touched
    from matplotlib.patches import Rectangle

    root, out_png = Path(root), Path(out_png)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    images = list_images(root / split / "images")[:n]
    if not images:
        raise FileNotFoundError(f"no images under {root / split / 'images'}")
    names = _class_names(root)
    labels_dir = root / split / "labels"

    cols = min(4, len(images))
    rows = math.ceil(len(images) / cols)
    first = read_image(images[0])
    aspect = first.shape[0] / first.shape[1]
    cell_w = 4.0
    fig = Figure(figsize=(cols * cell_w, rows * (cell_w * aspect + 0.35)), dpi=100)
    for k, path in enumerate(images):
        ax = fig.add_subplot(rows, cols, k + 1)
        image = read_image(path)
        height, width = image.shape
        ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        label_path = labels_dir / f"{path.stem}.txt"
        boxes = read_yolo_labels(label_path, len(names) or None) if label_path.is_file() else []
        for box in boxes:
            x1, y1, x2, y2 = box.to_xyxy(width, height)
            color = _COLORS[box.class_id % len(_COLORS)]
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, lw=1.2))
            name = names[box.class_id] if box.class_id < len(names) else str(box.class_id)
            ax.text(
                x1,
                max(y1 - 2, 0),
                name,
                color="black",
                fontsize=6,
                va="bottom",
                bbox={"facecolor": color, "edgecolor": "none", "pad": 0.8, "alpha": 0.85},
            )
        count = f"{len(boxes)} defect{'s' if len(boxes) != 1 else ''}" if boxes else "defect-free"
        ax.set_title(f"{split}/{path.name} ({count})", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout(pad=0.4)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, format="png")
    return out_png
