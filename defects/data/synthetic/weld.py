"""Synthetic X-ray radiographs of butt-weld seams with YOLO boxes.

This is the embedded default dataset of the ``weld`` task: it lets the whole pipeline
(training, evaluation, plots) run offline without downloading anything. Images follow the
film-viewing convention: thicker metal is brighter, so the weld bead is brighter than the plate
and every defect (a void or a low-density inclusion) is darker than the metal around it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from defects.data.synthetic.common import (
    SHIFT,
    SPLITS,
    along,
    check_class_names,
    check_size,
    check_split_args,
    draw_polyline,
    fixed_point,
    normalized_weights,
    plan_split,
    smooth_1d,
    split_writer,
)
from defects.formats.yolo import YoloBox, write_class_names, write_yolo_labels

__all__ = [
    "WELD_CLASSES",
    "SPLITS",
    "generate_weld_dataset",
    "render_weld_radiograph",
]

WELD_CLASSES: tuple[str, ...] = ("porosity", "crack", "lack_of_fusion", "slag_inclusion")

MIN_WIDTH = 128
MIN_HEIGHT = 96
# px; thin defects (cracks, lack of fusion) are padded to this so a 1-2 px localisation error
# does not sink their IoU below 0.5 during training and evaluation.
_MIN_BOX = 10
_BOX_GAP = 4  # px between boxes so instances never overlap
_PLACEMENT_TRIES = 40
_Box = tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels, x2/y2 exclusive


@dataclass(frozen=True)
class Seam:
    """Per-column geometry of the weld bead (float arrays of length ``width``)."""

    center: np.ndarray
    top: np.ndarray
    bottom: np.ndarray

    def half_height(self, x: int) -> float:
        """Half the bead height at column ``x``; defects are sized to fit inside it."""
        return float(self.bottom[x] - self.top[x]) / 2.0


# --------------------------------------------------------------------------- background


def _make_seam(rng: np.random.Generator, width: int, height: int) -> Seam:
    """Horizontal bead with a slightly tilted, wavy centre line and wavy edges."""
    x = np.arange(width, dtype=np.float32)
    cy = height * rng.uniform(0.44, 0.56)
    tilt = rng.uniform(-0.03, 0.03) * height / width
    center = cy + tilt * (x - width / 2) + smooth_1d(rng, width, 2.0, (width * 0.9, width * 0.4))
    half = height * rng.uniform(0.16, 0.21)
    top = center - half + smooth_1d(rng, width, 1.5, (width * 0.5, 61.0))
    top += smooth_1d(rng, width, 0.5, (29.0, 17.0))
    bottom = center + half + smooth_1d(rng, width, 1.5, (width * 0.5, 67.0))
    bottom += smooth_1d(rng, width, 0.5, (31.0, 19.0))
    return Seam(center=center, top=top, bottom=bottom)


def _weld_background(rng: np.random.Generator, width: int, height: int, seam: Seam) -> np.ndarray:
    """Defect-free film brightness in [0, 1]: plate, bead crown, ripples, exposure falloff."""
    # Smooth terms live on a coarse grid and are upsampled once: exposure gradient (source
    # offset), vignette (beam divergence) and plate mottling all vary over tens of pixels.
    gh, gw = height // 8 + 2, width // 8 + 2
    uy = np.linspace(-0.5, 0.5, gh, dtype=np.float32)[:, None]
    ux = np.linspace(-0.5, 0.5, gw, dtype=np.float32)[None, :]
    cx0, cy0 = rng.uniform(-0.2, 0.2), rng.uniform(-0.2, 0.2)
    vignette = 1.0 - rng.uniform(0.25, 0.45) * ((ux - cx0) ** 2 * 1.4 + (uy - cy0) ** 2 * 2.0)
    tilt = 1.0 + rng.uniform(-0.25, 0.25) * ux + rng.uniform(-0.1, 0.1) * uy
    exposure_small = (vignette * tilt).astype(np.float32)
    coarse = rng.standard_normal((4, 6)).astype(np.float32)
    mottle = cv2.resize(coarse, (gw, gh), interpolation=cv2.INTER_CUBIC)
    plate_small = (rng.uniform(0.27, 0.36) + 0.02 * mottle) * exposure_small
    size = (width, height)
    exposure = cv2.resize(exposure_small, size, interpolation=cv2.INTER_LINEAR)
    img = cv2.resize(plate_small, size, interpolation=cv2.INTER_LINEAR)

    # The bead only touches a band of rows; computing there alone halves the work.
    y0 = max(int(np.floor(seam.top.min())) - 8, 0)
    y1 = min(int(np.ceil(seam.bottom.max())) + 8, height)
    yy = np.arange(y0, y1, dtype=np.float32)[:, None]
    xx = np.arange(width, dtype=np.float32)[None, :]
    top, bottom = seam.top[None, :], seam.bottom[None, :]
    half = (bottom - top) * 0.5
    rel = np.clip(np.abs(yy - (top + bottom) * 0.5) / half, 0.0, 1.0)
    # Soft fusion edges (~2 px) and a crown: the reinforcement is thickest mid-bead.
    edge = np.clip((half - np.abs(yy - (top + bottom) * 0.5)) / 3.0 + 0.5, 0.0, 1.0)
    inside = edge * edge * (3.0 - 2.0 * edge)
    crown = 0.5 + 0.5 * np.sqrt(1.0 - rel * rel)
    # Ripples: chevron solidification lines whose spacing and strength drift along the bead.
    wavelength = rng.uniform(8.0, 13.0)
    warp = xx + smooth_1d(rng, width, wavelength * 0.6, (53.0, 97.0))[None, :]
    phase = (2.0 * math.pi / wavelength) * (warp - rng.uniform(8.0, 18.0) * rel * rel)
    strength = 1.0 + 0.5 * smooth_1d(rng, width, 1.0, (70.0, 150.0))[None, :]
    ripple = (np.sin(phase) + 0.35 * np.sin(2.0 * phase + 1.0)) * strength
    bead = inside * crown * (rng.uniform(0.24, 0.32) + rng.uniform(0.012, 0.022) * ripple)
    # Faint darker root line at the bead centre, common on single-V butt welds.
    root_amp = rng.uniform(0.0, 0.025)
    if root_amp > 0.004:
        bead -= root_amp * np.exp(-(((yy - seam.center[None, :]) / 2.5) ** 2)) * inside
    img[y0:y1] += bead * exposure[y0:y1]
    return img


def _film_grain(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Add film grain: fine noise plus clumped grain, a little stronger where film is denser."""
    noise = rng.random(img.shape, dtype=np.float32) - 0.5
    clump = cv2.GaussianBlur(noise, (0, 0), 1.1)
    sigma = rng.uniform(0.035, 0.055)  # uniform noise has std 0.29, so this is ~1.2-1.6 % grey
    return img + sigma * (noise + 2.5 * clump) * (0.6 + 0.6 * img)


