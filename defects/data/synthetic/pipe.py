"""Synthetic sewer-pipe CCTV frames with box labels, true pixel masks and planted label errors.

The embedded default dataset of the ``pipe`` task, where segmentation is learned from boxes:
crews label defects in frames looking down a pipe with boxes only, so the pipeline turns boxes
into coarse masks, cleans the labels, refines the masks with baselines trained on a small
finely-labelled subset and trains the final model. This generator gives every piece of that
something to check against: the true masks, the boxes derived from them, and planted cleaning
cases with their answers.

A frame is a camera inside a circular pipe looking along it: the wall at depth z projects to a
circle of radius ~1/z whose centre drifts toward an off-centre vanishing point, the camera lamp
lights near wall brightly and far wall dimly, joints are rings at intervals, water lies flat in
the invert and the wall is concrete or clay. Defects are drawn in pipe coordinates (angle around
the pipe, depth) so perspective makes them curved, irregular shapes, never rectangles: box-
filled masks are a poor fit and refining them has something to gain.

Output layout (``OUT`` is written whole or not at all)::

    OUT/data.yaml                         class names (``names``, ``nc``), YOLO style
    OUT/{train,valid,test}/images/*.png   8-bit RGB frames
    OUT/{split}/labels/<stem>.txt         YOLO boxes, one per connected component of each
                                          class in the true mask (train: + planted false boxes)
    OUT/{split}/true_masks/<stem>.png     uint8 index masks, 0 = background, k = YOLO class
                                          id k - 1 (``names[k-1]``): the truth for every image
    OUT/fine.txt                          stems of the "finely labelled" train subset, one per
                                          line: >= ``fine_per_class`` images per non-rare class;
                                          their fine labels are their true masks
    OUT/planted.json                      the planted cleaning cases (the answer key):
                                          ``duplicates`` (kind exact / reencode / brightness /
                                          resize, original, copy), ``conflicting_labels`` (an
                                          exact copy with one box relabelled), ``false_boxes``
                                          (label file, 1-based line, kind degenerate / outside /
                                          tiny / huge / aspect / duplicate, text),
                                          ``rare_boxes`` per split and ``fine`` per class

Planted cases live in ``train`` only. Copies are extra images numbered after the originals, so
the original sorts first and is the one a "keep the first" rule keeps.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from defects.data.synthetic.common import (
    SPLITS,
    SplitWriter,
    check_class_names,
    check_size,
    split_writer,
)
from defects.formats.io import atomic_write_text
from defects.formats.mask_folder import write_index_mask
from defects.formats.yolo import write_class_names
from defects.pipe.coarse import boxes_from_index_mask, mask_components

__all__ = [
    "PIPE_CLASSES",
    "PIPE_RARE_CLASSES",
    "boxes_from_index_mask",
    "generate_pipe_dataset",
    "render_pipe_frame",
    "save_pipe_preview",
]

PIPE_CLASSES: tuple[str, ...] = (
    "deformation",
    "disconnection",
    "deposits",
    "obstacle",
    "misalignment",
    "rupture",
)
PIPE_RARE_CLASSES: tuple[str, ...] = ("misalignment", "rupture")

MIN_WIDTH = 128
MIN_HEIGHT = 128
# Components of a true mask smaller than this (px) are dropped from the truth: a box around a
# few stray pixels would look like a planted "implausibly tiny" box to the cleaner.
MIN_COMPONENT_PX = 40
# A defect whose component boxes are thinner than this aspect ratio is redrawn, for the same
# reason (the cleaner's aspect rule must only ever see the planted boxes).
MAX_COMPONENT_ASPECT = 6.0
_PLACEMENT_TRIES = 30
_GAP = np.ones((7, 7), np.uint8)  # defects stay >= 3 px apart, so masks never touch
_TWO_PI = 2.0 * math.pi
_Z_TEXTURE = 14.0  # pipe radii of wall texture; beyond it the lamp light is ~0 anyway
_ROWS_PER_R = 80  # texture rows per pipe radius along the pipe
_TEX_COLS = 640  # texture columns around the circumference


# --------------------------------------------------------------------------- geometry


@dataclass
class PipeView:
    """Per-pixel geometry of one frame: what part of the pipe every pixel sees.

    Pipe coordinates: depth ``z`` along the axis in pipe radii, angle ``theta`` around it
    (0 = right, pi/2 = bottom, image y points down). A wall point projects to
    ``vp + s * (a + b * (cos theta, sin theta))`` with ``s = 1/z`` (y scaled by ``squash``).
    """

    width: int
    height: int
    vp: np.ndarray  # vanishing point (x, y) px
    a: np.ndarray  # camera offset from the axis, times the focal length (px)
    b: float  # focal length times the pipe radius (px)
    squash: float  # y scale of the rings (slight ellipse)
    water_depth: float  # fraction of the radius under water
    s: np.ndarray  # inverse depth of the wall point each pixel sees
    z: np.ndarray  # its depth
    theta: np.ndarray  # its angle
    from_bottom: np.ndarray  # angular distance of that wall point from the invert
    water: np.ndarray  # bool: the pixel sees the water surface (not the wall)
    floor_z: np.ndarray  # depth of the floor point seen (water surface where water)
    floor_x: np.ndarray  # lateral position of the floor point, in radii
    light: np.ndarray  # lamp light reaching what the pixel sees
    joints: np.ndarray  # depths of the pipe joints

    @property
    def water_angle(self) -> float:
        """Half-angle of the wetted arc: the waterline sits this far from the invert."""
        return math.acos(1.0 - self.water_depth)

    def project(self, theta: np.ndarray, z: np.ndarray, r: float = 1.0) -> np.ndarray:
        """Pixel (x, y) of pipe points at ``theta``, ``z``, ``r`` radii from the axis."""
        theta = np.asarray(theta, np.float64)
        s = 1.0 / np.asarray(z, np.float64)
        x = self.vp[0] + s * (self.a[0] + self.b * r * np.cos(theta))
        y = self.vp[1] + self.squash * s * (self.a[1] + self.b * r * np.sin(theta))
        return np.stack([x, y], axis=-1)

    def project_floor(self, x: np.ndarray, z: np.ndarray, lift: float = 0.0) -> np.ndarray:
        """Pixel (x, y) of points on the water surface (``lift`` radii above it)."""
        s = 1.0 / np.asarray(z, np.float64)
        level = 1.0 - self.water_depth - lift
        px = self.vp[0] + s * (self.a[0] + self.b * np.asarray(x, np.float64))
        py = self.vp[1] + self.squash * s * (self.a[1] + self.b * level)
        return np.stack([px, py], axis=-1)


def _angle_diff(a: np.ndarray, b: float) -> np.ndarray:
    """Signed smallest difference a - b on the circle, in (-pi, pi]."""
    return (np.asarray(a) - b + math.pi) % _TWO_PI - math.pi


def _make_view(rng: np.random.Generator, width: int, height: int) -> PipeView:
    """Random camera pose in the pipe, then per-pixel depth, angle, water and lamp light."""
    size = min(width, height)
    b = size * rng.uniform(0.42, 0.55)  # ~95-110 degree lens
    vp = np.array(
        [width * (0.5 + rng.uniform(-0.1, 0.1)), height * (0.5 + rng.uniform(-0.14, 0.06))]
    )
    offset = rng.uniform(0.0, 0.3)
    direction = rng.uniform(0.0, _TWO_PI)
    a = b * offset * np.array([math.cos(direction), math.sin(direction)])
    squash = rng.uniform(0.92, 1.0)
    water_depth = rng.uniform(0.04, 0.2)
    a[1] = min(a[1], b * (0.9 - water_depth))  # the camera stays above the water

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    qx, qy = xx + 0.5 - vp[0], (yy + 0.5 - vp[1]) / squash
    big = b * b - float(a @ a)
    qa = qx * a[0] + qy * a[1]
    s = (-qa + np.sqrt(qa * qa + big * (qx * qx + qy * qy))) / big
    s = np.maximum(s, 1e-4)
    theta = np.arctan2(qy - a[1] * s, qx - a[0] * s)
    z = 1.0 / s
    from_bottom = np.abs(_angle_diff(theta, math.pi / 2))

    phi = math.acos(1.0 - water_depth)
    water = from_bottom < phi
    level = a[1] + b * (1.0 - water_depth)
    s_water = np.maximum(qy / level, 1e-4)
    floor_z = np.where(water, 1.0 / s_water, z)
    floor_x = np.where(water, (qx / s_water - a[0]) / b, np.cos(theta))

    reach = rng.uniform(1.6, 2.4)
    falloff = 1.0 / (1.0 + (floor_z / reach) ** 2.2)
    lamp_dir = rng.uniform(0.0, _TWO_PI)
    light = falloff * (1.0 + rng.uniform(0.0, 0.15) * np.cos(theta - lamp_dir))
    light *= rng.uniform(0.8, 1.0)

    spacing = rng.uniform(1.4, 2.6)
    joints = rng.uniform(0.5, 1.0) * spacing + spacing * np.arange(int(40 / spacing))
    return PipeView(
        width, height, vp, a, float(b), float(squash), float(water_depth),
        s.astype(np.float32), z.astype(np.float32), theta.astype(np.float32),
        from_bottom.astype(np.float32), water, floor_z.astype(np.float32),
        floor_x.astype(np.float32), light.astype(np.float32), joints,
    )  # fmt: skip


# --------------------------------------------------------------------------- wall


def _noise(rng: np.random.Generator, size: tuple[int, int], grid: tuple[int, int]) -> np.ndarray:
    """Smooth random field (h, w): a small normal grid upsampled cubically."""
    g = rng.standard_normal(grid).astype(np.float32)
    return cv2.resize(g, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)


def _wrap_noise(
    rng: np.random.Generator, size: tuple[int, int], grid: tuple[int, int]
) -> np.ndarray:
    """Like `_noise` but periodic across columns, so the unrolled wall has no seam."""
    g = rng.standard_normal(grid).astype(np.float32)
    pad = 3
    wide = np.pad(g, ((0, 0), (pad, pad)), mode="wrap")
    cell = size[1] / grid[1]
    out_w = int(round(cell * wide.shape[1]))
    up = cv2.resize(wide, (out_w, size[0]), interpolation=cv2.INTER_CUBIC)
    start = int(round(cell * pad))
    return np.ascontiguousarray(up[:, start : start + size[1]])


def _wrap_blur(field: np.ndarray, sigma_x: float, sigma_y: float) -> np.ndarray:
    """Gaussian blur that wraps around the columns (the circumference)."""
    pad = int(math.ceil(3 * sigma_x)) + 1
    wide = np.pad(field, ((0, 0), (pad, pad)), mode="wrap")
    out = cv2.GaussianBlur(wide, (0, 0), sigmaX=sigma_x, sigmaY=sigma_y)
    return np.ascontiguousarray(out[:, pad:-pad])


def _sample(view: PipeView, texture: np.ndarray) -> np.ndarray:
    """Look a (depth rows x circumference columns) texture up at every pixel's wall point."""
    z = view.z
    map_x = (view.theta % _TWO_PI) * (texture.shape[1] / _TWO_PI)
    map_y = np.minimum(z, _Z_TEXTURE - 0.01) * _ROWS_PER_R
    return cv2.remap(
        texture, map_x.astype(np.float32), map_y.astype(np.float32),
        cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP,
    )  # fmt: skip


