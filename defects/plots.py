"""Figures logged as artifacts: boxes on images, picked examples, PR curves, per-class bars,
threshold curves. Agg backend, default font only."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from defects.formats.io import atomic_write_with

if TYPE_CHECKING:
    from defects.examples import Panel

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


def save_figure(fig: Figure, out_png: str | Path, heading: str | None = None) -> Path:
    """Laid out (with room for `heading` above every panel title) and written as PNG."""
    top = 1.0
    if heading:
        fig.suptitle(heading, fontsize=10)
        top -= 0.45 / fig.get_figheight()
    fig.tight_layout(pad=0.4, rect=(0.0, 0.0, 1.0, top))
    # Whole or not at all: a run killed while drawing leaves the previous figure.
    return atomic_write_with(out_png, lambda tmp: fig.savefig(tmp, format="png"))


def plot_examples(
    rows: Sequence[Sequence[Panel]],
    draw: Callable[[Axes, Panel], None],
    aspect: float,
    out_png: str | Path,
    heading: str,
    cell_width: float = 4.0,
    columns: int | None = None,
) -> Path:
    """The panels `defects.examples.pick_examples` chose, a figure row per row of panels
    (wrapped at `columns`); `draw` paints a panel's image, the panel's title says what it
    shows. A slot the split has nothing for stays grey with its title saying so (the figure
    never skips silently). `aspect` is height / width of a cell's image."""
    cols = columns or max((len(row) for row in rows), default=1)
    lines = [list(row[k : k + cols]) for row in rows for k in range(0, len(row), cols)]
    height = cell_width * aspect + 0.45
    fig = Figure(figsize=(cols * cell_width, len(lines) * height + 0.5), dpi=100)
    for r, line in enumerate(lines):
        for c, panel in enumerate(line):
            ax = fig.add_subplot(len(lines), cols, r * cols + c + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            if panel.candidate is None:
                ax.set_box_aspect(aspect)
                ax.set_facecolor("0.93")
                ax.text(
                    0.5,
                    0.5,
                    panel.title,
                    ha="center",
                    va="center",
                    fontsize=9,
                    color="0.35",
                    wrap=True,
                    transform=ax.transAxes,
                )
                continue
            draw(ax, panel)
            ax.set_title(panel.title, fontsize=9)
    return save_figure(fig, out_png, heading)


def plot_class_bars(
    series: Mapping[str, Mapping[str, float]],
    class_names: Sequence[str],
    out_png: str | Path,
    title: str,
) -> Path:
    """Horizontal bars per class (top to bottom in class order), one bar per series (e.g. AP
    and AP50), each labelled with its value; a class a series has no number for reads n/a."""
    n = max(len(series), 1)
    bar = 0.8 / n
    fig = Figure(figsize=(7.0, 1.3 + 0.35 * n * len(class_names)), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    palette = (
        "#0a84ff",
        "#ff9f0a",
        "#34c759",
        "#bf5af2",
        "#ff3b30",
        "#64d2ff",
        "#ffcc00",
        "#8e8e93",
    )
    for s, (name, values) in enumerate(series.items()):
        offset = (s - (n - 1) / 2) * bar
        present = [(k, float(values[c])) for k, c in enumerate(class_names) if c in values]
        ys = [k + offset for k, _ in present]
        ax.barh(ys, [v for _, v in present], height=0.9 * bar, color=palette[s % 8], label=name)
        for y, (_, value) in zip(ys, present, strict=True):
            ax.text(value + 0.01, y, f"{value:.3f}", va="center", fontsize=8)
        for k, c in enumerate(class_names):
            if c not in values:
                ax.text(0.01, k + offset, f"{name}: n/a", va="center", fontsize=8, color="0.4")
    ax.set_yticks(range(len(class_names)), class_names, fontsize=9)
    ax.set_ylim(len(class_names) - 0.5, -0.5)  # first class on top
    ax.set_xlim(0.0, 1.12)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=n, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, out_png)


def plot_threshold_curves(
    curves: Sequence[Mapping[str, Any]], out_png: str | Path, title: str
) -> Path:
    """One panel per threshold the tuning searched: each series against the threshold's
    values, the objective drawn bold, the chosen value marked with a star and a dashed line.

    A curve: {parameter, group, objective, x, series: {name: values}, chosen}, optional
    `grid` (values like 0, 64, ..., 4096: drawn evenly spaced, each labelled) and `target`
    ({series, value}: a line to reach).
    No curves (a model that records no search): a figure that says so."""
    cols = max(1, min(3, len(curves)))
    rows = max(1, math.ceil(len(curves) / cols))
    fig = Figure(figsize=(cols * 4.4, rows * 3.4 + 0.5), dpi=100)
    if not curves:
        ax = fig.add_subplot(1, 1, 1)
        ax.set_axis_off()
        message = "this model records no threshold search\n(thresholds as configured)"
        ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=10, color="0.35")
    for k, curve in enumerate(curves):
        ax = fig.add_subplot(rows, cols, k + 1)
        searched = [float(v) for v in curve["x"]]
        objective, chosen = str(curve["objective"]), float(curve["chosen"])
        at = int(np.argmin(np.abs(np.asarray(searched) - chosen)))
        x = list(range(len(searched))) if curve.get("grid") else searched
        for s, (name, values) in enumerate(curve["series"].items()):
            main = name == objective
            ax.plot(
                x,
                values,
                marker="o" if len(x) <= 20 else None,
                ms=3,
                lw=2.2 if main else 1.1,
                color=COLORS[(2, 5, 1, 4)[s % 4]],
                label=name,
            )
        reached = float(curve["series"][objective][at])
        ax.axvline(x[at], color="black", ls="--", lw=0.9)
        ax.plot([x[at]], [reached], marker="*", ms=13, color="black", zorder=5)
        target = curve.get("target")
        if target:
            ax.axhline(float(target["value"]), color="0.5", ls=":", lw=1)
        if curve.get("grid"):
            ax.set_xticks(x, [f"{v:g}" for v in searched])
        group = f"{curve['group']}: " if curve.get("group") else ""
        ax.set_title(
            f"{group}{curve['parameter']}\nchosen {chosen:.4g} ({objective} {reached:.3f})",
            fontsize=9,
        )
        ax.set_xlabel(str(curve["parameter"]), fontsize=8)
        ax.set_ylim(-0.02, max(1.02, max(max(v) for v in curve["series"].values()) + 0.02))
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if len(curve["series"]) > 1:
            ax.legend(fontsize=7, loc="best")
    return save_figure(fig, out_png, title)


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
    size = 1.4 + 0.9 * len(names)
    fig = Figure(figsize=(size + 1.2, size), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ticks = range(len(names))
    ax.set_xticks(ticks, names, rotation=45, ha="right", fontsize=9)
    ax.set_yticks(ticks, names, fontsize=9)
    ax.set(xlabel="true", ylabel="predicted", title=title)
    ax.title.set_fontsize(10)
    for i in ticks:
        for j in ticks:
            if counts[i, j]:
                color = "white" if fractions[i, j] > 0.5 else "black"
                text = f"{fractions[i, j]:.2f}\n{int(counts[i, j])}"
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color=color)
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