# --------------------------------------------------------------------------- defects


def _grow(lo: int, hi: int) -> tuple[int, int]:
    """Widen ``[lo, hi)`` symmetrically to at least ``_MIN_BOX`` pixels."""
    short = _MIN_BOX - (hi - lo)
    if short > 0:
        lo, hi = lo - short // 2, hi + short - short // 2
    return lo, hi


def _bbox_from_mask(mask: np.ndarray, pad: int = 1) -> _Box | None:
    """Tight pixel box around the drawn defect, grown to ``_MIN_BOX`` and clipped to the image."""
    x, y, w, h = cv2.boundingRect((mask > 0.05).astype(np.uint8))
    if w == 0 or h == 0:
        return None
    height, width = mask.shape
    x1, x2 = _grow(x - pad, x + w + pad)
    y1, y2 = _grow(y - pad, y + h + pad)
    x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return None
    return x1, y1, x2, y2


def _draw_porosity(rng: np.random.Generator, seam: Seam, width: int, height: int) -> np.ndarray:
    """Cluster of 2-8 round gas pores; each darkens like a sphere (deepest in the middle)."""
    mask = np.zeros((height, width), np.float32)
    x0 = float(rng.uniform(32.0, width - 32.0))
    half = seam.half_height(int(x0))
    ax = rng.uniform(9.0, 24.0)
    ay = rng.uniform(5.0, max(5.5, min(16.0, half - 9.0)))
    cy = seam.center[int(x0)] + rng.uniform(-1.0, 1.0) * max(0.0, half - ay - 8.0)
    n = int(rng.integers(2, 9))
    ang = rng.uniform(0.0, 2.0 * math.pi, n)
    rad = np.sqrt(rng.uniform(0.0, 1.0, n))
    # Two pores near opposite ends of the cluster's long axis keep the box >= ~20 px and tied
    # to the cluster spread, however the rest fall.
    ang[:2] = rng.uniform(-0.3, 0.3) + np.array([0.0, math.pi])
    rad[:2] = rng.uniform(0.8, 1.0, 2)
    px = x0 + ax * rad * np.cos(ang)
    py = cy + ay * rad * np.sin(ang)
    radii = np.where(rng.uniform(size=n) < 0.4, rng.uniform(2.0, 3.0, n), rng.uniform(2.5, 6.0, n))
    depth = rng.uniform(0.75, 1.0, n)
    for x, y, r, d in zip(px, py, radii, depth, strict=True):
        xa, xb = max(int(x - r) - 1, 0), min(int(x + r) + 3, width)
        ya, yb = max(int(y - r) - 1, 0), min(int(y + r) + 3, height)
        gy, gx = np.ogrid[ya:yb, xa:xb]
        # +0.6 px: the pore's penumbra; sqrt profile = chord length through a sphere.
        q = 1.0 - ((gx - x) ** 2 + (gy - y) ** 2) / (r + 0.6) ** 2
        sphere = np.sqrt(np.clip(q, 0.0, 1.0)).astype(np.float32) * d
        np.maximum(mask[ya:yb, xa:xb], sphere, out=mask[ya:yb, xa:xb])
    return mask * rng.uniform(0.42, 0.55)


