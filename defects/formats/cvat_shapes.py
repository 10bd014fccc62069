"""CVAT's non-box shapes as boxes, and the count of everything a YOLO file cannot hold.

A "box" task in CVAT still lets annotators pick any tool, so real exports mix shapes. The rule
(`shape_corners`), applied to every shape of an image or a track:

- box: as is; a rotated box becomes the axis-aligned box around it;
- polygon, polyline, points, cuboid (both faces) and skeleton (its visible points): the
  bounding box of their points;
- ellipse: the bounding box of the (rotated) ellipse;
- mask: the bounding box of its painted pixels;
- tag: an image-level label with no place in a YOLO file: skipped and counted;
- a shape whose bounding box has no area (one point, a straight horizontal line, an empty
  mask) is skipped and counted.

Attributes (`<attribute>`), a non-zero `z_order` and `group_id` have no YOLO equivalent either:
they are dropped and counted. `ShapeReport.summary()` is the one line the converters log.
A shape whose geometry cannot be read (a point `1,x`, an RLE that does not fill its mask) is a
FormatError, like a broken box: CVAT never writes one, so the file is damaged.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field

from defects.formats.xml_lines import finite_number

__all__ = ["CONVERTED", "SKIPPED", "ShapeReport", "shape_corners"]

Corners = tuple[float, float, float, float]

# Shapes turned into their bounding box, and shapes that are never boxes.
CONVERTED = ("polygon", "polyline", "points", "ellipse", "mask", "cuboid", "skeleton")
SKIPPED = ("tag",)
_CUBOID = tuple(f"{axis}{corner}{face}" for face in "12" for corner in ("tl", "bl", "tr", "br")
                for axis in "xy")  # fmt: skip


@dataclass
class ShapeReport:
    """What a CVAT import converted, skipped and dropped, counted for the one summary line."""

    converted: Counter[str] = field(default_factory=Counter)  # shape tag -> boxes made
    skipped: Counter[str] = field(default_factory=Counter)  # "tag (image-level)" -> n
    attributes: Counter[str] = field(default_factory=Counter)  # attribute name -> values dropped
    z_order: int = 0  # shapes with a non-zero z_order
    groups: int = 0  # shapes in a group

    def note_dropped(self, element: ET.Element) -> None:
        """Count what of `element` (a shape) the YOLO box cannot keep."""
        for attribute in element.findall("attribute"):
            self.attributes[attribute.get("name") or "?"] += 1
        if (element.get("z_order") or "0").strip() not in ("0", ""):
            self.z_order += 1
        if element.get("group_id"):
            self.groups += 1

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly counts for the converters' return value."""
        return {
            "converted": dict(self.converted),
            "skipped": dict(self.skipped),
            "attributes_dropped": dict(self.attributes),
            "z_order_dropped": self.z_order,
            "groups_dropped": self.groups,
        }

    def summary(self) -> str:
        """One line, or "" when every shape was a plain box with nothing dropped."""
        parts = []
        if self.converted:
            parts.append("converted to boxes: " + _counts(self.converted))
        if self.skipped:
            parts.append("skipped: " + _counts(self.skipped))
        dropped = []
        if self.attributes:
            total = sum(self.attributes.values())
            dropped.append(f"{total} attribute value(s) ({_counts(self.attributes)})")
        if self.z_order:
            dropped.append(f"z_order of {self.z_order} shape(s)")
        if self.groups:
            dropped.append(f"group_id of {self.groups} shape(s)")
        if dropped:
            parts.append("dropped (no YOLO equivalent): " + ", ".join(dropped))
        return "; ".join(parts)


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{n} {key}" for key, n in sorted(counter.items()))


def _number(element: ET.Element, key: str) -> float:
    text = (element.get(key) or "").strip()
    if not text:
        raise ValueError(f"missing attribute '{key}'")
    value = finite_number(text)
    if value is None:
        raise ValueError(f"'{key}' is not a finite number: {text!r}")
    return value


def _points(text: str) -> list[tuple[float, float]]:
    """CVAT's `x0,y0;x1,y1;...`."""
    points = []
    for pair in text.strip().split(";"):
        xy = [finite_number(v) for v in pair.split(",")]
        if len(xy) != 2 or xy[0] is None or xy[1] is None:
            raise ValueError(f"point {pair!r} is not 'x,y' finite numbers")
        points.append((xy[0], xy[1]))
    return points