def _wall_texture(rng: np.random.Generator, material: str) -> np.ndarray:
    """Albedo variation of the unrolled wall (periodic around it): stains, aggregate, streaks."""
    rows = int(_Z_TEXTURE * _ROWS_PER_R)
    size = (rows, _TEX_COLS)
    tex = 0.10 * _wrap_noise(rng, size, (int(_Z_TEXTURE * 2), 12))
    tex += 0.06 * _wrap_noise(rng, size, (int(_Z_TEXTURE * 8), 48))
    fine = rng.standard_normal(size).astype(np.float32)
    if material == "concrete":
        tex += 0.07 * _wrap_blur(fine, 1.2, 1.2)
        pores = (rng.random(size) < 0.004).astype(np.float32)
        tex -= 2.0 * _wrap_blur(pores, 1.0, 1.0)
    else:  # clay: smoother glaze with fine streaks along the pipe
        tex += 0.12 * _wrap_blur(fine, 0.8, 6.0)
    return tex


def _joint_profile(view: PipeView, z: np.ndarray) -> np.ndarray:
    """Albedo factor near joints: a dark gap line flanked by a brighter collar."""
    j = view.joints
    idx = np.clip(np.searchsorted(j, z), 1, len(j) - 1)
    nearest = np.minimum(np.abs(z - j[idx - 1]), np.abs(z - j[idx]))
    gap = np.exp(-((nearest / 0.035) ** 2))
    collar = np.exp(-((nearest / 0.12) ** 2))
    return 1.0 + 0.35 * collar - 0.75 * gap