def _draw_crack(rng: np.random.Generator, seam: Seam, width: int, height: int) -> np.ndarray:
    """Thin jagged line, longitudinal (along the bead) or transverse (across it)."""
    mask = np.zeros((height, width), np.float32)
    bead_h = float(np.median(seam.bottom - seam.top))
    transverse = rng.uniform() < 0.35 and bead_h >= 46.0
    if transverse:
        length = rng.uniform(40.0, min(120.0, bead_h + 10.0))
        base = math.pi / 2 + rng.uniform(-0.35, 0.35)
    else:
        length = rng.uniform(40.0, min(120.0, width * 0.6))
        base = rng.uniform(-0.3, 0.3)
    step = 3.5
    n = max(6, int(length / step))
    # Jagged: each short segment turns sharply, around a slowly drifting main direction.
    turns = base + np.cumsum(rng.uniform(-0.5, 0.5, n)) * 0.25 + rng.uniform(-0.75, 0.75, n)
    xs = np.concatenate([[0.0], np.cumsum(np.cos(turns) * step)])
    ys = np.concatenate([[0.0], np.cumsum(np.sin(turns) * step)])
    xs -= (xs.max() + xs.min()) / 2
    ys -= (ys.max() + ys.min()) / 2
    span_x = xs.max() - xs.min()
    x0 = rng.uniform(4 + span_x / 2, width - 4 - span_x / 2)
    xi = int(np.clip(x0, 0, width - 1))
    margin = max(0.0, seam.half_height(xi) - (ys.max() - ys.min()) / 2 - 5.0)
    xs = xs + x0
    ys = ys + seam.center[xi] + rng.uniform(-0.6, 0.6) * margin
    cols = np.clip(xs.astype(int), 0, width - 1)
    ys = np.clip(ys, seam.top[cols] + 3, seam.bottom[cols] - 3)
    # Widest and darkest mid-length, tapering to hairline tips.
    t = np.linspace(0.0, 1.0, n)
    taper = np.sin(np.pi * np.clip(t * 1.15 - 0.075, 0.0, 1.0)) ** 0.5
    values = np.clip(0.6 + 0.4 * taper * along(rng, n, 0.75), 0.0, 1.0)
    thickness = np.where(taper > 0.5, int(rng.integers(2, 4)), 1)
    draw_polyline(mask, xs, ys, values, thickness)
    return mask * rng.uniform(0.6, 0.72)


