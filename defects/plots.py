"""Figures logged as artifacts: boxes on images, PR curves. Agg backend, default font only."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from defects.formats.io import atomic_write_with

COLORS = ("#ff3b30", "#34c759", "#0a84ff", "#ffcc00", "#bf5af2", "#ff9f0a", "#64d2ff", "#ff375f")


def draw_boxes(
    ax: Axes,
    boxes: np.ndarray,
    class_ids: Sequence[int],
    names: Sequence[str],
    scores: Sequence[float] | None = None,
    dashed: bool = False,
) -> None:
    """Boxes (x1, y1, x2, y2 pixels) coloured by class; dashed for ground truth, with scores."""
    for i, (box, class_id) in enumerate(zip(boxes, class_ids, strict=True)):
        x1, y1, x2, y2 = (float(v) for v in box)
        color = COLORS[int(class_id) % len(COLORS)]
        ax.add_patch(
            Rectangle(
                (x1, y1),
                x2 - x1,
                y2 - y1,
                fill=False,
                edgecolor=color,
                lw=1.2,
                linestyle="--" if dashed else "-",
            )
        )
        name = names[class_id] if 0 <= class_id < len(names) else str(class_id)
        text = name if scores is None else f"{name} {scores[i]:.2f}"
        ax.text(
            x1,
            max(y1 - 2, 0),
            text,
            color="black",
            fontsize=6,
            va="bottom",
            bbox={"facecolor": color, "edgecolor": "none", "pad": 0.8, "alpha": 0.85},
        )


def image_grid(
    count: int, aspect: float, cell_width: float = 4.0, columns: int = 4
) -> tuple[Figure, list[Axes]]:
    """A figure with `count` tick-free image cells, `columns` per row."""
    cols = max(1, min(columns, count))
    rows = math.ceil(count / cols)
    fig = Figure(figsize=(cols * cell_width, rows * (cell_width * aspect + 0.35)), dpi=100)
    axes = [fig.add_subplot(rows, cols, k + 1) for k in range(count)]
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes


def save_figure(fig: Figure, out_png: str | Path) -> Path:
    fig.tight_layout(pad=0.4)
    # Whole or not at all: a run killed while drawing leaves the previous figure.
    return atomic_write_with(out_png, lambda tmp: fig.savefig(tmp, format="png"))


def plot_predictions(
    images: Sequence[np.ndarray],
    truths: Sequence[dict],
    preds: Sequence[dict],
    names: Sequence[str],
    out_png: str | Path,
) -> Path:
    """Truth dashed, predictions solid with scores; dicts hold boxes, class_ids (+ scores)."""
    fig, axes = image_grid(len(images), images[0].shape[0] / images[0].shape[1])
    for ax, image, truth, pred in zip(axes, images, truths, preds, strict=True):
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        draw_boxes(ax, truth["boxes"], truth["class_ids"], names, dashed=True)
        draw_boxes(ax, pred["boxes"], pred["class_ids"], names, pred["scores"])
        ax.set_title(
            f"{len(truth['class_ids'])} true (dashed), {len(pred['class_ids'])} predicted",
            fontsize=7,
        )
    return save_figure(fig, out_png)


def plot_pr_curves(
    rows: Sequence[dict], out_png: str | Path, title: str = "PR curve, IoU 0.5"
) -> Path:
    """Rows of {class, recall, precision} (see defects.metrics.detection.pr_curves)."""
    fig = Figure(figsize=(5, 4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for k, name in enumerate(dict.fromkeys(row["class"] for row in rows)):
        points = [(r["recall"], r["precision"]) for r in rows if r["class"] == name]
        ax.plot(*zip(*points, strict=True), label=name, color=COLORS[k % len(COLORS)])
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    if rows:
        ax.legend(fontsize=7, loc="lower left")
    return save_figure(fig, out_png)


def plot_confusion_matrix(
    fractions: np.ndarray,
    counts: np.ndarray,
    names: Sequence[str],
    out_png: str | Path,
    title: str = "confusion matrix (normalized per true class), IoU 0.5",
) -> Path:
    """Rows predicted, columns true (the last of each is background); cells show the share
    of the true class's boxes and, below it, the count."""
    size = 1.0 + 0.7 * len(names)
    fig = Figure(figsize=(size + 1.2, size), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ticks = range(len(names))
    ax.set_xticks(ticks, names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(ticks, names, fontsize=7)
    ax.set(xlabel="true", ylabel="predicted", title=title)
    ax.title.set_fontsize(8)
    for i in ticks:
        for j in ticks:
            if counts[i, j]:
                color = "white" if fractions[i, j] > 0.5 else "black"
                text = f"{fractions[i, j]:.2f}\n{int(counts[i, j])}"
                ax.text(j, i, text, ha="center", va="center", fontsize=6, color=color)
    return save_figure(fig, out_png)


def overlay_masks(image: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """uint8 RGB of a grey or RGB image with each class mask [K, H, W] tinted and outlined.

    Class k (0-based) gets COLORS[k]; used by previews, evaluation figures, `predict` overlays
    and the Flask page alike, so a class has one colour everywhere.
    """
    import cv2
    from matplotlib.colors import to_rgb

    rgb = image.astype(np.float32)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    kernel = np.ones((3, 3), np.uint8)
    for k, mask in enumerate(np.asarray(masks, dtype=bool)):
        if not mask.any():
            continue
        color = np.array(to_rgb(COLORS[k % len(COLORS)]), np.float32) * 255.0
        rgb[mask] = 0.7 * rgb[mask] + 0.3 * color
        edge = mask & ~cv2.erode(mask.astype(np.uint8), kernel).astype(bool)
        rgb[edge] = color
    return np.clip(rgb, 0, 255).astype(np.uint8)


def draw_boxes_rgb(
    image: np.ndarray,
    boxes: np.ndarray,
    class_ids: Sequence[int],
    labels: Sequence[str],
    scores: Sequence[float],
) -> np.ndarray:
    """uint8 RGB copy of `image` with each box and "label score" drawn in its class colour
    (the same colours as the figures); for overlays written by `predict`, the page, the stream.
    """
    import cv2
    from matplotlib.colors import to_rgb

    rgb = np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image.copy()
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    for box, class_id, label, score in zip(boxes, class_ids, labels, scores, strict=True):
        color = tuple(int(255 * c) for c in to_rgb(COLORS[int(class_id) % len(COLORS)]))
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        cv2.rectangle(rgb, (x1, y1), (x2, y2), color, 2)
        cv2.putText(
            rgb,
            f"{label} {float(score):.2f}",
            (x1, max(y1 - 4, 12)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            color,
            1,
            cv2.LINE_AA,
        )
    return rgb
