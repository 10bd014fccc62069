"""YOLO (Ultralytics) label files and data.yaml class lists.

One text file per image, one `class cx cy w h` line per box, coordinates normalized to [0, 1].
A missing or empty label file means a defect-free image, which is normal in inspection data.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from defects.formats.errors import FormatError, SkipReport, first_few, handle, note_clipped
from defects.formats.io import atomic_write_text

__all__ = [
    "CLIP_TOLERANCE",
    "IMPORT_CLIP_TOLERANCE",
    "PIXEL_EDGE_TOL",
    "pixel_overshoot",
    "NumberedBox",
    "YoloBox",
    "parse_yolo_line",
    "read_numbered_labels",
    "read_yolo_labels",
    "write_yolo_labels",
    "read_class_names",
    "write_class_names",
]

# Slack for boxes touching the border: 6-decimal rounding in to_line() moves cx±w/2 by < 1e-6.
_EDGE_TOL = 1e-6
# Overshoot past the border (normalised) that the reader clips, with a counted warning, instead
# of rejecting the line: annotation tools write e.g. 1.0004 for a box that touches the edge.
CLIP_TOLERANCE = 1e-3
# What importers of other tools' exports clip instead (with the same counted warning): boxes
# drawn partly past the border, e.g. Datumaro's YOLO export writing w = 1.05. Further out than
# half the image is no drawing slip but a broken file (pixel coordinates, say): still an error.
IMPORT_CLIP_TOLERANCE = 0.5
# Overshoot in pixels below which importers clipping pixel boxes do not count it: float noise.
PIXEL_EDGE_TOL = 1e-6
# Smallest normalized size that survives the 6-decimal text format without rounding to zero.
_MIN_SIZE = 1e-6
_FIELDS = ("cx", "cy", "w", "h")


@dataclass(frozen=True)
class YoloBox:
    """One normalized box; frozen so it can be hashed, compared and shared safely."""

    class_id: int
    cx: float
    cy: float
    w: float
    h: float

    def to_xyxy(self, width: int, height: int) -> tuple[float, float, float, float]:
        """Pixel corners (x1, y1, x2, y2) for an image of the given size."""
        return (
            (self.cx - self.w / 2) * width,
            (self.cy - self.h / 2) * height,
            (self.cx + self.w / 2) * width,
            (self.cy + self.h / 2) * height,
        )

    @classmethod
    def from_xyxy(
        cls,
        class_id: int,
        x1: float,
        y1: float,
        x2: float,
        y2: float,
        width: int,
        height: int,
    ) -> YoloBox:
        """Normalize pixel corners, clipping to the image; ValueError if nothing is left.

        Annotation tools routinely draw a pixel or two past the border, so clipping is the
        useful default; a box that is empty (or inverted) after clipping is a real error.
        """
        if isinstance(class_id, bool) or not isinstance(class_id, int) or class_id < 0:
            raise ValueError(f"class id must be a non-negative integer, got {class_id!r}")
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        coords = (x1, y1, x2, y2)
        if not all(math.isfinite(c) for c in coords):
            raise ValueError(f"box coordinates must be finite, got {coords}")
        cx1, cx2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
        cy1, cy2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
        w = (cx2 - cx1) / width
        h = (cy2 - cy1) / height
        if w < _MIN_SIZE or h < _MIN_SIZE:
            raise ValueError(
                f"box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) has zero area after clipping to "
                f"{width}x{height}"
            )
        return cls(
            class_id,
            (cx1 + cx2) / 2 / width,
            (cy1 + cy2) / 2 / height,
            w,
            h,
        )

    def to_line(self) -> str:
        """Label-file line with 6 decimals, the precision Ultralytics itself writes."""
        return f"{self.class_id} {self.cx:.6f} {self.cy:.6f} {self.w:.6f} {self.h:.6f}"


def pixel_overshoot(x1: float, y1: float, x2: float, y2: float, width: int, height: int) -> float:
    """How far, in pixels, corners run past a `width` x `height` image; 0.0 when inside.

    `YoloBox.from_xyxy` clips such boxes; importers use this to count and report them.
    """
    return max(-x1, -y1, x2 - width, y2 - height, 0.0)


@dataclass(frozen=True)
class NumberedBox(YoloBox):
    """A box as read from a label file and its 1-based line there.

    Tools that judge boxes (a cleaner, a linter) must point at the line they judged; the line
    travels with the box so a rule never has to carry it alongside. Never equal to a plain
    YoloBox (dataclass equality compares classes too).
    """

    line: int


def _parse_class_id(token: str, num_classes: int | None) -> int:
    """Accept '3' and the unambiguous '3.0'; reject '1.5', negatives and out-of-range ids."""
    try:
        class_id = int(token)
    except ValueError:
        try:
            value = float(token)
        except ValueError:
            raise ValueError(f"class id is not a number: {token!r}") from None
        if not (math.isfinite(value) and value.is_integer()):
            raise ValueError(f"class id must be an integer, got {token!r}") from None
        class_id = int(value)
    if class_id < 0:
        raise ValueError(f"class id must be >= 0, got {class_id}")
    if num_classes is not None and class_id >= num_classes:
        raise ValueError(
            f"class id {class_id} out of range for {num_classes} classes (0..{num_classes - 1})"
        )
    return class_id


def _parse_fields(
    text: str, num_classes: int | None, tolerance: float | None
) -> tuple[int, float, float, float, float]:
    """Class id and cx, cy, w, h of one line; ValueError at the first bad field.

    Each number must lie in [-tolerance, 1 + tolerance]; `tolerance=None` checks syntax only
    (five fields, a valid class id, finite numbers) and leaves geometry to the caller.
    """
    tokens = text.split()
    if len(tokens) != 5:
        raise ValueError(f"expected 5 fields (class cx cy w h), got {len(tokens)}")
    class_id = _parse_class_id(tokens[0], num_classes)
    values: list[float] = []
    for name, token in zip(_FIELDS, tokens[1:], strict=True):
        try:
            value = float(token)
        except ValueError:
            raise ValueError(f"{name} is not a number: {token!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"{name} is not finite: {token!r}")
        if tolerance is not None and not -tolerance <= value <= 1.0 + tolerance:
            raise ValueError(f"{name}={value:g} is outside [0, 1]")
        values.append(value)
    cx, cy, w, h = values
    return class_id, cx, cy, w, h


def _six(value: float) -> float:
    """`value` at the label format's precision: exactly what `to_line` writes for it."""
    return float(f"{value:.6f}")