def _draw_lack_of_fusion(
    rng: np.random.Generator, seam: Seam, width: int, height: int
) -> np.ndarray:
    """Long, straight-ish dark line hugging one fusion edge of the bead."""
    mask = np.zeros((height, width), np.float32)
    length = rng.uniform(60.0, min(150.0, width * 0.7))
    x0 = rng.uniform(6.0, width - 6.0 - length)
    xs = np.arange(x0, x0 + length, 3.0, dtype=np.float32)
    xi = np.clip(np.round(xs).astype(int), 0, width - 1)
    upper = rng.uniform() < 0.5
    edge = seam.top[xi] if upper else seam.bottom[xi]
    # Follow the fusion line loosely: smooth the wavy edge and keep just inside it.
    edge = np.convolve(np.pad(edge, 3, mode="edge"), np.ones(7, np.float32) / 7, mode="valid")
    inward = rng.uniform(3.0, 4.5)
    ys = edge + (inward if upper else -inward) + rng.normal(0.0, 0.2, len(xs))
    n = len(xs) - 1
    thickness = np.full(n, int(rng.integers(2, 5)))
    values = along(rng, n, 0.65)
    values[[0, -1]] *= 0.7  # soft ends
    draw_polyline(mask, xs, ys, values, thickness)
    return mask * rng.uniform(0.45, 0.58)


def _draw_slag_inclusion(
    rng: np.random.Generator, seam: Seam, width: int, height: int
) -> np.ndarray:
    """Irregular elongated blob with mottled density inside the bead."""
    mask = np.zeros((height, width), np.float32)
    length = rng.uniform(15.0, 50.0)
    x0 = rng.uniform(length / 2 + 6, width - length / 2 - 6)
    half = seam.half_height(int(x0))
    # At least 2:1 elongated so a slag line never reads as a single large pore.
    thick = rng.uniform(5.0, max(5.5, min(15.0, half, length / 2.2)))
    y0 = seam.center[int(x0)] + rng.uniform(-1.0, 1.0) * max(0.0, half - thick / 2 - 6.0)
    angle = rng.uniform(-0.3, 0.3)
    m = 18
    theta = np.linspace(0.0, 2.0 * math.pi, m, endpoint=False) + rng.uniform(-0.12, 0.12, m)
    wobble = np.convolve(np.tile(rng.uniform(-1, 1, m), 3), np.ones(2) / 2, mode="same")[m : 2 * m]
    # Asymmetric taper: slag is often fatter at one end.
    taper = 1.0 + rng.uniform(-0.35, 0.35) * np.cos(theta)
    lx = length / 2 * (1.0 + 0.1 * wobble) * np.cos(theta)
    ly = thick / 2 * (1.0 + 0.35 * wobble) * taper * np.sin(theta)
    ca, sa = math.cos(angle), math.sin(angle)
    outline = fixed_point(x0 + lx * ca - ly * sa, y0 + lx * sa + ly * ca)
    cv2.fillPoly(mask, [outline], 1.0, cv2.LINE_AA, SHIFT)
    box = _bbox_from_mask(mask, pad=0)
    if box is not None:  # mottled density only inside the blob's own box (cheap)
        x1, y1, x2, y2 = box
        patch = rng.uniform(0.0, 1.0, (y2 - y1, x2 - x1)).astype(np.float32)
        mask[y1:y2, x1:x2] *= 0.7 + 0.3 * cv2.GaussianBlur(patch, (0, 0), 1.2) * 2.0
    return np.clip(mask, 0.0, 1.0) * rng.uniform(0.4, 0.52)


_Drawer = Callable[[np.random.Generator, Seam, int, int], np.ndarray]
DEFECT_RENDERERS: dict[str, _Drawer] = {
    "porosity": _draw_porosity,
    "crack": _draw_crack,
    "lack_of_fusion": _draw_lack_of_fusion,
    "slag_inclusion": _draw_slag_inclusion,
}


def _overlaps(box: _Box, others: list[_Box]) -> bool:
    """True if ``box`` comes within ``_BOX_GAP`` px of any placed box (keeps labels unambiguous)."""
    x1, y1, x2, y2 = box
    for a1, b1, a2, b2 in others:
        if x1 < a2 + _BOX_GAP and a1 < x2 + _BOX_GAP and y1 < b2 + _BOX_GAP and b1 < y2 + _BOX_GAP:
            return True
    return False


