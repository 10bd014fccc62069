"""Synthetic videos of a coil being wound, with YOLO boxes per frame (the ``winding`` task).

This is the embedded default dataset of the ``winding`` task: operators watch winding machines
on video, so the data are short mp4 clips and the training images are frames cut from them.
The camera looks at a turning drum between two flanges from slightly to one side: copper turns
are laid side by side in layers that reverse at the flanges, fed from a traverse guide above.
Defects form at the lay point and then keep their place on the turning drum, so every box is
the projection of what is drawn in that frame, taken from the renderer's own geometry.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from defects.data.synthetic.common import (
    SHIFT,
    SPLITS,
    check_class_names,
    check_size,
    check_split_args,
    fixed_point,
    normalized_weights,
    plan_split,
    split_writer,
)
from defects.formats.io import atomic_write_bytes
from defects.formats.yolo import YoloBox, write_class_names, write_yolo_labels
from defects.video.frames import iter_frames, write_video

__all__ = [
    "WINDING_CLASSES",
    "SPLITS",
    "generate_winding_dataset",
    "render_winding_video",
]

WINDING_CLASSES: tuple[str, ...] = ("gap", "crossed_turn", "loose_loop", "bulge")

MIN_WIDTH = 160
MIN_HEIGHT = 120
# px; a gap is a few pixels wide, so boxes are grown to this (as weld does for cracks) to keep a
# 1-2 px localisation error from sinking IoU below 0.5.
_MIN_BOX = 10
_PLACEMENT_TRIES = 40
# A lower-layer gap less open than this (the next layer is laid over the rest) is buried: what
# is left is a sliver along the new turn's edge that looks like its groove.
_BURIED = 0.35
# Visible pixels left after a 2x2 erosion must reach this many (at 320x240; scaled by area):
# a defect seen only as a one-pixel sliver (a wire edge peeking out) is not labelled.
_MIN_CORE_PIXELS = 16
_CORE_KERNEL = np.ones((2, 2), np.uint8)
_BULGE_REACH = 2.0  # a bulge spans +- this many sigmas along the axis
_TEX = 4096  # samples of the enamel texture along the wire (wraps)
_TEX_PER_TURN = 48
_Box = tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels, x2/y2 exclusive
_Colour = tuple[float, float, float]

_COPPER = ((0.80, 0.45, 0.22), (0.68, 0.30, 0.15), (0.78, 0.55, 0.26), (0.58, 0.27, 0.13))
_FLANGE = ((0.52, 0.53, 0.56), (0.16, 0.28, 0.52), (0.13, 0.13, 0.14), (0.58, 0.13, 0.10))
_CORE = ((0.55, 0.55, 0.57), (0.74, 0.66, 0.50), (0.20, 0.20, 0.21))
_WALL = ((0.42, 0.44, 0.42), (0.35, 0.40, 0.37), (0.46, 0.43, 0.37), (0.30, 0.33, 0.38))
_BENCH = ((0.22, 0.22, 0.23), (0.30, 0.27, 0.22))
_MARK = ((0.92, 0.92, 0.88), (0.95, 0.80, 0.15))
_STEEL = np.array([0.60, 0.61, 0.63], np.float32)


@dataclass(frozen=True)
class _Scene:
    """Fixed geometry, materials and camera of one video; pixels, turns and radians.

    Axial position ``s`` runs from the left flange's inner face (0) to the right one's
    (``n_turns * d``); the camera is turned by a small yaw ``a``, so a point at axial ``s``,
    radius ``rho`` and angle ``phi`` (90 deg = top, 180 deg = facing the camera) lands at
    ``x = x0 + s cos(a) + rho cos(phi) sin(a)``, ``y = cy - rho sin(phi)``. Time is counted in
    turns laid (``lay``): the drum turns once per turn, so its angle is ``2 pi lay``.
    """

    width: int
    height: int
    d: float  # wire diameter
    n_turns: int  # turns per layer
    r0: float  # bare drum (core) radius
    flange_r: float
    flange_t: float
    sin_a: float
    cos_a: float
    x0: float
    cy: float
    rev: float  # drum revolutions (= turns laid) per frame
    p_start: float  # turns laid before the first frame
    light: np.ndarray  # unit vector (axial, depth away from the camera, up)
    half: np.ndarray  # Blinn half vector between light and camera
    copper: np.ndarray
    spec: np.ndarray
    shininess: float
    core: np.ndarray
    flange: np.ndarray
    mark: np.ndarray
    holes: int
    hole_phase: float
    mark_phase: float
    wire_tex: np.ndarray
    background: np.ndarray  # HxWx3: wall, bench, stands, rail (behind the drum)
    overlay: np.ndarray  # HxWx3: shaft and bearing stand (in front of it)
    overlay_alpha: np.ndarray  # HxWx1 in [0, 1]
    gain: np.ndarray  # HxWx1 lighting falloff
    pulley_y: float
    pulley_r: float
    carriage: tuple[float, float]  # half width, height
    rail: tuple[float, float]  # x range the guide travels
    lead: float  # px the guide runs ahead of the lay point
    supply_side: int  # the wire comes in along the rail from this side (-1 left, +1 right)
    flicker: tuple[float, float, float]  # amplitude, cycles per frame, phase
    blur: float
    noise: float
    flip: bool

    @property
    def wire_px(self) -> int:
        """Drawn thickness of a loose wire (feed, crossing, loop)."""
        return max(1, int(round(self.d * 0.75)))

    def direction(self, layer: int) -> int:
        """Even layers are laid left to right, odd ones back again."""
        return 1 if layer % 2 == 0 else -1

    def s_of_u(self, layer: int, u: np.ndarray | float) -> np.ndarray | float:
        """Axial position of turn coordinate ``u`` (0 = first turn) in ``layer``."""
        if layer % 2 == 0:
            return (u + 0.5) * self.d
        return (self.n_turns - u - 0.5) * self.d

    def u_of_s(self, layer: int, s: np.ndarray | float) -> np.ndarray | float:
        """Inverse of ``s_of_u``."""
        if layer % 2 == 0:
            return s / self.d - 0.5
        return self.n_turns - s / self.d - 0.5

    def outer(self, layer: int) -> float:
        """Outer radius of a layer's turns (layer -1 is the bare drum)."""
        return self.r0 + (layer + 1) * self.d


@dataclass(frozen=True)
class _Defect:
    """One defect, anchored in a layer at turn coordinate ``q`` where the lay point made it.

    ``size``: gap width, crossing or loop length along the wire, or bulge sigma (turns);
    ``reach``: turns a crossing runs back over, loop height or bulge height (px);
    ``lateral``: a loop's sideways lean (turns).
    """

    kind: str
    class_id: int
    layer: int
    q: float
    size: float
    reach: float = 0.0
    lateral: float = 0.0


@dataclass(frozen=True)
class _State:
    """Where the machine is in one frame."""

    lay: float  # turns laid since the drum was empty
    top: int  # layer being laid
    p_in: float  # turns of it laid so far
    gaps: list[_Defect]
    bulges: list[_Defect]


# --------------------------------------------------------------------------- scene