def _parse(text: str, num_classes: int | None, tolerance: float) -> tuple[YoloBox, float]:
    """The box of one line, clipped to [0, 1], and how far it overshot (0.0 if it fitted).

    An overshoot of at most `tolerance` (normalised) is clipped; more is a ValueError. Values
    come back at the format's 6 decimals (tools write more), checked as rounded: so whatever
    is read, the writer writes back digit for digit and reads again as the same box.
    """
    class_id, *values = _parse_fields(text, num_classes, tolerance)
    for name, size in (("w", values[2]), ("h", values[3])):
        if size <= 0:
            raise ValueError(f"{name} must be > 0, got {size:g}")
        if size < _MIN_SIZE:  # the 6-decimal format would write it back as 0
            raise ValueError(f"{name}={size:g} is below the format's precision ({_MIN_SIZE:g})")
    cx, cy, w, h = (_six(v) for v in values)
    overshoot = 0.0
    centre_size = []
    for axis, c, size in (("x", cx, w), ("y", cy, h)):
        lo, hi = c - size / 2, c + size / 2
        over = max(-lo, hi - 1.0, 0.0)
        if over > max(tolerance, _EDGE_TOL):
            raise ValueError(f"box extends outside the image: {axis} from {lo:g} to {hi:g}")
        if over > _EDGE_TOL:  # beyond what our own 6-decimal writer can cause: clip
            clo, chi = max(lo, 0.0), min(hi, 1.0)
            if chi - clo < _MIN_SIZE:
                raise ValueError(
                    f"box has no extent left after clipping to the image: {axis} from {lo:g} "
                    f"to {hi:g}"
                )
            c, size = _six((clo + chi) / 2), _six(chi - clo)  # overshoot <= 7.5e-7 < tol
            overshoot = max(overshoot, over)
        centre_size.append((c, size))
    (cx, w), (cy, h) = centre_size
    return YoloBox(class_id, cx, cy, w, h), overshoot