def render_weld_radiograph(
    rng: np.random.Generator,
    width: int,
    height: int,
    defects: Sequence[str],
    class_names: Sequence[str] = WELD_CLASSES,
) -> tuple[np.ndarray, list[YoloBox]]:
    """Render one radiograph containing the requested defect kinds.

    ``defects`` lists defect kinds (names from ``WELD_CLASSES``); each box's class id is the
    kind's index in ``class_names``. A defect that cannot be placed without overlapping an
    earlier one after a few tries is dropped, so fewer boxes than requested may come back.
    Returns a uint8 ``(height, width)`` image and its YOLO boxes.
    """
    check_size(width, height, MIN_WIDTH, MIN_HEIGHT)
    for kind in defects:
        if kind not in DEFECT_RENDERERS:
            raise ValueError(f"unknown weld defect {kind!r}; known: {sorted(DEFECT_RENDERERS)}")
        if kind not in class_names:
            raise ValueError(f"defect {kind!r} is not in class_names {list(class_names)}")
    seam = _make_seam(rng, width, height)
    img = _weld_background(rng, width, height, seam)

    attenuation = np.zeros((height, width), np.float32)
    placed: list[_Box] = []
    boxes: list[YoloBox] = []
    for kind in defects:
        for _ in range(_PLACEMENT_TRIES):
            mask = DEFECT_RENDERERS[kind](rng, seam, width, height)
            box = _bbox_from_mask(mask)
            if box is not None and not _overlaps(box, placed):
                placed.append(box)
                attenuation = np.maximum(attenuation, mask)
                boxes.append(YoloBox.from_xyxy(class_names.index(kind), *box, width, height))
                break
    # Slight blur so defects look radiographic (geometric unsharpness), not drawn.
    attenuation = cv2.GaussianBlur(attenuation, (0, 0), rng.uniform(0.6, 0.9))
    img = img * (1.0 - attenuation)
    img = _film_grain(rng, img)
    out = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out, boxes


# --------------------------------------------------------------------------- dataset


def generate_weld_dataset(
    out_dir: str | Path,
    n_train: int = 240,
    n_valid: int = 60,
    n_test: int = 60,
    width: int = 384,
    height: int = 256,
    class_names: Sequence[str] = WELD_CLASSES,
    class_weights: Sequence[float] | None = None,
    defect_free_fraction: float = 0.15,
    max_defects: int = 3,
    seed: int = 0,
) -> dict:
    """Write a YOLO-layout weld radiograph dataset to ``out_dir`` atomically.

    Layout: ``{train,valid,test}/images/NNNNN.png`` (8-bit grayscale), matching
    ``labels/NNNNN.txt`` (empty for defect-free images) and ``data.yaml``. Each split draws from
    its own ``np.random.default_rng([seed, split_index])`` so that resizing one split leaves the
    others byte-identical. Returns ``{"images", "boxes", "defect_free", "seed"}`` counts.
    """
    names = check_class_names(class_names, sorted(DEFECT_RENDERERS))
    weights = normalized_weights(names, class_weights)
    counts = check_split_args(n_train, n_valid, n_test, defect_free_fraction, max_defects)
    check_size(width, height, MIN_WIDTH, MIN_HEIGHT)

    summary: dict = {
        "images": dict(counts),
        "boxes": {n: 0 for n in names},
        "defect_free": 0,
        "seed": seed,
    }
    # Split-level choices come from the split RNG; each image then gets its own child RNG
    # (spawned in order), so images can be rendered and written by two threads at once and
    # still be byte-identical from run to run.
    with split_writer(out_dir, counts, ("{split}/images", "{split}/labels")) as writer:
        for split in writer.splits():
            plan = plan_split(
                seed, split.index, split.count, defect_free_fraction, max_defects, weights
            )
            jobs = [
                (
                    child,
                    [names[j] for j in classes],
                    split.dir / "images" / f"{i:05d}.png",
                    split.dir / "labels" / f"{i:05d}.txt",
                )
                for i, (child, classes) in enumerate(plan)
            ]

            def make(job: tuple[np.random.Generator, list[str], Path, Path]) -> list[YoloBox]:
                child, kinds, image_path, label_path = job
                img, boxes = render_weld_radiograph(child, width, height, kinds, names)
                if not cv2.imwrite(str(image_path), img):
                    raise OSError(f"could not write {image_path}")
                write_yolo_labels(label_path, boxes)
                return boxes

            for boxes in writer.map(make, jobs):  # re-raises the first failure
                summary["defect_free"] += not boxes
                for box in boxes:
                    summary["boxes"][names[box.class_id]] += 1
        write_class_names(writer.root / "data.yaml", names)
    return summary