def _segment_albedo(rng: np.random.Generator, view: PipeView, z: np.ndarray) -> np.ndarray:
    """Each pipe section has its own slight shade, so joints read as boundaries."""
    shades = 1.0 + rng.uniform(-0.08, 0.08, len(view.joints) + 1)
    idx = np.searchsorted(view.joints, z)
    return shades[idx].astype(np.float32)


_MATERIALS = {
    "concrete": np.array([0.60, 0.58, 0.54], np.float32),
    "clay": np.array([0.72, 0.45, 0.30], np.float32),
}


def _render_wall(rng: np.random.Generator, view: PipeView, material: str) -> np.ndarray:
    """Unlit RGB albedo of the wall and the water surface, in [0, 1]."""
    colour = _MATERIALS[material] * rng.uniform(0.96, 1.04, 3).astype(np.float32)
    colour *= rng.uniform(0.85, 1.1)
    tex = _sample(view, _wall_texture(rng, material))
    shade = (1.0 + tex) * _joint_profile(view, view.z) * _segment_albedo(rng, view, view.z)
    # Biofilm tide mark: the wall just above the waterline is darker.
    above = view.from_bottom - view.water_angle
    tide = np.exp(-((np.clip(above, 0.0, None) / 0.18) ** 2)) * (above > 0)
    shade *= 1.0 - rng.uniform(0.2, 0.4) * tide
    wall = shade[..., None] * colour

    # Water: dark and brownish, streaked along the flow, a mirror image of the lit wall above
    # (brighter toward the waterline) and lamp glints close to the camera.
    fz, fx = view.floor_z, view.floor_x
    rows = int(_Z_TEXTURE * _ROWS_PER_R)
    flow = _noise(rng, (rows, 256), (int(_Z_TEXTURE * 2), 40))
    flow += 0.5 * _noise(rng, (rows, 256), (int(_Z_TEXTURE * 6), 90))
    map_x = ((fx + 1.0) * 127.5).astype(np.float32)
    map_y = (np.minimum(fz, _Z_TEXTURE - 0.01) * _ROWS_PER_R).astype(np.float32)
    flow = cv2.remap(flow, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    streak = 0.5 + 0.5 * np.tanh(flow)
    reflect = np.clip(np.abs(fx) / max(math.sin(view.water_angle), 1e-3), 0.0, 1.0) ** 3
    murk = np.array([0.22, 0.20, 0.15], np.float32) * rng.uniform(0.7, 1.1)
    water = murk * (0.6 + 0.5 * streak[..., None]) + 0.45 * reflect[..., None] * colour
    glint = (_noise(rng, fz.shape, (48, 48)) > 2.4) & (fz < 1.3)
    water = water + 0.5 * cv2.GaussianBlur(glint.astype(np.float32), (0, 0), 1.2)[..., None]
    return np.where(view.water[..., None], water, wall).astype(np.float32)


# --------------------------------------------------------------------------- defects


@dataclass
class Defect:
    """One drawn defect: its true mask and how it changes the frame (full-frame arrays).

    ``warp`` (bulges) resamples the lit frame, so the moved wall keeps its own light, and
    ``shade`` multiplies it; then ``alpha`` blends ``colour`` (an albedo, lit by the lamp
    like the wall) over it.
    """

    mask: np.ndarray
    alpha: np.ndarray | None = None
    colour: np.ndarray | None = None
    shade: np.ndarray | None = None
    warp: tuple[np.ndarray, np.ndarray] | None = None


def _periodic(rng: np.random.Generator, n: int, smooth: float) -> np.ndarray:
    """Smooth periodic 1-D noise sampled at n points around the circle, in about [-1, 1]."""
    raw = rng.standard_normal(n)
    spectrum = np.fft.rfft(raw)
    k = np.arange(len(spectrum))
    spectrum *= np.exp(-((k / smooth) ** 2))
    out = np.fft.irfft(spectrum, n)
    return out / (np.abs(out).max() + 1e-9)


def _lookup(values: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Interpolate periodic samples (over [0, 2 pi)) at angles ``theta``."""
    n = len(values)
    grid = np.linspace(0.0, _TWO_PI, n, endpoint=False)
    return np.interp(theta % _TWO_PI, grid, values, period=_TWO_PI).astype(np.float32)


def _wall_angle(rng: np.random.Generator, view: PipeView, half_arc: float) -> float:
    """An arc centre whose arc of ``half_arc`` stays clear of the water."""
    limit = math.pi - view.water_angle - half_arc - 0.15  # distance from the invert allowed
    if limit <= 0:
        return -math.pi / 2
    return math.pi / 2 + math.pi - rng.uniform(0.0, limit) * rng.choice([-1.0, 1.0])


def _visible_joint(rng: np.random.Generator, view: PipeView, lo: float, hi: float) -> float:
    """A joint depth in [lo, hi]; the joint nearest to that range when none falls inside."""
    inside = view.joints[(view.joints >= lo) & (view.joints <= hi)]
    if len(inside):
        return float(rng.choice(inside))
    gap = np.maximum(lo - view.joints, view.joints - hi)
    return float(view.joints[int(np.argmin(gap))])


def _draw_deformation(rng: np.random.Generator, view: PipeView, wall: np.ndarray) -> Defect:
    """A bulge of the wall: a ring segment pushed into the lumen, bending the joint ring.

    The lamp sits at the camera, so the bulge's near face (turned toward it) lights up and
    its far face, seen at a grazing angle, darkens; the wall there is cracked along the pipe.
    """
    half_arc = rng.uniform(0.45, 0.8)
    centre = _wall_angle(rng, view, half_arc)
    zc = _visible_joint(rng, view, 1.4, 2.6) + rng.uniform(-0.2, 0.2)
    sz = rng.uniform(0.4, 0.8)
    wobble = 1.0 + 0.3 * _lookup(_periodic(rng, 256, 6.0), view.theta)
    dth = _angle_diff(view.theta, centre) / (half_arc * wobble)
    dz = (view.z - zc) / sz
    bump = np.exp(-((dth**2 + dz**2) ** 2)).astype(np.float32)
    # Inward shift of the wall in px: the wall point at radius 1 appears at radius 1 - depth.
    depth = rng.uniform(0.2, 0.35)
    shift = bump * depth * view.b * view.s
    dx = np.cos(view.theta) * shift
    dy = np.sin(view.theta) * shift * view.squash
    yy, xx = np.mgrid[0 : view.height, 0 : view.width].astype(np.float32)
    map_x, map_y = xx + dx, yy + dy
    moved = shift > 0.5
    outside = (map_x < 0) | (map_x > view.width - 1) | (map_y < 0) | (map_y > view.height - 1)
    if np.any(moved & outside):  # the bulge would pull in wall from beyond the frame
        return Defect(mask=np.zeros(bump.shape, bool))
    warped = cv2.remap(bump, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    # The bulge is a surface of its own: turned toward the lamp (brighter, most on its near
    # side), with a crisp silhouette where it rises from the wall and a dark rim behind its far
    # edge, where it hides the wall from the lamp.
    edge = np.clip((bump - 0.32) / 0.16, 0.0, 1.0)
    surface = edge * edge * (3.0 - 2.0 * edge)
    lift = rng.uniform(0.25, 0.45) * surface * (1.0 + 0.4 * np.tanh(-2.0 * dz))
    rim = np.exp(-(((bump - 0.25) / 0.1) ** 2)) * (dz > 0)
    face = cv2.remap((lift - 0.7 * rim).astype(np.float32), map_x, map_y, cv2.INTER_LINEAR)
    shade = np.maximum(1.0 + face, 0.15)
    crack_field = np.abs(_angle_diff(view.theta, centre + rng.uniform(-0.2, 0.2) * half_arc))
    crack_field += 0.02 * _noise(rng, bump.shape, (30, 30))
    crack = (crack_field < 0.006 * (1.0 + view.z)) & (bump > 0.5)
    crack = cv2.remap(crack.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR)
    shade = shade * (1.0 - 0.45 * crack)
    mask = (warped > 0.4) & ~view.water
    return Defect(mask=mask, shade=shade.astype(np.float32), warp=(map_x, map_y))


def _draw_disconnection(rng: np.random.Generator, view: PipeView, wall: np.ndarray) -> Defect:
    """An open joint: a dark gap along part of a joint ring, the next pipe's end face beyond."""
    half_arc = rng.uniform(0.6, 1.3)
    centre = _wall_angle(rng, view, half_arc)
    zj = _visible_joint(rng, view, 1.0, 2.5)
    width = rng.uniform(0.15, 0.3)
    along = np.clip(1.0 - np.abs(_angle_diff(view.theta, centre)) / half_arc, 0.0, 1.0)
    ragged = 1.0 + 0.3 * _lookup(_periodic(rng, 512, 40.0), view.theta)
    gap = width * np.sqrt(along) * ragged
    rel = (view.z - zj + 0.3 * gap) / np.maximum(gap, 1e-6)  # 0..1 across the gap
    inside = (rel >= 0.0) & (rel <= 1.0) & (along > 0.0)
    mask = inside & ~view.water
    dark = (
        np.array([0.06, 0.05, 0.04], np.float32)
        * (1.0 + 0.5 * _noise(rng, rel.shape, (20, 20)))[..., None]
    )
    face = wall * 1.25
    colour = np.where((rel > 0.72)[..., None], face, dark)
    return Defect(mask=mask, alpha=mask.astype(np.float32), colour=colour.astype(np.float32))


def _draw_misalignment(rng: np.random.Generator, view: PipeView, wall: np.ndarray) -> Defect:
    """A shifted joint: the next pipe's lip shows as a bright crescent, shadowed behind."""
    toward = _wall_angle(rng, view, 1.2)
    zj = _visible_joint(rng, view, 1.0, 2.2)
    width = rng.uniform(0.15, 0.3)
    lip = width * np.clip(np.cos(_angle_diff(view.theta, toward)), 0.0, None) ** 0.8
    lip *= 1.0 + 0.15 * _lookup(_periodic(rng, 256, 10.0), view.theta)
    rel = (view.z - zj) / np.maximum(lip, 1e-6)
    mask = (rel >= 0.0) & (rel <= 1.0) & (lip > 0.03) & ~view.water
    bright = wall * 1.6 + 0.04
    shadow = wall * 0.2
    colour = np.where((rel > 0.75)[..., None], shadow, bright)
    return Defect(mask=mask, alpha=mask.astype(np.float32), colour=colour.astype(np.float32))


def _draw_deposits(rng: np.random.Generator, view: PipeView, wall: np.ndarray) -> Defect:
    """Sediment heaped in the invert: blobby, brown-grey, rough, lying on and in the water."""
    z0 = rng.uniform(0.9, 1.8)
    length = rng.uniform(0.8, 2.5)
    field = np.zeros(view.z.shape, np.float32)
    for _ in range(int(rng.integers(2, 5))):
        zc = z0 + rng.uniform(0.0, length)
        xc = rng.uniform(-0.35, 0.35)
        rx, rz = rng.uniform(0.18, 0.45), rng.uniform(0.25, 0.7)
        blob = np.exp(-(((view.floor_x - xc) / rx) ** 2 + ((view.floor_z - zc) / rz) ** 2))
        field = np.maximum(field, blob.astype(np.float32))
    field *= 1.0 + 0.35 * _noise(rng, field.shape, (18, 18))
    floorish = view.water | (view.from_bottom < view.water_angle + 0.3)
    mask = (field > 0.45) & floorish
    grit = 0.5 + 0.5 * cv2.GaussianBlur(
        rng.standard_normal(field.shape).astype(np.float32), (0, 0), 0.9
    )
    base = np.array([0.55, 0.46, 0.34], np.float32) * rng.uniform(0.8, 1.15)
    colour = base * (0.6 + 0.55 * grit[..., None] + 0.25 * np.clip(field - 0.45, 0, 1)[..., None])
    alpha = mask.astype(np.float32)
    return Defect(mask=mask, alpha=alpha, colour=colour.astype(np.float32))


def _blob_outline(rng: np.random.Generator, n: int, rough: float) -> np.ndarray:
    """Unit-ish closed outline with smooth radial noise (cos, sin scaled)."""
    t = np.linspace(0.0, _TWO_PI, n, endpoint=False)
    r = 1.0 + rough * _periodic(rng, n, 5.0)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _draw_obstacle(rng: np.random.Generator, view: PipeView, wall: np.ndarray) -> Defect:
    """A stone or root ball in the lumen: roundish, shaded, resting in the water."""
    z = rng.uniform(1.2, 2.8)
    radius = rng.uniform(0.25, 0.5)
    x = rng.uniform(-0.4, 0.4)
    centre = view.project_floor(np.array(x), np.array(z), lift=radius * 0.55)
    px = radius * view.b / z
    outline = _blob_outline(rng, 48, 0.18) * [px, px * view.squash * rng.uniform(0.75, 1.0)]
    pts = np.round((outline + centre) * 16).astype(np.int32).reshape(-1, 1, 2)
    mask_u8 = np.zeros(view.z.shape, np.uint8)
    cv2.fillPoly(mask_u8, [pts], 1, cv2.LINE_8, 4)
    mask = mask_u8.astype(bool)
    yy, xx = np.mgrid[0 : view.height, 0 : view.width].astype(np.float32)
    d = np.sqrt(((xx - centre[0]) / px) ** 2 + ((yy - centre[1] + 0.3 * px) / px) ** 2)
    dome = np.clip(1.0 - d, 0.0, 1.0) ** 0.5
    root = rng.random() < 0.4
    if root:  # fibrous brown root mass
        fibres = cv2.GaussianBlur(rng.standard_normal(d.shape).astype(np.float32), (0, 0), 0.7)
        fibres = np.abs(np.sin(fibres * 4.0))
        base = np.array([0.55, 0.40, 0.22], np.float32)
        colour = base * (0.35 + 0.9 * fibres[..., None] * (0.4 + 0.6 * dome[..., None]))
    else:
        mottle = 0.85 + 0.3 * _noise(rng, d.shape, (12, 12))
        base = np.array([0.62, 0.60, 0.57], np.float32) * rng.uniform(0.7, 1.1)
        colour = base * (0.3 + 0.9 * dome[..., None]) * mottle[..., None]
    # The obstacle is nearer than the wall behind it: light it at its own depth.
    gain = (1.0 / (1.0 + (z / 2.0) ** 2.2)) / np.maximum(view.light, 1e-3)
    colour *= np.clip(gain, 0.0, 8.0)[..., None]
    return Defect(mask=mask, alpha=mask.astype(np.float32), colour=colour.astype(np.float32))


def _draw_rupture(rng: np.random.Generator, view: PipeView, wall: np.ndarray) -> Defect:
    """A jagged crack across the wall, often broken open into a hole with spalled edges."""
    centre = _wall_angle(rng, view, 0.5)
    zc = rng.uniform(1.0, 2.0)
    m = np.zeros(view.z.shape, np.uint8)
    n = int(rng.integers(18, 32))
    heading = rng.uniform(0.0, _TWO_PI)
    step = rng.uniform(0.04, 0.07)
    pts = [(centre, zc)]
    for i in range(n):  # zig-zag around a slowly drifting main direction
        heading += rng.uniform(-0.25, 0.25)
        turn = (1 if i % 2 else -1) * rng.uniform(0.3, 1.0)
        th, zz = pts[-1]
        step_i = step * rng.uniform(0.5, 1.5)
        z_next = max(zz + step_i * math.sin(heading + turn), 0.7)  # stays in front of the lens
        pts.append((th + step_i * math.cos(heading + turn), z_next))
    pts_arr = np.array(pts)
    pts_arr[:, 0] -= pts_arr[:, 0].mean() - centre
    px = view.project(pts_arr[:, 0], pts_arr[:, 1])
    thick = max(2, int(round(0.025 * view.b / zc)))
    cv2.polylines(
        m, [np.round(px * 16).astype(np.int32).reshape(-1, 1, 2)], False, 1, thick, cv2.LINE_8, 4
    )
    if rng.random() < 0.65:
        hz = float(pts_arr[len(pts_arr) // 2, 1])
        hth = float(pts_arr[len(pts_arr) // 2, 0])
        k = int(rng.integers(16, 28))
        ang = np.linspace(0.0, _TWO_PI, k, endpoint=False) + rng.uniform(-0.1, 0.1, k)
        rad = rng.uniform(0.1, 0.22) * (1.0 + 0.3 * _periodic(rng, k, 3.0))
        rad *= rng.uniform(0.6, 1.0, k)  # jagged, spalled edge
        hole = view.project(hth + rad * np.cos(ang), hz + rad * np.sin(ang))
        cv2.fillPoly(m, [np.round(hole * 16).astype(np.int32).reshape(-1, 1, 2)], 1, cv2.LINE_8, 4)
    mask = m.astype(bool) & ~view.water
    dark = np.array([0.05, 0.04, 0.035], np.float32)
    colour = np.broadcast_to(dark, wall.shape).astype(np.float32)
    return Defect(mask=mask, alpha=mask.astype(np.float32), colour=colour)


_Drawer = Callable[[np.random.Generator, PipeView, np.ndarray], Defect]
DEFECT_RENDERERS: dict[str, _Drawer] = {
    "deformation": _draw_deformation,
    "disconnection": _draw_disconnection,
    "deposits": _draw_deposits,
    "obstacle": _draw_obstacle,
    "misalignment": _draw_misalignment,
    "rupture": _draw_rupture,
}


# --------------------------------------------------------------------------- masks and boxes


def _drop_specks(mask: np.ndarray) -> np.ndarray:
    """The mask without components smaller than ``MIN_COMPONENT_PX``."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= MIN_COMPONENT_PX
    return keep[labels]


def _plausible(mask: np.ndarray) -> bool:
    """A usable defect: something left, and no component box thinner than the aspect limit."""
    comps = mask_components(mask)
    if not comps:
        return False
    return all(max(w, h) / min(w, h) <= MAX_COMPONENT_ASPECT for _, _, w, h, _ in comps)


# --------------------------------------------------------------------------- frame


def _osd(image: np.ndarray, rng: np.random.Generator) -> None:
    """The crawler's on-screen text (distance, pipe id) that every CCTV frame carries."""
    h, w = image.shape[:2]
    scale = 0.3 * min(w, h) / 256
    text = f"MH{rng.integers(1, 40):02d}-MH{rng.integers(40, 90):02d} {rng.uniform(1, 80):5.1f}m"
    org = (int(0.03 * w), int(0.07 * h))
    cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 2, cv2.LINE_AA)
    cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (235, 235, 220), 1, cv2.LINE_AA)


def render_pipe_frame(
    rng: np.random.Generator,
    width: int,
    height: int,
    defects: Sequence[str],
    class_names: Sequence[str] = PIPE_CLASSES,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one frame with the requested defect kinds.

    Returns a uint8 RGB ``(height, width, 3)`` image and its uint8 index mask (0 background,
    ``class_names.index(kind) + 1``). Defects never touch; one that cannot be placed clear of
    the others (or only as implausible slivers) after a few tries is dropped.
    """
    check_size(width, height, MIN_WIDTH, MIN_HEIGHT)
    for kind in defects:
        if kind not in DEFECT_RENDERERS:
            raise ValueError(f"unknown pipe defect {kind!r}; known: {sorted(DEFECT_RENDERERS)}")
        if kind not in class_names:
            raise ValueError(f"defect {kind!r} is not in class_names {list(class_names)}")
    view = _make_view(rng, width, height)
    material = "concrete" if rng.random() < 0.55 else "clay"
    albedo = _render_wall(rng, view, material)

    index = np.zeros((height, width), np.uint8)
    taken = np.zeros((height, width), np.uint8)
    taken[: int(0.09 * height), : int(0.45 * width)] = 1  # the on-screen text lives there
    placed: list[tuple[str, Defect]] = []
    for kind in defects:
        for _ in range(_PLACEMENT_TRIES):
            defect = DEFECT_RENDERERS[kind](rng, view, albedo)
            defect.mask = _drop_specks(defect.mask)
            if not _plausible(defect.mask):
                continue
            if np.any(defect.mask & (cv2.dilate(taken, _GAP) > 0)):
                continue
            index[defect.mask] = class_names.index(kind) + 1
            taken[defect.mask] = 1
            placed.append((kind, defect))
            break
    light = view.light[..., None]
    img = albedo * light
    for _, d in placed:  # a bulge moves the lit wall (it keeps its own light), then shades it
        if d.warp is not None:
            img = cv2.remap(img, *d.warp, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if d.shade is not None:
            img = img * d.shade[..., None]
    for _, d in placed:
        if d.alpha is not None and d.colour is not None:
            a = cv2.GaussianBlur(d.alpha, (0, 0), 0.6)[..., None]
            img = img * (1.0 - a) + d.colour * light * a

    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 0.8))
    noise = rng.standard_normal(img.shape).astype(np.float32)
    img = img + rng.uniform(0.012, 0.025) * (noise + 0.5 * noise.mean(axis=2, keepdims=True))
    out = np.clip(np.clip(img, 0.0, 1.0) ** (1 / 1.15) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    _osd(out, rng)
    return out, index


# --------------------------------------------------------------------------- dataset

_DUPLICATE_KINDS = ("exact", "conflict", "reencode", "brightness", "resize")
_MORE_DUPLICATES = ("exact", "reencode", "brightness", "resize")
FALSE_BOX_KINDS: tuple[str, ...] = ("degenerate", "outside", "tiny", "huge", "aspect", "duplicate")


@dataclass
class _Frame:
    """One rendered image of a split, before it is written."""

    stem: str
    image: np.ndarray
    mask: np.ndarray
    lines: list[str]  # label lines as written (true boxes, then maybe a planted one)
    rare: bool = False

    @property
    def classes(self) -> set[int]:
        """0-based class ids present in the true mask."""
        return {int(v) - 1 for v in np.unique(self.mask) if v}


def _check_dataset_args(
    names: list[str],
    rare_classes: Sequence[str],
    counts: dict[str, int],
    fractions: dict[str, float],
    planted: dict[str, int],
) -> tuple[list[str], list[str]]:
    """Validate the knobs; return (common, rare) class names in class-list order."""
    if any(n < 0 for n in counts.values()):
        raise ValueError(f"split sizes must be >= 0, got {counts}")
    for key, value in fractions.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{key} must be in [0, 1], got {value}")
    for key, value in planted.items():
        if value < 0:
            raise ValueError(f"{key} must be >= 0, got {value}")
    unknown = [r for r in rare_classes if r not in names]
    if unknown:
        raise ValueError(f"rare_classes {unknown} are not in class_names {names}")
    rare = [n for n in names if n in set(rare_classes)]
    common = [n for n in names if n not in set(rare_classes)]
    if not common:
        raise ValueError("at least one class must not be rare")
    return common, rare


def _plan(
    rng: np.random.Generator,
    n: int,
    common: list[str],
    rare: list[str],
    defect_free_fraction: float,
    rare_fraction: float,
    max_defects: int,
) -> list[tuple[np.random.Generator, list[str]]]:
    """Per image: its own child RNG and the defect kinds to draw.

    Exact seeded subsets are defect-free and carry one rare defect (cycling through the rare
    classes), so the counts hold even in tiny splits and the rare classes stay rare.
    """
    order = rng.permutation(n)
    n_free = int(round(defect_free_fraction * n))
    n_rare = int(round(rare_fraction * n)) if rare else 0
    n_rare = min(n_rare, n - n_free)
    free = set(order[:n_free].tolist())
    rare_at = {int(i): rare[k % len(rare)] for k, i in enumerate(order[n_free : n_free + n_rare])}
    plan = []
    for i, child in enumerate(rng.spawn(n)):
        kinds: list[str] = []
        if i not in free:
            k = int(rng.integers(1, max_defects + 1))
            kinds = [common[j] for j in rng.integers(0, len(common), size=k)]
            if i in rare_at:
                kinds[0] = rare_at[i]
        plan.append((child, kinds))
    return plan


def _render_split(
    writer: SplitWriter,
    plan: list[tuple[np.random.Generator, list[str]]],
    names: list[str],
    width: int,
    height: int,
    rare: list[str],
) -> list[_Frame]:
    """Render a split's frames (two threads; each image has its own RNG, so deterministic)."""

    def make(job: tuple[int, tuple[np.random.Generator, list[str]]]) -> _Frame:
        i, (child, kinds) = job
        image, mask = render_pipe_frame(child, width, height, kinds, names)
        lines = [b.to_line() for b in boxes_from_index_mask(mask)]
        frame = _Frame(f"{i:05d}", image, mask, lines)
        frame.rare = any(names[c] in rare for c in frame.classes)
        return frame

    return list(writer.map(make, enumerate(plan)))


def _near_copy(kind: str, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A copy as crews make them: re-encoded, brightness-shifted or slightly resized."""
    if kind == "reencode":
        ok, jpg = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 75])
        assert ok
        return cv2.imdecode(jpg, cv2.IMREAD_COLOR)[..., ::-1].copy(), mask
    if kind == "brightness":
        return np.clip(image.astype(np.int16) + 14, 0, 255).astype(np.uint8), mask
    if kind == "resize":
        h, w = mask.shape
        size = (int(round(w * 0.9)), int(round(h * 0.9)))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        return small, cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
    return image, mask  # exact / conflict: the same pixels (written as the same bytes)


def _false_line(
    rng: np.random.Generator, kind: str, frame: _Frame, common_ids: list[int], w: int, h: int
) -> tuple[int, str]:
    """(insert position, text) of one planted false box line of the given kind."""
    c = int(rng.choice(common_ids))
    cx, cy = rng.uniform(0.3, 0.7, 2)
    pos = int(rng.integers(0, len(frame.lines) + 1))
    if kind == "degenerate":
        return pos, f"{c} {cx:.6f} {cy:.6f} 0.000000 {rng.uniform(0.05, 0.2):.6f}"
    if kind == "outside":
        return pos, f"{c} {1.0 + rng.uniform(0.1, 0.3):.6f} {cy:.6f} 0.080000 0.100000"
    if kind == "tiny":
        return pos, f"{c} {cx:.6f} {cy:.6f} {3.0 / w:.6f} {3.0 / h:.6f}"
    if kind == "huge":
        return pos, f"{c} 0.500000 0.500000 0.980000 0.980000"
    if kind == "aspect":
        return pos, f"{c} 0.500000 {cy:.6f} 0.600000 {2.5 / h:.6f}"
    if kind == "duplicate":  # an exact second copy of one of its true lines, after it
        ok = [i for i, line in enumerate(frame.lines) if int(line.split()[0]) in common_ids]
        i = int(rng.choice(ok))
        return int(rng.integers(i + 1, len(frame.lines) + 1)), frame.lines[i]
    raise ValueError(f"unknown false box kind {kind!r}")


def _take(rng: np.random.Generator, pool: list[_Frame], k: int, what: str) -> list[_Frame]:
    """k distinct frames from pool (seeded), removed from it; ValueError when too few."""
    if k > len(pool):
        raise ValueError(f"not enough train images for {what}: need {k}, have {len(pool)}")
    picked = [pool[i] for i in sorted(rng.choice(len(pool), size=k, replace=False))]
    for f in picked:
        pool.remove(f)
    return picked


def _pick_fine(
    rng: np.random.Generator, pool: list[_Frame], common_ids: list[int], per_class: int
) -> list[_Frame]:
    """Frames so that every non-rare class appears in >= per_class of them (removed from pool)."""
    fine: list[_Frame] = []
    for c in common_ids:
        have = sum(c in f.classes for f in fine)
        candidates = [pool[i] for i in rng.permutation(len(pool)) if c in pool[i].classes]
        if len(candidates) < per_class - have:
            raise ValueError(
                f"not enough train images with class id {c} for the fine subset: need "
                f"{per_class - have} more, have {len(candidates)} (raise n_train)"
            )
        for f in candidates[: max(per_class - have, 0)]:
            fine.append(f)
            pool.remove(f)
    return sorted(fine, key=lambda f: f.stem)


def _plant(
    rng: np.random.Generator,
    frames: list[_Frame],
    names: list[str],
    common_ids: list[int],
    n_duplicates: int,
    n_false_boxes: int,
    fine_per_class: int,
) -> tuple[list[_Frame], list[_Frame], dict]:
    """Add duplicate copies and false box lines to train; pick the fine subset.

    Sources of copies, fine images and false-box hosts are distinct frames, so no planted case
    hides another (a false box on a duplicated image would make the pair "conflicting"). Copy
    sources carry no rare class, so rare-class counts are those of the originals.
    Returns (copies, fine frames, the planted.json record).
    """
    height, width = frames[0].mask.shape if frames else (0, 0)
    pool = [f for f in frames if f.lines and not f.rare]
    sources = _take(rng, pool, n_duplicates, "duplicate sources")
    fine = _pick_fine(rng, list(pool), common_ids, fine_per_class)
    pool = [f for f in pool if f not in fine]
    record: dict = {"split": "train", "duplicates": [], "conflicting_labels": [], "false_boxes": []}
    copies = []
    for i, src in enumerate(sources):
        kind = (
            _DUPLICATE_KINDS[i]
            if i < len(_DUPLICATE_KINDS)
            else _MORE_DUPLICATES[(i - len(_DUPLICATE_KINDS)) % len(_MORE_DUPLICATES)]
        )
        image, mask = _near_copy(kind, src.image, src.mask)
        lines = list(src.lines)
        if kind == "conflict":  # same image, one box relabelled to another class
            first = lines[0].split()
            other = common_ids[(common_ids.index(int(first[0])) + 1) % len(common_ids)]
            if other == int(first[0]):
                lines = lines[1:] if len(lines) > 1 else []
            else:
                lines[0] = " ".join([str(other), *first[1:]])
        copy = _Frame(f"{len(frames) + i:05d}", image, mask, lines)
        copies.append(copy)
        entry = {"kind": kind, "original": f"{src.stem}.png", "copy": f"{copy.stem}.png"}
        key = "conflicting_labels" if kind == "conflict" else "duplicates"
        record[key].append(entry)
    hosts = _take(rng, [f for f in pool if any(int(x.split()[0]) in common_ids for x in f.lines)],
                  n_false_boxes, "false-box hosts")  # fmt: skip
    for i, host in enumerate(hosts):
        kind = FALSE_BOX_KINDS[i % len(FALSE_BOX_KINDS)]
        pos, text = _false_line(rng, kind, host, common_ids, width, height)
        host.lines.insert(pos, text)
        record["false_boxes"].append(
            {"label": f"{host.stem}.txt", "line": pos + 1, "kind": kind, "text": text}
        )
    record["false_boxes"].sort(key=lambda e: e["label"])
    record["fine"] = {names[c]: [f.stem for f in fine if c in f.classes] for c in common_ids}
    return copies, fine, record


def _write_frame(split_dir: Path, frame: _Frame) -> None:
    """Image (byte-stable PNG), true index mask and label lines of one frame."""
    image_path = split_dir / "images" / f"{frame.stem}.png"
    if not cv2.imwrite(str(image_path), np.ascontiguousarray(frame.image[..., ::-1])):
        raise OSError(f"could not write {image_path}")
    write_index_mask(split_dir / "true_masks" / f"{frame.stem}.png", frame.mask)
    text = "".join(line + "\n" for line in frame.lines)
    atomic_write_text(split_dir / "labels" / f"{frame.stem}.txt", text)


_PLANTED_KEYS = ("duplicates", "conflicting_labels", "false_boxes")


def _count(summary: dict, split: str, frames: list[_Frame], names: list[str], rare: list[str]):
    """Add a split's true boxes (and defect-free frames) to the summary counts."""
    for frame in frames:
        summary["defect_free"] += not frame.lines
        for line in frame.lines:
            name = names[int(line.split()[0])]
            summary["boxes"][name] += 1
            if name in rare:
                summary["rare_boxes"][split][name] += 1


def generate_pipe_dataset(
    out_dir: str | Path,
    n_train: int = 120,
    n_valid: int = 30,
    n_test: int = 30,
    width: int = 256,
    height: int = 256,
    class_names: Sequence[str] = PIPE_CLASSES,
    rare_classes: Sequence[str] = PIPE_RARE_CLASSES,
    rare_fraction: float = 0.04,
    n_duplicates: int = 5,
    n_false_boxes: int = 6,
    fine_per_class: int = 5,
    defect_free_fraction: float = 0.1,
    max_defects: int = 3,
    seed: int = 0,
    preview_png: str | Path | None = None,
) -> dict:
    """Write the synthetic pipe dataset (layout in the module docstring) atomically.

    ``n_train`` etc. count original frames; the ``n_duplicates`` planted copies are added to
    train on top. ``rare_fraction`` of each split's frames (an exact seeded subset) carry one
    defect of a rare class. Each split draws from ``default_rng([seed, split_index])``, the
    planting from ``default_rng([seed, 99])``, so reruns are byte-identical. Returns counts:
    ``{"images", "originals", "boxes", "defect_free", "rare_boxes", "planted", "fine", "seed"}``.
    """
    names = check_class_names(class_names, sorted(DEFECT_RENDERERS))
    counts = {"train": int(n_train), "valid": int(n_valid), "test": int(n_test)}
    common, rare = _check_dataset_args(
        names,
        rare_classes,
        counts,
        {"rare_fraction": rare_fraction, "defect_free_fraction": defect_free_fraction},
        {
            "n_duplicates": n_duplicates,
            "n_false_boxes": n_false_boxes,
            "fine_per_class": fine_per_class,
        },
    )
    if max_defects < 1:
        raise ValueError(f"max_defects must be >= 1, got {max_defects}")
    check_size(width, height, MIN_WIDTH, MIN_HEIGHT)
    common_ids = [names.index(c) for c in common]

    summary: dict = {
        "images": {},
        "originals": dict(counts),
        "boxes": {n: 0 for n in names},
        "defect_free": 0,
        "rare_boxes": {split: {n: 0 for n in rare} for split in SPLITS},
        "seed": seed,
    }
    folders = ("{split}/images", "{split}/labels", "{split}/true_masks")
    with split_writer(out_dir, counts, folders) as writer:
        root = writer.root
        for split in writer.splits():
            plan = _plan(
                np.random.default_rng([seed, split.index]), split.count, common,
                rare, defect_free_fraction, rare_fraction, max_defects,
            )  # fmt: skip
            frames = _render_split(writer, plan, names, width, height, rare)
            _count(summary, split.name, frames, names, rare)
            if split.name == "train":
                copies, fine, record = _plant(
                    np.random.default_rng([seed, 99]), frames, names, common_ids,
                    n_duplicates, n_false_boxes, fine_per_class,
                )  # fmt: skip
                frames = frames + copies
            list(writer.map(partial(_write_frame, split.dir), frames, desc=f"write {split.name}"))
            summary["images"][split.name] = len(frames)
        record["rare_boxes"] = summary["rare_boxes"]
        atomic_write_text(root / "fine.txt", "".join(f"{f.stem}\n" for f in fine))
        atomic_write_text(root / "planted.json", json.dumps(record, indent=2) + "\n")
        summary["planted"] = {k: len(record[k]) for k in _PLANTED_KEYS}
        summary["fine"] = len(fine)
        write_class_names(root / "data.yaml", names)
    if preview_png is not None:
        save_pipe_preview(out_dir, preview_png, class_names=names)
    return summary


# --------------------------------------------------------------------------- preview


def _preview_pick(root: Path, split: str, n: int, num_classes: int) -> list[Path]:
    """``n`` images of a split that between them show every class present (first by name)."""
    from defects.data.synthetic.preview import preview_images
    from defects.formats.mask_folder import read_index_mask

    images = preview_images(root, split, 10**9)
    present = {
        p: set(np.unique(read_index_mask(root / split / "true_masks" / f"{p.stem}.png",
                                         num_classes)).tolist()) - {0}
        for p in images
    }  # fmt: skip
    picked: list[Path] = []
    for value in range(1, num_classes + 1):
        first = next((p for p in images if value in present[p]), None)
        if first is not None and first not in picked and len(picked) < n:
            picked.append(first)
    picked += [p for p in images if p not in picked][: n - len(picked)]
    return sorted(picked)


def save_pipe_preview(
    root: str | Path,
    out_png: str | Path,
    n: int = 8,
    split: str = "train",
    class_names: Sequence[str] | None = None,
) -> Path:
    """Grid of ``n`` frames of ``root/split``: each raw, then with true masks and their boxes.

    The frames are picked so every class of the split shows up at least once (when ``n``
    allows). The boxes drawn are the ones derived from the true mask (the clean labels);
    planted false boxes are left out on purpose: this is a picture of the truth.
    """
    from defects.data.images import read_image
    from defects.formats.mask_folder import read_index_mask
    from defects.formats.yolo import read_class_names
    from defects.plots import draw_boxes, image_grid, overlay_masks, save_figure

    root = Path(root)
    names = list(class_names) if class_names else read_class_names(root / "data.yaml")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    images = _preview_pick(root, split, n, len(names))
    first = read_image(images[0], 3)
    fig, axes = image_grid(2 * len(images), first.shape[0] / first.shape[1], cell_width=3.2)
    for k, path in enumerate(images):
        raw_ax, ax = axes[2 * k], axes[2 * k + 1]
        image = read_image(path, 3)
        mask = read_index_mask(root / split / "true_masks" / f"{path.stem}.png", len(names))
        raw_ax.imshow(image, interpolation="nearest")
        raw_ax.set_title(f"{split}/{path.name}", fontsize=7)
        layers = np.stack([mask == c + 1 for c in range(len(names))])
        ax.imshow(overlay_masks(image, layers), interpolation="nearest")
        h, w = mask.shape
        boxes = boxes_from_index_mask(mask)
        xyxy = np.array([b.to_xyxy(w, h) for b in boxes]).reshape(-1, 4)
        draw_boxes(ax, xyxy, [b.class_id for b in boxes], names)
        present = ", ".join(names[c] for c in sorted({b.class_id for b in boxes})) or "no defects"
        ax.set_title(f"true masks + boxes: {present}", fontsize=7)
    return save_figure(fig, out_png)
