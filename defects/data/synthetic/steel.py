"""Synthetic steel-strip surface images with Severstal-style RLE segmentation masks.

The embedded default dataset of the ``steel`` task: grey 1600x256 top-down views of a rolled
strip (rolling direction = image width) with pixel masks of four defect classes in the
``ImageId,ClassId,EncodedPixels`` layout of the Severstal competition. The surface has rolling
streaks, grain, lighting bands and harmless oil smudges, so a model cannot find defects by
looking for "anything not flat".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from defects.data.synthetic.common import (
    along,
    check_size,
    check_split_args,
    draw_polyline,
    normalized_weights,
    plan_split,
    smooth_1d,
    split_writer,
)
from defects.formats.severstal import write_severstal_csv

__all__ = [
    "STEEL_CLASSES",
    "generate_steel_dataset",
    "render_steel_strip",
    "save_steel_preview",
]

STEEL_CLASSES: tuple[str, ...] = ("pits", "inclusion", "scratches", "patches")  # class ids 1..4

MIN_WIDTH = 128
MIN_HEIGHT = 48
_PLACEMENT_TRIES = 20
_GAP_KERNEL = np.ones((9, 9), np.uint8)  # defects of different kinds stay >= 4 px apart
_Defect = tuple[np.ndarray, np.ndarray]  # (signed brightness change, bool mask), full image


# --------------------------------------------------------------------------- surface


def _coarse_noise(rng: np.random.Generator, shape: tuple[int, int], size: tuple[int, int]):
    """Smooth random field: a small normal grid upsampled cubically to ``size`` (w, h)."""
    grid = rng.standard_normal(shape).astype(np.float32)
    return cv2.resize(grid, size, interpolation=cv2.INTER_CUBIC)


def _steel_surface(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, ...]:
    """Defect-free brightness in [0, 1] before grain, and the lighting field (for defects)."""
    size = (width, height)
    # Rolling texture: per-row noise stretched along x gives long fine horizontal streaks;
    # a coarser and a finer layer so some streaks run the whole strip and some are short.
    long_streaks = cv2.resize(
        rng.standard_normal((height, max(width // 64, 4))).astype(np.float32),
        size,
        interpolation=cv2.INTER_LINEAR,
    )
    short_streaks = cv2.resize(
        rng.standard_normal((height, max(width // 8, 4))).astype(np.float32),
        size,
        interpolation=cv2.INTER_LINEAR,
    )
    streaks = 0.65 * long_streaks + 0.35 * short_streaks
    streaks = cv2.GaussianBlur(streaks, (0, 0), sigmaX=1.5, sigmaY=0.6)
    # Roll marks: a few rows a touch brighter/darker along the full length.
    rows = cv2.GaussianBlur(rng.standard_normal((height, 1)).astype(np.float32), (0, 0), 0.8)
    texture = rng.uniform(0.025, 0.045) * streaks + rng.uniform(0.005, 0.015) * rows

    # Everything smooth lives on a coarse grid and is upsampled once.
    gh, gw = height // 8 + 2, width // 8 + 2
    uy = np.linspace(-0.5, 0.5, gh, dtype=np.float32)[:, None]
    bands = smooth_1d(rng, gw, 0.05, (gw * 0.9, gw * 0.45, gw * 0.22))[None, :]
    vignette = 1.0 - rng.uniform(0.15, 0.35) * (2.0 * (uy - rng.uniform(-0.15, 0.15))) ** 2
    light_small = (1.0 + rng.uniform(0.5, 1.5) * bands) * vignette
    light_small *= 1.0 + rng.uniform(-0.12, 0.12) * np.linspace(-0.5, 0.5, gw)[None, :]
    # Oil / brightness smudges: soft, irregular, low-contrast; not defects.
    smudge = np.zeros((gh, gw), np.float32)
    yy, xx = np.mgrid[0:gh, 0:gw].astype(np.float32)
    for _ in range(int(rng.integers(0, 4))):
        cx, cy = rng.uniform(0, gw), rng.uniform(0, gh)
        rx, ry = rng.uniform(4, 25), rng.uniform(3, 10)
        blob = np.exp(-(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2))
        smudge += rng.choice([-1.0, 1.0]) * rng.uniform(0.03, 0.07) * blob
    smudge *= 1.0 + 0.5 * _coarse_noise(rng, (4, 8), (gw, gh))
    lighting = cv2.resize(light_small.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    smudge = cv2.resize(smudge, size, interpolation=cv2.INTER_LINEAR)
    mottle = _coarse_noise(rng, (5, 16), size)
    base = rng.uniform(0.38, 0.55) + 0.012 * mottle + texture + smudge
    return base, lighting


def _grain(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Fine sensor/surface grain, slightly elongated along the rolling direction."""
    noise = rng.random(shape, dtype=np.float32) - 0.5
    clump = cv2.GaussianBlur(noise, (0, 0), sigmaX=1.2, sigmaY=0.5)
    return rng.uniform(0.025, 0.04) * (noise + 2.0 * clump)