def _palette(rng: np.random.Generator, colours: Sequence[Sequence[float]]) -> np.ndarray:
    """One of ``colours``, jittered a little so no two videos share exact materials."""
    base = np.asarray(colours[int(rng.integers(len(colours)))], np.float32)
    jitter = base * rng.uniform(0.9, 1.1) + rng.uniform(-0.02, 0.02, 3)
    return np.clip(jitter, 0.0, 1.0).astype(np.float32)


def _steel_bar(length: int, thickness: int, base: np.ndarray) -> np.ndarray:
    """Shading across a round steel bar (rail, shaft): a bright band above the middle."""
    t = np.linspace(-1.0, 1.0, max(thickness, 1), dtype=np.float32)
    shade = 0.45 + 0.55 * np.sqrt(np.clip(1.0 - t * t, 0.0, 1.0))
    shade += 0.35 * np.exp(-(((t + 0.35) / 0.2) ** 2))
    return np.repeat((shade[:, None] * base[None, :])[:, None, :], max(length, 1), axis=1)


def _make_scene(rng: np.random.Generator, width: int, height: int, n_frames: int) -> _Scene:
    """Draw the machine: drum size, camera yaw, speeds, materials, static background."""
    d = rng.uniform(5.6, 7.2) * height / 240.0
    r0 = rng.uniform(0.15, 0.19) * height
    flange_r = rng.uniform(0.32, 0.35) * height
    flange_t = rng.uniform(0.025, 0.04) * height
    alpha = rng.uniform(0.26, 0.42)
    sin_a, cos_a = math.sin(alpha), math.cos(alpha)
    # Top layer index that still leaves room for a bulge under the flange rim.
    max_layer = max(int((flange_r - r0 - 1.5 * d) / d) - 1, 0)
    room = 0.9 * width - 2 * flange_r * sin_a - 2 * flange_t * cos_a
    n_turns = max(int(min(rng.uniform(0.5, 0.6) * width, room / cos_a) / d), 10)
    extent = (n_turns * d + 2 * flange_t) * cos_a + 2 * flange_r * sin_a
    x0 = (width - extent) * rng.uniform(0.3, 0.7) + flange_t * cos_a + flange_r * sin_a
    cy = rng.uniform(0.57, 0.62) * height

    rev = rng.uniform(0.15, 0.4)
    capacity = (max_layer + 1) * n_turns - 0.01
    span = rev * max(n_frames - 1, 0)
    if span > capacity:  # a very long video: slow the machine down rather than overfill it
        rev, span = capacity / max(n_frames - 1, 1), capacity
    p_start = int(rng.integers(0, min(2, max_layer) + 1)) * n_turns + rng.uniform(0, n_turns)

    light = np.array([rng.uniform(-0.4, 0.4), rng.uniform(-0.8, -0.4), rng.uniform(0.5, 0.9)])
    light /= np.linalg.norm(light)
    view = np.array([sin_a, -cos_a, 0.0])
    copper = _palette(rng, _COPPER)
    spec = (0.5 * copper + 0.5) * rng.uniform(0.55, 0.9)
    tex = cv2.GaussianBlur(rng.standard_normal((1, _TEX)).astype(np.float32), (0, 0), 3.0)
    tex = tex.ravel() / (tex.std() + 1e-6) * rng.uniform(0.04, 0.07)

    pulley_r = 0.03 * height
    pulley_y = cy - flange_r - pulley_r - 0.015 * height
    carriage = (0.06 * width, 0.05 * height)
    rail_y = pulley_y - pulley_r - 0.02 * height - carriage[1] * 0.5
    floor = int(min(cy + flange_r + rng.uniform(0.01, 0.05) * height, height - 2))
    background = _background(
        rng, width, height, x0, cy, floor, n_turns * d, flange_r, flange_t, sin_a, cos_a, rail_y
    )
    face_x = x0 + (n_turns * d + flange_t) * cos_a
    overlay, overlay_alpha = _front_layer(
        width, height, face_x, face_x + flange_r * sin_a, cy, floor
    )
    return _Scene(
        width=width,
        height=height,
        d=d,
        n_turns=n_turns,
        r0=r0,
        flange_r=flange_r,
        flange_t=flange_t,
        sin_a=sin_a,
        cos_a=cos_a,
        x0=x0,
        cy=cy,
        rev=rev,
        p_start=float(min(p_start, capacity - span)),
        light=light.astype(np.float32),
        half=((light + view) / np.linalg.norm(light + view)).astype(np.float32),
        copper=copper,
        spec=spec.astype(np.float32),
        shininess=rng.uniform(18.0, 45.0),
        core=_palette(rng, _CORE),
        flange=_palette(rng, _FLANGE),
        mark=_palette(rng, _MARK),
        holes=int(rng.integers(3, 7)),
        hole_phase=rng.uniform(0, 2 * math.pi),
        mark_phase=rng.uniform(0, 2 * math.pi),
        wire_tex=tex,
        background=background,
        overlay=overlay,
        overlay_alpha=overlay_alpha,
        gain=_lighting(rng, width, height),
        pulley_y=pulley_y,
        pulley_r=pulley_r,
        carriage=carriage,
        rail=(x0 + 0.5 * d * cos_a, x0 + (n_turns - 0.5) * d * cos_a),
        lead=rng.uniform(0.5, 1.5) * d,
        supply_side=1 if rng.uniform() < 0.5 else -1,
        flicker=(rng.uniform(0.005, 0.02), rng.uniform(0.05, 0.45), rng.uniform(0, 2 * math.pi)),
        blur=rng.uniform(0.5, 0.85),
        noise=rng.uniform(0.01, 0.022),
        flip=bool(rng.uniform() < 0.5),
    )


def _background(
    rng: np.random.Generator,
    width: int,
    height: int,
    x0: float,
    cy: float,
    floor: int,
    core_len: float,
    flange_r: float,
    flange_t: float,
    sin_a: float,
    cos_a: float,
    rail_y: float,
) -> np.ndarray:
    """Everything behind the drum: wall, bench, the drum's shadow, left stand, shaft and rail."""
    wall = _palette(rng, _WALL)
    yy = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    mottle = rng.standard_normal((5, 7)).astype(np.float32)
    mottle = cv2.resize(mottle, (width, height), interpolation=cv2.INTER_CUBIC)[:, :, None]
    img = (wall[None, None, :] * (1.05 - 0.25 * yy + 0.04 * mottle)).astype(np.float32)
    seam = int(rng.uniform(0.08, 0.3) * height)  # a horizontal panel joint
    img[seam : seam + 1] *= 0.7
    bench = _palette(rng, _BENCH)
    fade = 1.0 - 0.3 * np.linspace(0, 1, height - floor, dtype=np.float32)
    img[floor:] = bench * fade[:, None, None]
    img[floor : floor + 1] = bench * 1.8
    # Soft shadow of the drum on the wall, cast down and to the side.
    shadow = np.zeros((height, width), np.float32)
    centre = (int(x0 + core_len * cos_a / 2 + 0.04 * width), int(cy + 0.05 * height))
    axes = (int(core_len * cos_a / 2 + flange_r * sin_a), int(flange_r * 1.02))
    cv2.ellipse(shadow, centre, axes, 0, 0, 360, 1.0, -1)
    img *= 1.0 - 0.35 * cv2.GaussianBlur(shadow, (0, 0), 0.05 * height)[:, :, None]

    stand_w, shaft_r = _stand_sizes(width, height)
    left_face = x0 - flange_t * cos_a
    stand_x = int(max(left_face - flange_r * sin_a - stand_w - 0.02 * width, 0))
    img[int(cy) : floor, stand_x : stand_x + stand_w] = _STEEL * 0.45
    rows = slice(int(cy) - shaft_r, int(cy) + shaft_r)
    img[rows, : int(left_face)] = _steel_bar(int(left_face), 2 * shaft_r, _STEEL * 0.8)
    rail_h = max(int(0.028 * height), 3)
    y0 = int(rail_y - rail_h / 2)
    img[y0 : y0 + rail_h] = _steel_bar(width, rail_h, _STEEL)
    return img