def _bounds(points: list[tuple[float, float]]) -> Corners:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return min(xs), min(ys), max(xs), max(ys)


def _rotated(x1: float, y1: float, x2: float, y2: float, degrees: float) -> Corners:
    """The axis-aligned box around a box rotated by `degrees` about its centre."""
    cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
    c, s = abs(math.cos(math.radians(degrees))), abs(math.sin(math.radians(degrees)))
    ex, ey = hw * c + hh * s, hw * s + hh * c
    return cx - ex, cy - ey, cx + ex, cy + ey


def _ellipse(element: ET.Element) -> Corners:
    cx, cy = _number(element, "cx"), _number(element, "cy")
    rx, ry = abs(_number(element, "rx")), abs(_number(element, "ry"))
    t = math.radians(_number(element, "rotation")) if element.get("rotation") else 0.0
    ex = math.hypot(rx * math.cos(t), ry * math.sin(t))
    ey = math.hypot(rx * math.sin(t), ry * math.cos(t))
    return cx - ex, cy - ey, cx + ex, cy + ey


def _mask(element: ET.Element) -> Corners | None:
    """Tight box of a CVAT mask: `rle` counts background, foreground, ... row by row over the
    `width` x `height` patch at (`left`, `top`)."""
    left, top = _number(element, "left"), _number(element, "top")
    width, height = _number(element, "width"), _number(element, "height")
    if not (width.is_integer() and height.is_integer() and width >= 1 and height >= 1):
        raise ValueError(f"mask size must be positive integers, got {width:g}x{height:g}")
    try:
        runs = [int(v) for v in (element.get("rle") or "").replace(",", " ").split()]
    except ValueError:
        raise ValueError("'rle' is not a list of integers") from None
    if any(r < 0 for r in runs) or sum(runs) != width * height:
        raise ValueError(f"'rle' does not cover the {width:g}x{height:g} mask exactly")
    w = int(width)
    rows: list[int] = []
    cols: list[int] = []
    start = 0
    for index, run in enumerate(runs):
        if index % 2 and run:  # a foreground run: its first and last pixel bound the box
            for pixel in (start, start + run - 1):
                rows.append(pixel // w)
            first_row, last_row = start // w, (start + run - 1) // w
            cols.extend([start % w, (start + run - 1) % w] if first_row == last_row else [0, w - 1])
        start += run
    if not rows:
        return None
    return left + min(cols), top + min(rows), left + max(cols) + 1, top + max(rows) + 1


def shape_corners(element: ET.Element) -> Corners | None:
    """(xtl, ytl, xbr, ybr) of any CVAT shape by the module's rule; None for a shape without
    a box (a tag, or a bounding box of no area). ValueError(reason) for unreadable geometry."""
    tag = element.tag
    if tag in SKIPPED:
        return None
    if tag == "box":
        x1, y1, x2, y2 = (_number(element, k) for k in ("xtl", "ytl", "xbr", "ybr"))
        if element.get("rotation") and _number(element, "rotation") % 360:
            x1, y1, x2, y2 = _rotated(x1, y1, x2, y2, _number(element, "rotation"))
        corners: Corners | None = (x1, y1, x2, y2)
    elif tag in ("polygon", "polyline", "points"):
        corners = _bounds(_points(element.get("points") or ""))
    elif tag == "ellipse":
        corners = _ellipse(element)
    elif tag == "cuboid":
        values = [_number(element, key) for key in _CUBOID]
        corners = _bounds(list(zip(values[0::2], values[1::2], strict=True)))
    elif tag == "mask":
        corners = _mask(element)
    elif tag == "skeleton":
        visible = [
            p
            for child in element.findall("points")
            if (child.get("outside") or "0").strip() not in ("1", "true")
            for p in _points(child.get("points") or "")
        ]
        corners = _bounds(visible) if visible else None
    else:
        raise ValueError(f"unknown shape <{tag}>")
    if corners is None or corners[2] <= corners[0] or corners[3] <= corners[1]:
        return None
    return corners