# --------------------------------------------------------------------------- defects


def _scale(width: int, height: int) -> tuple[float, float]:
    """Defect sizes are tuned for 1600x256 and shrink with smaller images."""
    return min(1.0, width / 1600.0), min(1.0, height / 256.0)


def _mask(alpha: np.ndarray, threshold: float, grow: int) -> np.ndarray:
    """Bool mask of the visible defect pixels, grown by ``grow`` px like a hand annotation."""
    mask = (alpha > threshold).astype(np.uint8)
    if grow > 0:
        mask = cv2.dilate(mask, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8))
    return mask.astype(bool)


def _draw_pits(rng: np.random.Generator, width: int, height: int) -> _Defect:
    """Cluster of small dark dots (pitting)."""
    sx, sy = _scale(width, height)
    alpha = np.zeros((height, width), np.float32)
    rx = rng.uniform(8.0, 45.0) * max(sx, 0.4)
    ry = rng.uniform(5.0, 25.0) * max(sy, 0.4)
    cx = rng.uniform(rx + 3, width - rx - 3)
    cy = rng.uniform(ry + 3, height - ry - 3)
    n = int(rng.integers(6, 30))
    px = cx + rx * np.clip(rng.standard_normal(n) * 0.5, -1, 1)
    py = cy + ry * np.clip(rng.standard_normal(n) * 0.5, -1, 1)
    radii = rng.uniform(1.0, 3.2, n)
    depth = rng.uniform(0.6, 1.0, n)
    for x, y, r, d in zip(px, py, radii, depth, strict=True):
        centre = (int(round(x * 16)), int(round(y * 16)))
        cv2.circle(alpha, centre, int(round(r * 16)), float(d), -1, cv2.LINE_AA, 4)
    alpha = cv2.GaussianBlur(alpha, (0, 0), 0.6)
    return -rng.uniform(0.18, 0.32) * alpha, _mask(alpha, 0.15, 2)


def _draw_inclusion(rng: np.random.Generator, width: int, height: int) -> _Defect:
    """Thin dark elongated streak along the rolling direction, sometimes broken."""
    sx, _ = _scale(width, height)
    alpha = np.zeros((height, width), np.float32)
    length = min(rng.uniform(80.0, 450.0) * sx, width * 0.7)
    x0 = rng.uniform(4.0, width - 4.0 - length)
    xs = np.arange(x0, x0 + length, 4.0, dtype=np.float32)
    ys = rng.uniform(6.0, height - 6.0) + rng.uniform(-0.015, 0.015) * (xs - x0)
    ys = np.clip(ys + smooth_1d(rng, len(xs), 1.2, (len(xs) * 0.7, 9.0)), 3, height - 4)
    n = len(xs) - 1
    t = np.linspace(0.0, 1.0, n)
    values = along(rng, n, 0.5) * np.sin(np.pi * np.clip(t * 1.1 - 0.05, 0, 1)) ** 0.4
    values[rng.random(n) < 0.08] = 0.0  # a few gaps: inclusions are often interrupted
    thickness = np.where(values > 0.6, int(rng.integers(2, 4)), 1)
    draw_polyline(alpha, xs, ys, np.clip(values, 0.0, 1.0), thickness)
    alpha = cv2.GaussianBlur(alpha, (0, 0), sigmaX=1.0, sigmaY=0.5)
    return -rng.uniform(0.2, 0.35) * alpha, _mask(alpha, 0.15, 1)


def _draw_scratches(rng: np.random.Generator, width: int, height: int) -> _Defect:
    """One or a few parallel long thin lines, bright or dark, usually slightly diagonal."""
    sx, _ = _scale(width, height)
    alpha = np.zeros((height, width), np.float32)
    # Mostly shallow diagonals; a quarter run steeply across the strip.
    angle = rng.uniform(0.03, 0.45) if rng.random() < 0.75 else rng.uniform(0.6, 1.35)
    angle *= rng.choice([-1.0, 1.0])
    length = rng.uniform(120.0, 900.0) * sx
    cx, cy = rng.uniform(0.1, 0.9) * width, rng.uniform(0.2, 0.8) * height
    count = 1 if rng.random() < 0.65 else int(rng.integers(2, 5))
    spacing = rng.uniform(4.0, 14.0)
    ca, sa = math.cos(angle), math.sin(angle)
    for k in range(count):
        offset = (k - (count - 1) / 2) * spacing * rng.uniform(0.7, 1.3)
        part = length * rng.uniform(0.5, 1.0)
        s = np.arange(-part / 2, part / 2, 6.0, dtype=np.float32)
        if len(s) < 3:
            s = np.linspace(-part / 2, part / 2, 3, dtype=np.float32)
        bend = smooth_1d(rng, len(s), 1.5, (len(s) * 1.5,))
        xs = cx + s * ca - (offset + bend) * sa
        ys = cy + s * sa + (offset + bend) * ca
        n = len(s) - 1
        values = along(rng, n, 0.45)
        thickness = np.where(values > 0.8, int(rng.integers(1, 3)), 1)
        draw_polyline(alpha, xs, ys, values, thickness)
    alpha = cv2.GaussianBlur(alpha, (0, 0), 0.5)
    sign = 1.0 if rng.random() < 0.6 else -1.0
    return sign * rng.uniform(0.18, 0.32) * alpha, _mask(alpha, 0.15, 2)