def _stand_sizes(width: int, height: int) -> tuple[int, int]:
    """Bearing stand width and shaft radius (px)."""
    return max(int(0.07 * width), 6), max(int(0.035 * height), 2)


def _front_layer(
    width: int, height: int, face_x: float, right_edge: float, cy: float, floor: int
) -> tuple[np.ndarray, np.ndarray]:
    """Shaft out of the near flange's hub and its bearing stand, drawn over the flange."""
    overlay = np.zeros((height, width, 3), np.float32)
    alpha = np.zeros((height, width, 1), np.float32)
    stand_w, shaft_r = _stand_sizes(width, height)
    stand_x = int(min(right_edge + 0.03 * width, width - stand_w))
    overlay[int(cy) : floor, stand_x : stand_x + stand_w] = _STEEL * 0.5
    alpha[int(cy) : floor, stand_x : stand_x + stand_w] = 1.0
    rows, start = slice(int(cy) - shaft_r, int(cy) + shaft_r), int(face_x)
    overlay[rows, start:] = _steel_bar(width - start, 2 * shaft_r, _STEEL)
    alpha[rows, start:] = 1.0
    return overlay, alpha


def _lighting(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Uneven workshop light: off-centre vignette times a linear gradient (HxWx1)."""
    uy = np.linspace(-0.5, 0.5, height, dtype=np.float32)[:, None]
    ux = np.linspace(-0.5, 0.5, width, dtype=np.float32)[None, :]
    cx0, cy0 = rng.uniform(-0.25, 0.25), rng.uniform(-0.3, 0.1)
    vignette = 1.0 - rng.uniform(0.4, 0.8) * ((ux - cx0) ** 2 + (uy - cy0) ** 2)
    tilt = 1.0 + rng.uniform(-0.25, 0.25) * ux + rng.uniform(-0.15, 0.1) * uy
    return (vignette * tilt * rng.uniform(0.95, 1.15)).astype(np.float32)[:, :, None]


# --------------------------------------------------------------------------- defects


def _shape(rng: np.random.Generator, scene: _Scene, kind: str, q: float) -> tuple:
    """A defect's shape made with the lay point at ``q``, and the turn range it spans."""
    if kind == "gap":  # the traverse jumps: the next turn lands a wire width or so further
        width = rng.uniform(0.7, 1.4)
        return (q - 0.6, width, 0.0, 0.0), (q - 1.6, q + width + 0.4)
    if kind == "crossed_turn":  # the wire slips back diagonally over the last few turns
        length, back = rng.uniform(0.35, 0.6), rng.uniform(2.5, 4.5)
        return (q - length, length, back, 0.0), (q - length - back - 1.0, q - length + 1.0)
    if kind == "loose_loop":  # slack: a short length of wire stands off the winding
        length, height = rng.uniform(0.07, 0.14), rng.uniform(1.8, 3.5) * scene.d
        return (q, length, height, rng.uniform(-0.8, 0.8)), (q - 1.5, q + 1.5)
    sigma, height = rng.uniform(1.2, 2.2), rng.uniform(0.7, 1.3) * scene.d  # bulge
    return (q - 2.0 * sigma, sigma, height, 0.0), (q - 4.0 * sigma, q)


def _place_defects(
    rng: np.random.Generator,
    scene: _Scene,
    n_frames: int,
    kinds: Sequence[str],
    names: Sequence[str],
) -> list[_Defect]:
    """Pick, per requested kind, when the lay point makes it, and its shape.

    Half the tries let it form during the first 60 % of the video, half before the video
    starts: anywhere on the turns still in view at the first frame (the layer being laid, or
    the part of the one below it not yet covered). It keeps away from the flanges and,
    axially, from the others, so boxes rarely touch. One that cannot be placed after a few
    tries is dropped.
    """
    n = scene.n_turns
    top0 = int(scene.p_start // n)
    p_in0 = scene.p_start - top0 * n
    placed: list[_Defect] = []
    spans: list[tuple[float, float]] = []
    for kind in kinds:
        for _ in range(_PLACEMENT_TRIES):
            if rng.uniform() < 0.5:
                lay = scene.p_start + scene.rev * rng.uniform(0.0, 0.6) * max(n_frames - 1, 0)
            else:
                lay = scene.p_start - rng.uniform(0.0, n)
            if lay < 0:
                continue
            layer = int(lay // n)
            (q, size, reach, lateral), (lo, hi) = _shape(rng, scene, kind, lay - layer * n)
            if lo < 1.0 or hi > n - 2.0:
                continue
            a, b = sorted((float(scene.s_of_u(layer, lo)), float(scene.s_of_u(layer, hi))))
            if layer < top0:  # the layer laid over it must not have reached it yet
                reached = [float(scene.u_of_s(top0, x)) for x in (a, b)]
                if min(reached) < p_in0 + 1.5:
                    continue
            margin = 2.5 * scene.d
            if any(a < end + margin and start < b + margin for start, end in spans):
                continue
            spans.append((a, b))
            placed.append(_Defect(kind, names.index(kind), layer, q, size, reach, lateral))
            break
    return placed


def _shift(gaps: list[_Defect], layer: int, q: float) -> float:
    """Axial offset (turns) of turn ``q``: every gap laid before it pushes it along."""
    return sum(g.size for g in gaps if g.layer == layer and q >= g.q)


def _bulge_height(bulge: _Defect, state: _State, layer: int) -> float:
    """Height of a bulge in ``layer`` now: it grows while its own layer is laid over it, and
    every layer laid on top of it bulges as well."""
    if layer < bulge.layer or state.top < bulge.layer:
        return 0.0
    if state.top > bulge.layer or layer > bulge.layer:
        return bulge.reach
    x = (state.p_in - (bulge.q - 1.5 * bulge.size)) / (3.0 * bulge.size)
    x = min(max(x, 0.0), 1.0)
    return bulge.reach * x * x * (3.0 - 2.0 * x)


@dataclass(frozen=True)
class _Bumps:
    """Radius added by bulges to one layer, as a function of axial position."""

    terms: tuple[tuple[float, float, float], ...]  # (height, centre s, sigma), px

    @classmethod
    def of(cls, scene: _Scene, state: _State, layer: int) -> _Bumps:
        terms = []
        for b in state.bulges:
            height = _bulge_height(b, state, layer)
            if height > 0:
                terms.append((height, float(scene.s_of_u(b.layer, b.q)), b.size * scene.d))
        return cls(tuple(terms))

    def __call__(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Radius offset and its slope d(offset)/ds."""
        r, slope = np.zeros_like(s), np.zeros_like(s)
        for height, centre, sigma in self.terms:
            r += height * _bump((s - centre) / sigma)
            w = np.clip((s - centre) / (_BULGE_REACH * sigma), -1.0, 1.0)
            slope += height * -4.0 * w * (1.0 - w * w) / (_BULGE_REACH * sigma)
        return r, slope


def _bump(z: np.ndarray) -> np.ndarray:
    """Bulge profile over ``z`` = offset / sigma: Gaussian-like, but exactly 0 past the reach
    (a hard outline moves by whole pixels for any tail, and the box must hold all of it)."""
    w = np.clip(z / _BULGE_REACH, -1.0, 1.0)
    return (1.0 - w * w) ** 2


# --------------------------------------------------------------------------- the drum


@dataclass(frozen=True)
class _Grid:
    """Pixel coordinates of the drum's bounding region, relative to the drum axis."""

    rows: slice
    cols: slice
    x: np.ndarray
    y: np.ndarray


def _grid(scene: _Scene) -> _Grid:
    top = int(max(scene.cy - scene.flange_r - 2, 0))
    bottom = int(min(scene.cy + scene.flange_r + 3, scene.height))
    left = int(max(scene.x0 - scene.flange_r * scene.sin_a - 2, 0))
    right = int(min(scene.x0 + scene.n_turns * scene.d * scene.cos_a + 3, scene.width))
    ys, xs = np.mgrid[top:bottom, left:right].astype(np.float32)
    return _Grid(slice(top, bottom), slice(left, right), xs - scene.x0, ys - scene.cy)


def _project(scene: _Scene, grid: _Grid, radius: float, bumps: _Bumps) -> dict[str, np.ndarray]:
    """Invert the projection for the visible half of a cylinder of ``radius`` (+ bulges).

    Per pixel: whether the surface covers it, its axial position ``s``, ``v`` = sin(phi),
    ``c`` = cos(phi), ``delta`` = turns of drum angle past the top (0 top .. 0.5 bottom) and
    the surface ``slope`` along the axis (bulges). A bulged radius depends on ``s``, which
    depends on the radius: a few fixed-point steps settle it.
    """
    rr: np.ndarray | float = radius
    slope = np.zeros_like(grid.x)

    def invert(rr: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        v = np.clip(-grid.y / rr, -1.0, 1.0)
        c = -np.sqrt(1.0 - v * v)
        return v, c, (grid.x - rr * c * scene.sin_a) / scene.cos_a

    v, c, s = invert(rr)
    for _ in range(2 if bumps.terms else 0):
        dr, slope = bumps(s)
        rr = radius + dr
        v, c, s = invert(rr)
    inside = (np.abs(grid.y) < rr) & (s >= 0.0) & (s <= scene.n_turns * scene.d)
    delta = (0.5 * math.pi - np.arcsin(v)) / (2.0 * math.pi)
    return {"inside": inside, "s": s, "v": v, "c": c, "delta": delta, "slope": slope}


def _coverage(
    u: np.ndarray, c: np.ndarray, laid: float, gaps: list[tuple[float, float]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which pixels a layer's wire covers, its turn coordinate there and the offset across it.

    ``c`` is the newest turn coordinate at each pixel's drum angle; the wire passing there is
    ``q = c - k`` (laid k turns earlier), the one whose axial place ``q`` (plus the gaps laid
    before it) is nearest the pixel's ``u``. Gaps cut the helix into shifted segments.
    """
    covered = np.zeros(u.shape, bool)
    q_sel = np.zeros(u.shape, np.float32)
    across = np.zeros(u.shape, np.float32)
    lo, shift = -np.inf, 0.0
    for q_gap, width in [*sorted(gaps), (np.inf, 0.0)]:
        uu = u - shift
        q = c - np.round(c - uu)
        ok = ~covered & (q >= lo) & (q < q_gap) & (q >= 0.0) & (q <= laid)
        covered |= ok
        q_sel[ok] = q[ok]
        across[ok] = (uu - q)[ok]
        lo, shift = q_gap, shift + width
    return covered, q_sel, across


def _shade(
    scene: _Scene, albedo: np.ndarray, normal: tuple, ao: np.ndarray, spec: float
) -> np.ndarray:
    """Blinn-Phong with ambient; ``normal`` = unit components (axial, depth, up)."""
    nx, ny, nz = normal
    lx, ly, lz = scene.light
    hx, hy, hz = scene.half
    diffuse = np.clip(nx * lx + ny * ly + nz * lz, 0.0, None)
    glint = np.clip(nx * hx + ny * hy + nz * hz, 0.0, None) ** scene.shininess
    return albedo * ((0.28 + 0.85 * diffuse) * ao)[:, None] + (spec * glint)[:, None] * scene.spec


def _copper(
    scene: _Scene, layer: int, proj: dict, sel: np.ndarray, q_sel: np.ndarray, across: np.ndarray
) -> np.ndarray:
    """Shaded turns: round wire across (dark grooves), enamel texture turning with the drum."""
    sinb = np.clip(2.0 * across[sel], -1.0, 1.0) * 0.96
    cosb = np.sqrt(1.0 - sinb * sinb)
    nx = sinb * scene.direction(layer) - proj["slope"][sel] * cosb
    ny, nz = cosb * proj["c"][sel], cosb * proj["v"][sel]
    norm = np.sqrt(nx * nx + ny * ny + nz * nz)
    where = ((q_sel[sel] + layer * scene.n_turns) * _TEX_PER_TURN).astype(np.int64) % _TEX
    albedo = scene.copper[None, :] * (1.0 + scene.wire_tex[where])[:, None]
    return _shade(scene, albedo, (nx / norm, ny / norm, nz / norm), 0.35 + 0.65 * cosb, 1.0)


@dataclass(frozen=True)
class _Layer:
    """One layer's pixels in the drum region."""

    proj: dict[str, np.ndarray]
    covered: np.ndarray
    q: np.ndarray
    across: np.ndarray
    slots: dict[int, np.ndarray]  # defect index -> open gap pixels


def _layer(
    scene: _Scene, grid: _Grid, state: _State, layer: int, laid: float, defects: list[_Defect]
) -> _Layer:
    """Project a layer (``laid`` turns of it so far) and find its wire and gap slots."""
    proj = _project(scene, grid, scene.outer(layer), _Bumps.of(scene, state, layer))
    u = np.asarray(scene.u_of_s(layer, proj["s"]))
    for b in state.bulges:  # turns piled into a bulge lie unevenly
        if _bulge_height(b, state, layer) > 0:
            z = (u - scene.u_of_s(layer, scene.s_of_u(b.layer, b.q))) / b.size
            u = u + 0.25 * _bump(z) * np.sin(2 * math.pi * (3 * proj["delta"] + 0.37 * u))
    c = state.lay - proj["delta"] - layer * scene.n_turns
    gaps = [(g.q, g.size) for g in state.gaps if g.layer == layer]
    covered, q_sel, across = _coverage(u, c, laid, gaps)
    covered &= proj["inside"]
    slots = {}
    for index, g in enumerate(defects):
        if g.kind == "gap" and g.layer == layer:
            uu = u - _shift(state.gaps, layer, g.q - 1e-6)
            slot = (uu > g.q - 0.5) & (uu < g.q + g.size + 0.5) & (c >= g.q + 0.15)
            slots[index] = slot & ~covered & proj["inside"]
    return _Layer(proj, covered, q_sel, across, slots)


def _draw_drum(
    img: np.ndarray, scene: _Scene, grid: _Grid, state: _State, defects: list[_Defect]
) -> tuple[dict[int, np.ndarray], np.ndarray, np.ndarray]:
    """The turns: the layer being laid over the last full one (or the bare drum).

    Returns region-sized masks: the open slot of each visible gap, all drum pixels, and the
    axial position of the top layer's surface per pixel (for bulge boxes).
    """
    shaded = np.zeros(grid.x.shape + (3,), np.float32)
    top = _layer(scene, grid, state, state.top, state.p_in, defects)
    if top.covered.any():
        shaded[top.covered] = _copper(scene, state.top, top.proj, top.covered, top.q, top.across)
    slots = dict(top.slots)
    if state.top >= 1:
        base = _layer(scene, grid, state, state.top - 1, float(scene.n_turns), defects)
        sel = base.covered & ~top.covered
        if sel.any():
            shaded[sel] = _copper(scene, state.top - 1, base.proj, sel, base.q, base.across)
        # Through a gap of the full layer: the layer below, deep in shadow.
        deep = base.proj["inside"] & ~base.covered & ~top.covered
        shaded[deep] = scene.copper * 0.2 if state.top >= 2 else scene.core * 0.4
        for index, slot in base.slots.items():  # buried where the top layer is laid over it
            still_open = slot & ~top.covered
            buried = still_open.sum() < _BURIED * slot.sum()
            slots[index] = np.zeros_like(slot) if buried else still_open
        body = base.proj["inside"] | top.covered
    else:
        core = _project(scene, grid, scene.r0, _Bumps(()))
        sel = core["inside"] & ~top.covered
        if sel.any():
            c, v = core["c"][sel], core["v"][sel]
            phase = (state.lay - core["delta"][sel]) % 1.0
            seam = 1.0 - 0.45 * np.exp(-(((phase - 0.3) / 0.012) ** 2))  # tape seam turning by
            albedo = scene.core[None, :] * seam[:, None]
            shaded[sel] = _shade(scene, albedo, (0.0 * c, c, v), np.ones_like(c), 0.25)
        body = core["inside"] | top.covered
    for slot in top.slots.values():  # a slot in the top layer lies in its neighbours' shadow
        shaded[slot] *= 0.55
    region = img[grid.rows, grid.cols]
    region[body] = shaded[body]
    return slots, body, top.proj["s"]


# --------------------------------------------------------------------------- parts drawn on top


def _colour(c: np.ndarray, scale: float = 1.0) -> _Colour:
    r, g, b = (float(v) for v in np.clip(c * scale, 0.0, 1.5))
    return r, g, b


def _ellipse(
    img: np.ndarray, cx: float, cy: float, ax: float, ay: float, colour, thick: int = -1
) -> None:
    """Axis-aligned sub-pixel ellipse (a circle on a flange, seen at the camera's yaw)."""
    scale = 1 << SHIFT
    centre = (int(round(cx * scale)), int(round(cy * scale)))
    axes = (max(int(round(ax * scale)), 1), max(int(round(ay * scale)), 1))
    cv2.ellipse(img, centre, axes, 0, 0, 360, colour, thick, cv2.LINE_AA, SHIFT)


def _line(img: np.ndarray, xs: np.ndarray, ys: np.ndarray, colour, thick: int) -> None:
    cv2.polylines(img, [fixed_point(xs, ys)], False, colour, thick, cv2.LINE_AA, SHIFT)


def _draw_wire(img: np.ndarray, xs: np.ndarray, ys: np.ndarray, thick: int, base: np.ndarray):
    """A round wire: dark edges, copper body and a thin highlight on the lit side."""
    _line(img, xs, ys, _colour(base, 0.3), thick + 2)
    _line(img, xs, ys, _colour(base, 0.85), thick)
    _line(img, xs, ys - thick * 0.25, _colour(0.5 * base + 0.5), max(1, thick // 3))


def _draw_flange(img: np.ndarray, scene: _Scene, cx: float, rot: float, near: bool) -> None:
    """A flange: rim, face, lightening holes turning with the drum; the near one's outer
    face also shows the hub, its bolts and a paint mark."""
    r, sa, cy = scene.flange_r, scene.sin_a, scene.cy
    face = scene.flange * (1.0 if near else 0.8)
    _ellipse(img, cx - scene.flange_t * scene.cos_a, cy, r * sa, r, _colour(scene.flange, 0.45))
    _ellipse(img, cx, cy, r * sa, r, _colour(face))
    _ellipse(img, cx, cy, r * sa * 0.97, r * 0.97, _colour(face, 1.25), max(1, int(r * 0.02)))
    hole = scene.background[int(cy)].mean(axis=0) * 0.35
    for i in range(scene.holes):
        theta = rot + scene.hole_phase + 2 * math.pi * i / scene.holes
        hx, hy = cx + 0.6 * r * math.cos(theta) * sa, cy - 0.6 * r * math.sin(theta)
        _ellipse(img, hx, hy, 0.15 * r * sa, 0.15 * r, _colour(hole))
        _ellipse(img, hx, hy, 0.15 * r * sa, 0.15 * r, _colour(face, 0.6), 1)
    if not near:
        return
    _ellipse(img, cx, cy, 0.24 * r * sa, 0.24 * r, _colour(face, 0.7))
    for i in range(6):
        theta = rot + 2 * math.pi * i / 6
        bx, by = cx + 0.17 * r * math.cos(theta) * sa, cy - 0.17 * r * math.sin(theta)
        _ellipse(img, bx, by, 0.03 * r * sa + 0.5, 0.03 * r + 0.5, _colour(_STEEL, 1.1))
    theta = rot + scene.mark_phase
    radial = np.array([0.72, 0.93]) * r
    xs, ys = cx + radial * math.cos(theta) * sa, cy - radial * math.sin(theta)
    _line(img, xs, ys, _colour(scene.mark), max(2, int(0.05 * r)))


def _defect_wire(scene: _Scene, state: _State, defect: _Defect) -> tuple:
    """A crossing or loop wire: its image points, which are in view, the points right under
    it on the turns (where a loop's shadow falls) and which of those face the camera."""
    tau = np.linspace(0.0, 1.0, 28, dtype=np.float32)
    q_wire = defect.layer * scene.n_turns + defect.q + defect.size * tau
    u0 = defect.q + _shift(state.gaps, defect.layer, defect.q)
    if defect.kind == "crossed_turn":
        u, lift = u0 - defect.reach * tau, np.zeros_like(tau)
    else:  # loose loop: both ends in the groove, the middle standing off and leaning sideways
        u = u0 + defect.lateral * np.sin(np.pi * tau)
        lift = defect.reach * np.clip(np.sin(np.pi * tau), 0.0, 1.0) ** 0.8
    s = np.asarray(scene.s_of_u(defect.layer, u), np.float32)
    surface = scene.outer(defect.layer) + _Bumps.of(scene, state, defect.layer)(s)[0]
    rho = surface + 0.45 * scene.d + lift
    phi = 0.5 * math.pi + 2.0 * math.pi * (state.lay - q_wire)
    cphi, sphi = np.cos(phi), np.sin(phi)
    xs = scene.x0 + s * scene.cos_a + rho * cphi * scene.sin_a
    ys = scene.cy - rho * sphi
    # In view: laid already, and on the front half or standing out past the outline.
    visible = (q_wire <= state.lay) & ((cphi < 0) | (rho * np.abs(sphi) > surface + 0.5))
    if state.top >= defect.layer + 2:
        visible[:] = False
    elif state.top == defect.layer + 1:  # buried where the next layer is laid over it
        delta = ((phi - 0.5 * math.pi) / (2.0 * math.pi)) % 1.0
        visible &= np.asarray(scene.u_of_s(state.top, s)) > state.p_in - delta + 0.5
    under = (xs - lift * cphi * scene.sin_a, ys + lift * sphi)
    return (xs, ys), visible, under, cphi < 0


def _runs(mask: np.ndarray) -> list[slice]:
    """Consecutive True stretches of a 1-D mask (at least two points each)."""
    out, start = [], None
    for i, m in enumerate([*mask.tolist(), False]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            if i - start >= 2:
                out.append(slice(start, i))
            start = None
    return out


def _draw_guide(
    img: np.ndarray, occ: np.ndarray, scene: _Scene, x_pulley: float, spin: float
) -> None:
    """Traverse guide: wire in along the rail, carriage, arm and grooved pulley (spokes turn)."""
    thick, py, pr = scene.wire_px, scene.pulley_y, scene.pulley_r
    hw, hh = scene.carriage
    edge = -4.0 if scene.supply_side < 0 else scene.width + 4.0
    _draw_wire(img, np.array([edge, x_pulley]), np.array([py - pr, py - pr]), thick, scene.copper)
    x1, x2 = int(x_pulley - hw), int(x_pulley + hw)
    y1 = int(py - pr - 0.02 * scene.height - hh)
    y2 = int(y1 + hh)
    cv2.rectangle(img, (x1, y1), (x2, y2), _colour(_STEEL, 0.35), -1)
    lit = (x2 - 1, y1 + max(2, int(hh * 0.3)))
    cv2.rectangle(img, (x1 + 1, y1 + 1), lit, _colour(_STEEL, 0.6), -1)
    cv2.rectangle(img, (x1, y1), (x2, y2), _colour(_STEEL, 0.15), 1)
    for bx in (x1 + int(hw * 0.35), x2 - int(hw * 0.35)):
        cv2.circle(img, (bx, int(y1 + hh * 0.6)), max(1, int(hh * 0.12)), _colour(_STEEL, 0.9), -1)
    arm = max(1, int(pr * 0.25))
    cv2.rectangle(
        img, (int(x_pulley) - arm, y2), (int(x_pulley) + arm, int(py)), _colour(_STEEL, 0.45), -1
    )
    _ellipse(img, x_pulley, py, pr, pr, _colour(_STEEL, 0.85))
    _ellipse(img, x_pulley, py, pr, pr, _colour(scene.copper, 0.5), thick)
    for i in range(3):
        theta = spin + 2 * math.pi * i / 3
        xs = x_pulley + np.array([0.0, 0.75 * pr * math.cos(theta)])
        ys = py + np.array([0.0, -0.75 * pr * math.sin(theta)])
        _line(img, xs, ys, _colour(_STEEL, 0.4), 1)
    _ellipse(img, x_pulley, py, pr * 0.2, pr * 0.2, _colour(_STEEL, 0.3))
    cv2.rectangle(occ, (x1 - 1, y1 - 1), (x2 + 1, int(py + pr) + 1), 1, -1)


# --------------------------------------------------------------------------- frames


def _bbox(mask: np.ndarray, width: int, height: int, pad: int = 1) -> _Box | None:
    """Tight pixel box around a defect's visible pixels, grown to ``_MIN_BOX``, clipped."""
    x, y, w, h = cv2.boundingRect(mask)
    if w == 0 or h == 0:
        return None

    def grow(lo: int, hi: int) -> tuple[int, int]:
        short = _MIN_BOX - (hi - lo)
        return (lo - short // 2, hi + short - short // 2) if short > 0 else (lo, hi)

    x1, x2 = grow(x - pad, x + w + pad)
    y1, y2 = grow(y - pad, y + h + pad)
    x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return None
    return x1, y1, x2, y2


def _state(scene: _Scene, defects: list[_Defect], t: int) -> _State:
    lay = scene.p_start + scene.rev * t
    top = int(lay // scene.n_turns)
    return _State(
        lay=lay,
        top=top,
        p_in=lay - top * scene.n_turns,
        gaps=[d for d in defects if d.kind == "gap"],
        bulges=[d for d in defects if d.kind == "bulge"],
    )


def _draw_scene(
    scene: _Scene, grid: _Grid, defects: list[_Defect], state: _State
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Noise-free frame (float RGB), each defect's drawn pixels and what hides them (uint8)."""
    width, height, n = scene.width, scene.height, scene.n_turns
    rot = 2.0 * math.pi * state.lay
    img = scene.background.copy()
    _draw_flange(img, scene, scene.x0, rot, near=False)
    slots, body, s_top = _draw_drum(img, scene, grid, state, defects)

    masks: list[np.ndarray] = []
    shadow = np.zeros((height, width), np.float32)
    wires: list[tuple[np.ndarray, np.ndarray]] = []
    thick = scene.wire_px
    for index, defect in enumerate(defects):
        drawn = np.zeros((height, width), np.uint8)
        if defect.kind == "gap" and index in slots:
            drawn[grid.rows, grid.cols] = slots[index]
        elif defect.kind == "bulge" and _bulge_height(defect, state, state.top) >= 0.3 * scene.d:
            centre = scene.s_of_u(defect.layer, defect.q)
            near = np.abs(s_top - centre) < _BULGE_REACH * defect.size * scene.d
            drawn[grid.rows, grid.cols] = near & body
        elif defect.kind in ("crossed_turn", "loose_loop"):
            (xs, ys), visible, (sx, sy), front = _defect_wire(scene, state, defect)
            for run in _runs(visible):
                wires.append((xs[run], ys[run]))
                _line(drawn, xs[run], ys[run], 1, thick + 2)
            if defect.kind == "loose_loop":  # its shadow on the turns right under it
                for run in _runs(visible & front):
                    _line(shadow, sx[run], sy[run], 1.0, thick + 1)
        masks.append(drawn)
    if shadow.any():
        img *= 1.0 - 0.5 * cv2.GaussianBlur(shadow, (0, 0), 1.0)[:, :, None]
    for xs, ys in wires:
        _draw_wire(img, xs, ys, thick, scene.copper)

    # Feed wire from the guide's pulley to the lay point on top of the drum; the guide runs
    # a little ahead of the lay point and eases to a stop at each flange.
    occ = np.zeros((height, width), np.uint8)
    u_lay = state.p_in + _shift(state.gaps, state.top, state.p_in)
    s_lay = float(np.clip(scene.s_of_u(state.top, u_lay), 0.5 * scene.d, (n - 0.5) * scene.d))
    bump = float(_Bumps.of(scene, state, state.top)(np.array([s_lay], np.float32))[0][0])
    x_lay = scene.x0 + s_lay * scene.cos_a
    y_lay = scene.cy - scene.outer(state.top) - bump + 0.5 * scene.d
    ease = min(math.tanh((n - state.p_in) / 1.5), math.tanh((state.p_in + 0.5) / 1.5))
    lead = scene.direction(state.top) * scene.lead * ease
    x_pulley = float(np.clip(x_lay + lead, *scene.rail))
    feed_x = np.array([x_pulley - 0.2 * scene.pulley_r, x_lay])
    feed_y = np.array([scene.pulley_y + 0.9 * scene.pulley_r, y_lay])
    _draw_wire(img, feed_x, feed_y, thick, scene.copper)
    _line(occ, feed_x, feed_y, 1, thick + 2)

    right = scene.x0 + (n * scene.d + scene.flange_t) * scene.cos_a
    _draw_flange(img, scene, right, rot, near=True)
    r, sa = scene.flange_r, scene.sin_a
    _ellipse(occ, right - scene.flange_t * scene.cos_a, scene.cy, r * sa + 1, r + 1, 1)
    _ellipse(occ, right, scene.cy, r * sa + 1, r + 1, 1)
    img = img * (1.0 - scene.overlay_alpha) + scene.overlay * scene.overlay_alpha
    occ |= (scene.overlay_alpha[:, :, 0] > 0.5).astype(np.uint8)
    _draw_guide(img, occ, scene, x_pulley, rot * scene.outer(state.top) / scene.pulley_r)
    return img, masks, occ


def _camera(scene: _Scene, img: np.ndarray, t: int, noise_rng: np.random.Generator) -> np.ndarray:
    """Light falloff, mains flicker, lens blur and sensor noise; uint8 RGB out."""
    amp, freq, phase = scene.flicker
    img = img * scene.gain * (1.0 + amp * math.sin(2 * math.pi * freq * t + phase))
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), scene.blur)
    shape = (scene.height, scene.width)
    luma = noise_rng.standard_normal((*shape, 1), dtype=np.float32)
    chroma = noise_rng.standard_normal((*shape, 3), dtype=np.float32)
    img += scene.noise * (0.8 * luma + 0.5 * chroma) * np.sqrt(np.clip(img, 0.02, 1.0) + 0.1)
    out = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out[:, ::-1] if scene.flip else out)


def _boxes(
    scene: _Scene, defects: list[_Defect], masks: list[np.ndarray], occ: np.ndarray
) -> list[YoloBox]:
    """A box per defect with enough of it in view (not hidden by the flange or the guide)."""
    width, height = scene.width, scene.height
    min_core = max(8, _MIN_CORE_PIXELS * width * height // (320 * 240))
    boxes = []
    for defect, drawn in zip(defects, masks, strict=True):
        visible = drawn & (occ == 0).astype(np.uint8)
        if int(cv2.erode(visible, _CORE_KERNEL).sum()) < min_core:
            continue
        box = _bbox(
            np.ascontiguousarray(visible[:, ::-1]) if scene.flip else visible, width, height
        )
        if box is not None:
            boxes.append(YoloBox.from_xyxy(defect.class_id, *box, width, height))
    return boxes


def render_winding_video(
    rng: np.random.Generator,
    width: int,
    height: int,
    n_frames: int,
    defects: Sequence[str],
    names: Sequence[str] = WINDING_CLASSES,
) -> tuple[list[np.ndarray], list[list[YoloBox]]]:
    """Render ``n_frames`` uint8 RGB frames of one coil being wound, and each frame's boxes.

    ``defects`` lists defect kinds (names from ``WINDING_CLASSES``); a box's class id is the
    kind's index in ``names``. Scene, defects and sensor noise draw from separate child streams
    of ``rng``, so the same ``rng`` state with and without a defect gives the same video apart
    from that defect (and, for a gap, the turns after it and the guide). A defect appears when
    the lay point makes it and is boxed in every frame where enough of it is in view (not
    turned away, buried under the next layer, or hidden by a flange or the guide); one that
    cannot be placed is dropped, so a video may come back with fewer defects than asked for.
    """
    check_size(width, height, MIN_WIDTH, MIN_HEIGHT)
    if isinstance(n_frames, bool) or not isinstance(n_frames, int) or n_frames < 1:
        raise ValueError(f"n_frames must be an integer >= 1, got {n_frames!r}")
    for kind in defects:
        if kind not in WINDING_CLASSES:
            raise ValueError(f"unknown winding defect {kind!r}; known: {list(WINDING_CLASSES)}")
        if kind not in names:
            raise ValueError(f"defect {kind!r} is not in names {list(names)}")
    scene_rng, defect_rng, noise_rng = rng.spawn(3)
    scene = _make_scene(scene_rng, width, height, n_frames)
    placed = _place_defects(defect_rng, scene, n_frames, defects, list(names))
    grid = _grid(scene)
    frames, labels = [], []
    for t in range(n_frames):
        img, masks, occ = _draw_scene(scene, grid, placed, _state(scene, placed, t))
        labels.append(_boxes(scene, placed, masks, occ))
        frames.append(_camera(scene, img, t, noise_rng))
    return frames, labels


# --------------------------------------------------------------------------- dataset


def _cut_frames(
    video: Path, labels: list[list[YoloBox]], every_k: int, images_dir: Path, labels_dir: Path
) -> list[int]:
    """Decode every ``every_k``-th frame of ``video`` to PNG next to the generator's labels."""
    cut = []
    for index, frame in iter_frames(video, every_k=every_k):
        if index >= len(labels):
            raise RuntimeError(f"{video}: decoded more frames than the {len(labels)} written")
        stem = f"{video.stem}_{index:05d}"
        image_path = images_dir / f"{stem}.png"
        if not cv2.imwrite(str(image_path), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {image_path}")
        write_yolo_labels(labels_dir / f"{stem}.txt", labels[index])
        cut.append(index)
    expected = list(range(0, len(labels), every_k))
    if cut != expected:
        raise RuntimeError(f"{video}: decoded frames {cut}, expected {expected}")
    return cut


def _make_video(
    job: tuple[np.random.Generator, list[str], Path],
    names: list[str],
    size: tuple[int, int],
    n_frames: int,
    fps: float,
    every_k: int,
) -> tuple[Path, list[list[YoloBox]], list[int]]:
    """Render one video, write its mp4, cut frames from the decoded file (one worker's job)."""
    child, kinds, video_path = job
    frames, labels = render_winding_video(child, *size, n_frames, kinds, names)
    write_video(video_path, frames, fps)
    del frames  # the images come from the decoded video, as a user would cut them
    split_dir = video_path.parents[2] / video_path.parent.name
    cut = _cut_frames(video_path, labels, every_k, split_dir / "images", split_dir / "labels")
    return video_path, labels, cut


def _gif_bytes(video: Path, labels: list[list[YoloBox]], names: Sequence[str], fps: float) -> bytes:
    """Animated GIF of up to 40 frames of ``video`` at half size (>= 160 px wide), boxed."""
    from matplotlib.colors import to_rgb
    from PIL import Image

    from defects.plots import COLORS

    step = max(1, math.ceil(len(labels) / 40))
    pictures = []
    for index, frame in iter_frames(video, every_k=step):
        height, width = frame.shape[:2]
        scale = min(1.0, max(0.5, 160 / width))
        size = (max(int(width * scale), 1), max(int(height * scale), 1))
        small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        for box in labels[index]:
            colour = tuple(int(255 * c) for c in to_rgb(COLORS[box.class_id % len(COLORS)]))
            x1, y1, x2, y2 = (int(round(v)) for v in box.to_xyxy(*size))
            cv2.rectangle(small, (x1, y1), (x2 - 1, y2 - 1), colour, 1)
            where = (x1, max(y1 - 2, 8))
            font = cv2.FONT_HERSHEY_PLAIN
            cv2.putText(small, names[box.class_id], where, font, 0.7, colour, 1, cv2.LINE_AA)
        pictures.append(Image.fromarray(small))
    buffer = io.BytesIO()
    pictures[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=pictures[1:],
        duration=int(round(1000 * step / fps)),
        loop=0,
    )
    return buffer.getvalue()


def _check_args(frames_per_video: int, every_k: int, fps: float) -> None:
    for key, value in (("frames_per_video", frames_per_video), ("every_k", every_k)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be an integer >= 1, got {value!r}")
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not 0 < fps < math.inf:
        raise ValueError(f"fps must be a positive number, got {fps!r}")


def _deal_classes(
    plan: list[tuple[np.random.Generator, list[int]]],
    weights: np.ndarray,
    rng: np.random.Generator,
) -> list[tuple[np.random.Generator, list[int]]]:
    """Keep each video's defect count, but deal the classes like cards from a shuffled deck
    of every class with a weight: a split of a few videos then shows every class (random
    draws left a class out of a whole split), and the weights still set the mix."""
    slots = sum(len(classes) for _, classes in plan)
    present = np.flatnonzero(weights > 0)
    deck: list[int] = []
    while len(deck) < slots:
        extra = rng.choice(len(weights), size=len(present), p=weights)
        deck += [int(j) for j in rng.permutation(present)] + [int(j) for j in extra]
    dealt, at = [], 0
    for child, classes in plan:
        dealt.append((child, deck[at : at + len(classes)]))
        at += len(classes)
    return dealt


def generate_winding_dataset(
    out_dir: str | Path,
    n_train: int = 6,
    n_valid: int = 2,
    n_test: int = 2,
    frames_per_video: int = 60,
    every_k: int = 3,
    fps: float = 10,
    width: int = 320,
    height: int = 240,
    class_names: Sequence[str] = WINDING_CLASSES,
    class_weights: Sequence[float] | None = None,
    defect_free_fraction: float = 0.15,
    max_defects: int = 2,
    seed: int = 0,
    preview_gif: str | Path | None = None,
) -> dict:
    """Write winding videos and frames cut from them, in the YOLO layout, atomically.

    Layout: ``videos/{split}/wNNN.mp4`` (whole clips), ``{split}/images/wNNN_FFFFF.png``
    (every ``every_k``-th frame decoded back from the mp4, so the images are what a user
    cutting the video gets), ``{split}/labels/wNNN_FFFFF.txt`` (the generator's boxes for that
    frame, empty when none) and ``data.yaml``. Splits are by video (ids run on across splits)
    and sizes count videos; ``defect_free_fraction`` of each split's videos get no defects.
    Each split draws from ``np.random.default_rng([seed, split_index])``. ``preview_gif``: also
    write an animated GIF of the first train video with defects (else the first video), boxes
    drawn. Returns counts of videos, frames and boxes per split/class, and defect-free videos.
    """
    names = check_class_names(class_names, WINDING_CLASSES)
    weights = normalized_weights(names, class_weights)
    counts = check_split_args(n_train, n_valid, n_test, defect_free_fraction, max_defects)
    check_size(width, height, MIN_WIDTH, MIN_HEIGHT)
    _check_args(frames_per_video, every_k, fps)
    if preview_gif is not None and sum(counts.values()) == 0:
        raise ValueError("preview_gif needs at least one video, but every split is empty")

    summary: dict = {
        "videos": dict(counts),
        "frames": {split: 0 for split in SPLITS},
        "boxes": {n: 0 for n in names},
        "defect_free": 0,
        "seed": seed,
    }
    make = partial(
        _make_video,
        names=names,
        size=(width, height),
        n_frames=frames_per_video,
        fps=fps,
        every_k=every_k,
    )
    gif_source: tuple[Path, list[list[YoloBox]]] | None = None
    gif_found = False
    gif: bytes | None = None
    # As in weld: split-level choices come from the split RNG and each video has its own
    # child, so two threads can render and encode videos and the output stays byte-identical.
    folders = ("videos/{split}", "{split}/images", "{split}/labels")
    with split_writer(out_dir, counts, folders) as writer:
        first_id = 0
        for split in writer.splits():
            plan = _deal_classes(
                plan_split(
                    seed, split.index, split.count, defect_free_fraction, max_defects, weights
                ),
                weights,
                np.random.default_rng([seed, split.index, 1]),
            )
            jobs = [
                (
                    child,
                    [names[j] for j in classes],
                    writer.root / "videos" / split.name / f"w{first_id + i:03d}.mp4",
                )
                for i, (child, classes) in enumerate(plan)
            ]
            first_id += len(plan)
            # re-raises the first failure
            for video, labels, cut in writer.map(make, jobs, unit="video"):
                summary["frames"][split.name] += len(cut)
                summary["defect_free"] += not any(labels)
                for index in cut:
                    for box in labels[index]:
                        summary["boxes"][names[box.class_id]] += 1
                # GIF: the first train video with defects, else the first video at all.
                wanted = split.name == "train" and any(labels)
                if gif_source is None or (wanted and not gif_found):
                    gif_source, gif_found = (video, labels), wanted
        write_class_names(writer.root / "data.yaml", names)
        if preview_gif is not None and gif_source is not None:
            gif = _gif_bytes(gif_source[0], gif_source[1], names, fps)
    if preview_gif is not None and gif is not None:
        atomic_write_bytes(preview_gif, gif)
        summary["preview_gif"] = str(preview_gif)
    return summary