def parse_yolo_line(
    text: str, num_classes: int | None = None, clip_tolerance: float = CLIP_TOLERANCE
) -> YoloBox:
    """Parse and validate one `class cx cy w h` line; ValueError(reason) if anything is off.

    Validation is strict because a silently wrong box trains a detector on the wrong pixels.
    The one repair: a box overshooting the border by at most `clip_tolerance` (float rounding
    in annotation tools, e.g. 1.0004) is clipped to the image; `read_yolo_labels` counts those.
    """
    return _parse(text, num_classes, clip_tolerance)[0]


def _read_utf8(path: Path) -> str:
    """Decode a text file, turning a decode failure into a FormatError that names the file."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")  # tolerate the BOM some Windows editors add
    except UnicodeDecodeError as exc:
        raise FormatError(
            path, f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None


def _parse_unjudged(text: str, num_classes: int | None) -> tuple[YoloBox, float]:
    """The box of one line as written (syntax checked, geometry not), never clipped."""
    return YoloBox(*_parse_fields(text, num_classes, None)), 0.0


def _read_lines(
    path: str | os.PathLike[str],
    num_classes: int | None,
    strict: bool,
    report: SkipReport | None,
    check_geometry: bool,
    clip_tolerance: float = CLIP_TOLERANCE,
) -> list[tuple[int, YoloBox]]:
    """(1-based line, box) of every good line; the shared body of the two public readers."""
    label_path = Path(path)
    try:
        text = _read_utf8(label_path)
    except FileNotFoundError:
        return []
    except FormatError as err:
        handle(err, strict, report)
        return []
    parse = partial(_parse, tolerance=clip_tolerance) if check_geometry else _parse_unjudged
    boxes: list[tuple[int, YoloBox]] = []
    clipped: list[int] = []
    worst = 0.0
    # Split on "\n" only (not str.splitlines) so line numbers match what editors show.
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line:
            continue
        try:
            box, overshoot = parse(line, num_classes)
        except ValueError as exc:
            handle(FormatError(label_path, str(exc), line=lineno), strict, report)
            continue
        boxes.append((lineno, box))
        if overshoot:
            clipped.append(lineno)
            worst = max(worst, overshoot)
    if clipped:
        detail = f"overshoot up to {worst:.2g} (normalised), line(s) {first_few(clipped)}"
        note_clipped(label_path, len(clipped), detail, report)
    return boxes


def read_yolo_labels(
    path: str | os.PathLike[str],
    num_classes: int | None = None,
    strict: bool = True,
    report: SkipReport | None = None,
    clip_tolerance: float = CLIP_TOLERANCE,
) -> list[YoloBox]:
    """Read one label file; a missing or empty file is a defect-free image and gives [].

    A bad line raises FormatError(path, reason, line) when strict; otherwise it is recorded in
    `report` and skipped while good lines are kept. A non-UTF-8 file is handled the same way as
    a whole: when not strict it yields [], so check `report` before trusting that as defect-free.
    Boxes overshooting the border by at most CLIP_TOLERANCE are clipped, strict or not, with
    one warning per file and the count in `report.clipped`; a larger overshoot is a bad line.
    Importers of other tools' exports pass `clip_tolerance=IMPORT_CLIP_TOLERANCE`.
    """
    pairs = _read_lines(path, num_classes, strict, report, True, clip_tolerance)
    return [box for _, box in pairs]


def read_numbered_labels(
    path: str | os.PathLike[str],
    num_classes: int | None = None,
    strict: bool = True,
    report: SkipReport | None = None,
    check_geometry: bool = True,
) -> list[NumberedBox]:
    """`read_yolo_labels` that keeps each box's line, for tools that report on single lines.

    ``check_geometry=False`` checks the syntax only (five fields, a class id in range, finite
    numbers) and returns every such box exactly as written, even one of zero size or outside
    the image: for a cleaner whose rules judge geometry themselves and list what they drop.
    """
    pairs = _read_lines(path, num_classes, strict, report, check_geometry)
    return [NumberedBox(b.class_id, b.cx, b.cy, b.w, b.h, line) for line, b in pairs]


def write_yolo_labels(path: str | os.PathLike[str], boxes: Iterable[YoloBox]) -> None:
    """Write a label file atomically; refuses boxes the reader would reject, so files round-trip.

    An empty iterable writes an empty file (an explicitly defect-free image).
    """
    lines = []
    for index, box in enumerate(boxes):
        line = box.to_line()
        try:
            _parse(line, None, tolerance=0.0)  # write only what reads back unchanged
        except ValueError as exc:
            raise ValueError(f"{os.fspath(path)}: box {index} ({box}): {exc}") from None
        lines.append(line + "\n")
    atomic_write_text(path, "".join(lines))


def _check_names(names: list[Any], where: str) -> list[str]:
    """Class names must be distinct non-empty strings; returns the first problem as ValueError."""
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if not isinstance(name, str):
            # YAML turns unquoted `no`/`yes` into booleans and `010` into 8: make that visible.
            raise ValueError(
                f"{where}[{index}] is {name!r} ({type(name).__name__}), expected a string; "
                "quote it in YAML"
            )
        if not name.strip():
            raise ValueError(f"{where}[{index}] is empty")
        if name in seen:
            raise ValueError(f"{where}[{index}] {name!r} duplicates {where}[{seen[name]}]")
        seen[name] = index
    return list(names)


def read_class_names(path: str | os.PathLike[str]) -> list[str]:
    """Class names from an Ultralytics `data.yaml` (`names:` as a list or an {id: name} dict).

    Raises FormatError naming the file (and YAML line or key) for anything malformed, because
    a shifted class list silently relabels every box.
    """
    yaml_path = Path(path)
    text = _read_utf8(yaml_path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise FormatError(yaml_path, f"invalid YAML: {problem}", line=line) from None
    if not isinstance(data, dict):
        raise FormatError(yaml_path, f"expected a mapping at top level, got {type(data).__name__}")
    if "names" not in data:
        raise FormatError(yaml_path, "missing key 'names'")
    raw = data["names"]
    if isinstance(raw, dict):
        ids = list(raw)
        if any(isinstance(k, bool) or not isinstance(k, int) for k in ids):
            raise FormatError(yaml_path, f"'names' keys must be integer class ids, got {ids}")
        if sorted(ids) != list(range(len(ids))):
            raise FormatError(yaml_path, f"'names' ids must be exactly 0..{len(ids) - 1}: {ids}")
        names = [raw[i] for i in range(len(ids))]
    elif isinstance(raw, list):
        names = raw
    else:
        raise FormatError(yaml_path, f"'names' must be a list or a mapping, got {raw!r}")
    if not names:
        raise FormatError(yaml_path, "'names' is empty")
    try:
        checked = _check_names(names, "names")
    except ValueError as exc:
        raise FormatError(yaml_path, str(exc)) from None
    nc = data.get("nc")
    if nc is not None and (isinstance(nc, bool) or nc != len(checked)):
        raise FormatError(yaml_path, f"'nc' is {nc!r} but 'names' has {len(checked)} entries")
    return checked


def write_class_names(path: str | os.PathLike[str], names: list[str]) -> None:
    """Write `names: [...]` and `nc: N` atomically; names are YAML-quoted where needed."""
    if not names:
        raise ValueError("names is empty")
    checked = _check_names(list(names), "names")
    flow = yaml.safe_dump(
        checked, default_flow_style=True, allow_unicode=True, width=1 << 30
    ).strip()
    atomic_write_text(path, f"names: {flow}\nnc: {len(checked)}\n")