def _draw_patches(rng: np.random.Generator, width: int, height: int) -> _Defect:
    """Large irregular darker or lighter blotch with its own mottled texture."""
    sx, sy = _scale(width, height)
    shade = np.zeros((height, width), np.float32)
    mask = np.zeros((height, width), bool)
    pw = int(min(rng.uniform(100.0, 450.0) * sx, width * 0.8))
    ph = int(min(rng.uniform(50.0, 240.0) * sy, height))
    pw, ph = max(pw, 16), max(ph, 12)
    x1 = int(rng.integers(0, width - pw + 1))
    y1 = int(rng.integers(0, height - ph + 1))
    yy = np.linspace(-1.0, 1.0, ph, dtype=np.float32)[:, None]
    xx = np.linspace(-1.0, 1.0, pw, dtype=np.float32)[None, :]
    field = 1.0 - (xx**2 + yy**2) + 0.45 * _coarse_noise(rng, (5, 7), (pw, ph))
    # Fade to nothing at the box edge so the blotch never shows a straight cut-off side.
    window = np.clip((1.0 - np.maximum(np.abs(xx), np.abs(yy))) / 0.2, 0.0, 1.0)
    field = cv2.GaussianBlur(field * window, (0, 0), 1.5)
    thr = rng.uniform(0.25, 0.45)
    inside = field > thr
    if not inside.any():  # keep at least the centre so a requested patch never vanishes
        inside[ph // 2 - 2 : ph // 2 + 3, pw // 2 - 2 : pw // 2 + 3] = True
    alpha = np.clip((field - thr) / 0.2, 0.0, 1.0)
    alpha = np.maximum(alpha, inside.astype(np.float32) * 0.5)
    streaky = cv2.resize(
        rng.standard_normal((ph, max(pw // 20, 2))).astype(np.float32),
        (pw, ph),
        interpolation=cv2.INTER_LINEAR,
    )
    texture = 0.75 + 0.15 * _coarse_noise(rng, (4, 6), (pw, ph)) + 0.1 * streaky
    sign = -1.0 if rng.random() < 0.7 else 1.0
    shade[y1 : y1 + ph, x1 : x1 + pw] = sign * rng.uniform(0.1, 0.2) * alpha * texture
    mask[y1 : y1 + ph, x1 : x1 + pw] = inside
    return shade, mask


_Drawer = Callable[[np.random.Generator, int, int], _Defect]
DEFECT_RENDERERS: dict[int, _Drawer] = {
    1: _draw_pits,
    2: _draw_inclusion,
    3: _draw_scratches,
    4: _draw_patches,
}


def render_steel_strip(
    rng: np.random.Generator, width: int, height: int, defect_classes: Sequence[int]
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Render one strip image with the requested defects (class ids 1..4, repeats allowed).

    Defects never overlap (a pixel belongs to at most one class); one that cannot be placed
    clear of the earlier ones after a few tries is dropped, but the first always lands.
    Returns a uint8 ``(height, width)`` image and ``{class_id: bool mask}`` for the classes
    present (masks of repeated classes are merged).
    """
    check_size(width, height, MIN_WIDTH, MIN_HEIGHT)
    for class_id in defect_classes:
        if class_id not in DEFECT_RENDERERS:
            raise ValueError(f"unknown steel class id {class_id!r}; expected 1..4")
    base, lighting = _steel_surface(rng, width, height)
    shade = np.zeros((height, width), np.float32)
    masks: dict[int, np.ndarray] = {}
    taken = np.zeros((height, width), np.uint8)
    for class_id in defect_classes:
        for _ in range(_PLACEMENT_TRIES):
            delta, mask = DEFECT_RENDERERS[class_id](rng, width, height)
            if not mask.any():
                continue
            if taken.any() and np.any(mask & (cv2.dilate(taken, _GAP_KERNEL) > 0)):
                continue
            shade += delta
            taken |= mask.astype(np.uint8)
            masks[class_id] = masks[class_id] | mask if class_id in masks else mask
            break
    img = (base + shade) * lighting + _grain(rng, (height, width))
    out = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out, masks


# --------------------------------------------------------------------------- dataset


def generate_steel_dataset(
    out_dir: str | Path,
    n_train: int = 80,
    n_valid: int = 20,
    n_test: int = 20,
    width: int = 1600,
    height: int = 256,
    class_weights: Sequence[float] = (0.12, 0.03, 0.7, 0.15),
    defect_free_fraction: float = 0.5,
    max_defects: int = 2,
    seed: int = 0,
) -> dict:
    """Write a Severstal-layout steel strip dataset to ``out_dir`` atomically.

    Layout: ``{train,valid,test}/images/NNNNN.png`` (8-bit grey) and ``{split}/train.csv``
    (``ImageId,ClassId,EncodedPixels``; a defect-free image gets one empty row). Each split
    draws from ``np.random.default_rng([seed, split_index])``, so reruns are byte-identical.
    Returns ``{"images", "defects" (images per class), "defect_free", "seed"}``.
    """
    weights = normalized_weights(STEEL_CLASSES, class_weights)
    counts = check_split_args(n_train, n_valid, n_test, defect_free_fraction, max_defects)
    check_size(width, height, MIN_WIDTH, MIN_HEIGHT)

    summary: dict = {
        "images": dict(counts),
        "defects": {name: 0 for name in STEEL_CLASSES},
        "defect_free": 0,
        "seed": seed,
    }
    # Same scheme as the weld generator: split-level draws, then one spawned child RNG per
    # image so two threads can render and write in parallel and stay deterministic.
    with split_writer(out_dir, counts, ("{split}/images",)) as writer:
        for split in writer.splits():
            plan = plan_split(
                seed, split.index, split.count, defect_free_fraction, max_defects, weights
            )
            jobs = [
                (child, [j + 1 for j in classes], split.dir / "images" / f"{i:05d}.png")
                for i, (child, classes) in enumerate(plan)
            ]

            def make(job: tuple[np.random.Generator, list[int], Path]) -> dict[int, np.ndarray]:
                child, classes, image_path = job
                img, masks = render_steel_strip(child, width, height, classes)
                if not cv2.imwrite(str(image_path), img):
                    raise OSError(f"could not write {image_path}")
                return masks

            table: dict[str, dict[int, np.ndarray]] = {}
            for (_, _, image_path), masks in zip(jobs, writer.map(make, jobs), strict=True):
                table[image_path.name] = masks
                summary["defect_free"] += not masks
                for class_id in masks:
                    summary["defects"][STEEL_CLASSES[class_id - 1]] += 1
            write_severstal_csv(split.dir / "train.csv", table)
    return summary


def save_steel_preview(
    root: str | Path,
    out_png: str | Path,
    n: int = 4,
    split: str = "train",
    class_names: Sequence[str] = STEEL_CLASSES,
) -> Path:
    """Draw the first ``n`` images of ``root/split`` with coloured mask overlays into ``out_png``.

    Reads either segmentation layout (``train.csv`` RLE or ``masks/`` index PNGs). One image
    per row (a 1600x256 strip is unreadable in a four-column grid); class k has
    ``COLORS[k - 1]`` from ``defects.plots``.
    """
    from defects.data.images import read_image
    from defects.data.segmentation import load_masks, scan_segmentation_split
    from defects.data.synthetic.preview import preview_images
    from defects.plots import image_grid, overlay_masks, save_figure

    root = Path(root)
    images = preview_images(root, split, n)
    shape = read_image(images[0]).shape
    layout = "severstal" if (root / split / "train.csv").is_file() else "masks"
    samples = {
        s.image: s
        for s in scan_segmentation_split(root, split, len(class_names), layout, shape)
        if s.image in set(images)
    }
    cell_w = max(6.0, shape[1] / 100.0)  # native resolution at dpi 100 for 1600-px strips
    fig, axes = image_grid(len(images), shape[0] / shape[1], cell_width=cell_w, columns=1)
    for ax, path in zip(axes, images, strict=True):
        image = read_image(path)
        masks = load_masks(samples[path], image.shape, len(class_names)).transpose(2, 0, 1)
        ax.imshow(overlay_masks(image, masks), interpolation="nearest")
        present = [k for k in range(len(class_names)) if masks[k].any()]
        names = [f"{k + 1}:{class_names[k]}" for k in present]
        ax.set_title(f"{split}/{path.name} ({', '.join(names) or 'no defects'})", fontsize=8)
    return save_figure(fig, out_png)
