"""CVAT annotation files: "CVAT for images 1.1", "CVAT for video 1.1" and the "YOLO 1.1" export.

Our own small reader/writer on the stdlib's ElementTree instead of datumaro: datumaro is heavy
(its own dataset model and many dependencies) and not in the lockfile, while the subset we need
(rectangles, labels, tracks with keyframes) is a few dozen lines. Other shapes become their
bounding box and tags are skipped, by the rule in `defects.formats.cvat_shapes`; what a YOLO
file cannot hold (tags, attributes, z_order, groups) is counted and logged in one line per file.
Boxes past the image border are clipped and counted (one warning per file).
Coordinates are written with 2 decimals as CVAT writes them, so a YOLO -> CVAT -> YOLO round
trip agrees to within 0.005 px and CVAT -> YOLO -> CVAT gives the same XML boxes for images up
to a few thousand pixels wide (YOLO's 6 normalised decimals are then finer than 0.005 px).
"""

from __future__ import annotations

import errno
import logging
import math
import os
import re
import shutil
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from defects.formats.cvat_shapes import CONVERTED, SKIPPED, ShapeReport, shape_corners
from defects.formats.errors import FormatError, SkipReport, first_few, note_clipped
from defects.formats.io import atomic_directory, atomic_write_text, staged_directory
from defects.formats.layout import is_image_file
from defects.formats.xml_lines import LinedXml, finite_number, parse_xml
from defects.formats.yolo import (
    IMPORT_CLIP_TOLERANCE,
    PIXEL_EDGE_TOL,
    YoloBox,
    pixel_overshoot,
    read_class_names,
    read_yolo_labels,
    write_class_names,
    write_yolo_labels,
)
from defects.progress import progress

__all__ = [
    "CvatBox",
    "CvatImage",
    "CvatImages",
    "CvatVideo",
    "CvatYoloExport",
    "YoloFrame",
    "write_cvat_images_xml",
    "read_cvat_images_xml",
    "yolo_to_cvat",
    "cvat_to_yolo",
    "read_cvat_yolo_export",
    "import_cvat_yolo_export",
    "read_cvat_video_xml",
    "cvat_video_to_yolo",
]

logger = logging.getLogger("defects")

_COORDS = ("xtl", "ytl", "xbr", "ybr")
_SHAPES = ("box", *CONVERTED, *SKIPPED)
# The most frames a video file may claim: each becomes a label file, so a corrupt <size> or
# frame number (10**18) must fail here instead of filling memory and the disk.
MAX_FRAMES = 1_000_000


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class CvatBox:
    """One rectangle in pixel corners as CVAT stores it; `line` is its line in the XML."""

    label: str
    class_id: int
    xtl: float
    ytl: float
    xbr: float
    ybr: float
    occluded: bool = False
    track_id: int | None = None
    line: int | None = field(default=None, compare=False)
    shape: str = field(default="box", compare=False)  # the CVAT shape it was made from

    def to_yolo(self, width: int, height: int) -> YoloBox:
        """Normalised box, clipped to the image (ValueError if nothing is left)."""
        return YoloBox.from_xyxy(
            self.class_id, self.xtl, self.ytl, self.xbr, self.ybr, width, height
        )


@dataclass
class CvatImage:
    """One <image> of a "CVAT for images" file."""

    id: int
    name: str
    width: int
    height: int
    boxes: list[CvatBox] = field(default_factory=list)
    line: int | None = field(default=None, compare=False)


@dataclass
class CvatImages:
    """A "CVAT for images 1.1" file: label names (class id = position) and its images."""

    class_names: list[str]
    images: list[CvatImage]
    shapes: ShapeReport = field(default_factory=ShapeReport)


@dataclass
class CvatVideo:
    """A "CVAT for video 1.1" file with its tracks expanded to boxes on every frame."""

    class_names: list[str]
    width: int
    height: int
    frame_count: int  # frames 0 .. frame_count - 1
    frames: dict[int, list[CvatBox]]
    shapes: ShapeReport = field(default_factory=ShapeReport)


@dataclass
class YoloFrame:
    """One frame of a CVAT "YOLO 1.1" export; `image` is None when exported without images."""

    subset: str
    name: str  # path inside obj_<subset>_data, e.g. frame_000001.jpg (or .txt without image)
    label_path: Path
    image: Path | None
    boxes: list[YoloBox]


@dataclass
class CvatYoloExport:
    """What a CVAT "YOLO 1.1" export holds: class names (obj.names) and its frames."""

    class_names: list[str]
    frames: list[YoloFrame]
    report: SkipReport = field(default_factory=SkipReport)  # boxes clipped to the image


# --------------------------------------------------------------------------- XML helpers


def _fmt(value: float) -> str:
    """CVAT's 2-decimal coordinate; never '-0.00'."""
    return f"{round(value, 2) + 0.0:.2f}"


def _labels_xml(parent: ET.Element, class_names: Sequence[str]) -> None:
    labels = ET.SubElement(parent, "labels")
    for name in class_names:
        label = ET.SubElement(labels, "label")
        ET.SubElement(label, "name").text = name
        ET.SubElement(label, "type").text = "rectangle"
        ET.SubElement(label, "attributes")


def _image_xml(
    root: ET.Element,
    index: int,
    name: str,
    width: int,
    height: int,
    boxes: Sequence[YoloBox],
    names: list[str],
    path: Path,
) -> None:
    """One <image> with its <box>es in pixels, 2 decimals, as CVAT writes them."""
    if width <= 0 or height <= 0:
        raise ValueError(f"{path}: image {name!r} has size {width}x{height}")
    attrs = {"id": str(index), "name": name, "width": str(width), "height": str(height)}
    element = ET.SubElement(root, "image", attrs)
    for k, box in enumerate(boxes):
        if not 0 <= box.class_id < len(names):
            raise ValueError(
                f"{path}: image {name!r} box {k}: class id {box.class_id} out of range "
                f"for {len(names)} class names"
            )
        box_attrs = {"label": names[box.class_id], "source": "manual", "occluded": "0"}
        corners = box.to_xyxy(width, height)
        box_attrs.update({key: _fmt(v) for key, v in zip(_COORDS, corners, strict=True)})
        box_attrs["z_order"] = "0"
        ET.SubElement(element, "box", box_attrs)


def write_cvat_images_xml(
    path: str | os.PathLike[str],
    images: Iterable[tuple[str, int, int, Sequence[YoloBox]]],
    class_names: Sequence[str],
) -> Path:
    """Write "CVAT for images 1.1" XML (atomically) for `(name, width, height, boxes)` items.

    `name` must be the image's name as the CVAT task knows it (usually the file name) so that
    "Upload annotations" attaches the boxes to the right image.
    """
    names = list(class_names)
    if not names:
        raise ValueError("class_names is empty")
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    task = ET.SubElement(ET.SubElement(root, "meta"), "task")
    items = list(images)
    ET.SubElement(task, "name").text = Path(path).stem
    ET.SubElement(task, "size").text = str(len(items))
    ET.SubElement(task, "mode").text = "annotation"
    _labels_xml(task, names)
    for index, (name, width, height, boxes) in enumerate(items):
        _image_xml(root, index, str(name), int(width), int(height), boxes, names, Path(path))
    ET.indent(root, space="  ")
    text = '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, "unicode") + "\n"
    atomic_write_text(path, text)
    return Path(path)


def _parse(path: Path) -> LinedXml:
    """The parsed file with element lines; a missing file or a non-CVAT root is a FormatError."""
    if not path.is_file():
        raise FormatError(path, "CVAT XML file not found")
    doc = parse_xml(path, "a CVAT annotation")
    if doc.root.tag != "annotations":
        raise FormatError(path, f"root element is <{doc.root.tag}>, expected <annotations>", 1)
    return doc


def _meta_labels(doc: LinedXml, path: Path) -> list[str]:
    """Label names in <meta> (task, job or project), in order; class id = position."""
    meta = doc.root.find("meta")
    names: list[str] = []
    if meta is not None:
        for labels in meta.iter("labels"):
            for label in labels.findall("label"):
                if (label.findtext("parent") or "").strip():
                    continue  # a point of a skeleton label, not a class of its own
                name = (label.findtext("name") or "").strip()
                if not name:
                    raise FormatError(path, "<label> without a <name>", doc.line(label))
                if name not in names:
                    names.append(name)
    if not names:
        raise FormatError(path, "no <meta> ... <labels><label><name> entries: no class names")
    return names


def _attr(doc: LinedXml, path: Path, element: ET.Element, key: str, where: str) -> str:
    value = element.get(key)
    if value is None or not value.strip():
        raise FormatError(path, f"{where}: missing attribute '{key}'", doc.line(element))
    return value.strip()


def _number(doc: LinedXml, path: Path, element: ET.Element, key: str, where: str) -> float:
    text = _attr(doc, path, element, key, where)
    value = finite_number(text)
    if value is None:
        raise FormatError(
            path, f"{where}: '{key}' is not a finite number: {text!r}", doc.line(element)
        )
    return value


def _integer(
    doc: LinedXml, path: Path, element: ET.Element, key: str, where: str, low: int = 0
) -> int:
    value = _number(doc, path, element, key, where)
    if not value.is_integer() or value < low:
        raise FormatError(
            path, f"{where}: '{key}' must be an integer >= {low}, got {value:g}", doc.line(element)
        )
    return int(value)


def _flag(doc: LinedXml, path: Path, element: ET.Element, key: str, where: str) -> bool:
    value = (element.get(key) or "0").strip().lower()
    if value not in ("0", "1", "true", "false"):
        raise FormatError(
            path, f"{where}: '{key}' must be 0 or 1, got {value!r}", doc.line(element)
        )
    return value in ("1", "true")


def _shape(
    doc: LinedXml,
    path: Path,
    element: ET.Element,
    names: list[str],
    where: str,
    report: ShapeReport,
    boxes_only: bool = False,
    label: str | None = None,
    track_id: int | None = None,
) -> CvatBox | None:
    """One shape as a box by the `cvat_shapes` rule, or None (counted in `report`) if it has none.

    Checked like a <box> always was: a known label and numeric coordinates; a <box> must have
    xbr > xtl and ybr > ytl (a rotated one becomes the box around it). `boxes_only` skips
    (and counts) every other shape instead of converting it.
    """
    tag = element.tag
    if tag in SKIPPED or (boxes_only and tag != "box"):
        report.skipped[f"{tag} ({'image-level' if tag in SKIPPED else 'boxes_only'})"] += 1
        return None
    label = label if label is not None else _attr(doc, path, element, "label", where)
    if label not in names:
        raise FormatError(
            path,
            f"{where}: unknown label {label!r} (labels: {', '.join(names)})",
            doc.line(element),
        )
    if tag == "box":
        xtl, ytl, xbr, ybr = (_number(doc, path, element, key, where) for key in _COORDS)
        if xbr <= xtl or ybr <= ytl:
            raise FormatError(
                path,
                f"{where}: empty or inverted box xtl={xtl:g} xbr={xbr:g} ytl={ytl:g} ybr={ybr:g}",
                doc.line(element),
            )
        if element.get("rotation") is not None:
            _number(doc, path, element, "rotation", where)
    try:
        corners = shape_corners(element)
    except ValueError as exc:
        raise FormatError(path, f"{where}: {exc}", doc.line(element)) from None
    if corners is None:
        report.skipped[f"{tag} (no area)"] += 1
        return None
    if tag != "box":
        report.converted[tag] += 1
    elif corners != (xtl, ytl, xbr, ybr):
        report.converted["rotated box"] += 1
    report.note_dropped(element)
    occluded = _flag(doc, path, element, "occluded", where)
    return CvatBox(
        label, names.index(label), *corners, occluded, track_id, doc.line(element), shape=tag
    )


def _log_shapes(path: Path, report: ShapeReport) -> None:
    """One line per file for what was converted, skipped or dropped (nothing when all boxes)."""
    summary = report.summary()
    if summary:
        logger.warning("%s: %s", path, summary)


@dataclass
class _Clipped:
    """Boxes clipped to the image while converting one file: one warning for all of them."""

    places: list[str] = field(default_factory=list)
    worst: float = 0.0

    def convert(self, path: Path, box: CvatBox, width: int, height: int, where: str) -> YoloBox:
        """`box` as YOLO (clipped to the image, counted here); FormatError if nothing is left."""
        try:
            yolo = box.to_yolo(width, height)
        except ValueError as exc:
            raise FormatError(path, f"{where}: {exc}", box.line) from None
        overshoot = pixel_overshoot(box.xtl, box.ytl, box.xbr, box.ybr, width, height)
        if overshoot > PIXEL_EDGE_TOL:
            self.places.append(where)
            self.worst = max(self.worst, overshoot)
        return yolo

    def note(self, path: Path) -> int:
        """Warn once for the file; the number of boxes clipped."""
        detail = f"overshoot up to {self.worst:.3g} px: {first_few(self.places)}"
        note_clipped(path, len(self.places), detail, None)
        return len(self.places)


# --------------------------------------------------------------------------- CVAT for images


def read_cvat_images_xml(path: str | os.PathLike[str], boxes_only: bool = False) -> CvatImages:
    """Read "CVAT for images 1.1"; every problem is a FormatError naming the image and shape.

    Shapes other than boxes become boxes by the `cvat_shapes` rule (`boxes_only` skips them);
    what was converted, skipped or dropped is in `.shapes` and logged in one line.
    """
    xml_path = Path(path)
    doc = _parse(xml_path)
    names = _meta_labels(doc, xml_path)
    report = ShapeReport()
    images: list[CvatImage] = []
    seen: dict[str, int] = {}
    for index, element in enumerate(doc.root.iter("image")):
        where = f"image[{index}]"
        name = _attr(doc, xml_path, element, "name", where)
        where = f"image {name!r}"
        if name in seen:
            raise FormatError(
                xml_path, f"{where} appears twice (also image[{seen[name]}])", doc.line(element)
            )
        seen[name] = index
        image = CvatImage(
            id=_integer(doc, xml_path, element, "id", where),
            name=name,
            width=_integer(doc, xml_path, element, "width", where, low=1),
            height=_integer(doc, xml_path, element, "height", where, low=1),
            line=doc.line(element),
        )
        per_tag: Counter[str] = Counter()
        for child in element:
            if child.tag not in _SHAPES:
                continue
            shape_where = f"{where} {child.tag} {per_tag[child.tag]}"
            per_tag[child.tag] += 1
            box = _shape(doc, xml_path, child, names, shape_where, report, boxes_only)
            if box is not None:
                image.boxes.append(box)
        images.append(image)
    _log_shapes(xml_path, report)
    return CvatImages(names, images, report)


def _label_path(xml_path: Path, image: CvatImage) -> PurePosixPath:
    """`sub/a.jpg` -> `sub/a.txt`; absolute names or `..` would write outside the folder."""
    rel = PurePosixPath(image.name.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or not rel.name:
        raise FormatError(
            xml_path, f"image {image.name!r}: unsafe name for a label file", image.line
        )
    return rel.with_suffix(".txt")


def cvat_to_yolo(
    xml: str | os.PathLike[str],
    out_labels_dir: str | os.PathLike[str],
    out_data_yaml: str | os.PathLike[str] | None = None,
    boxes_only: bool = False,
) -> dict:
    """Write one YOLO label file per <image> (empty = defect-free) and optionally data.yaml.

    The whole file is checked before anything is written; the labels appear together
    (`staged_directory`). Boxes past the border are clipped (one warning for the file).
    Returns {"images", "boxes", "clipped", "shapes" (ShapeReport.as_dict), "labels_dir",
    "data_yaml"}.
    """
    xml_path = Path(xml)
    parsed = read_cvat_images_xml(xml_path, boxes_only=boxes_only)
    clipped = _Clipped()
    planned: dict[PurePosixPath, tuple[str, list[YoloBox]]] = {}
    for image in parsed.images:
        rel = _label_path(xml_path, image)
        if rel in planned:
            raise FormatError(
                xml_path,
                f"images {planned[rel][0]!r} and {image.name!r} share the label file {rel}",
                image.line,
            )
        boxes = [
            clipped.convert(
                xml_path, box, image.width, image.height, f"image {image.name!r} box {k}"
            )
            for k, box in enumerate(image.boxes)
        ]
        planned[rel] = (image.name, boxes)
    with staged_directory(out_labels_dir) as tmp:
        for rel, (name, boxes) in planned.items():
            try:
                write_yolo_labels(tmp / rel, boxes)
            except OSError as exc:
                if exc.errno != errno.ENAMETOOLONG:
                    raise
                reason = f"image {name!r}: name too long for a label file on this disk"
                raise FormatError(xml_path, reason) from None
    if out_data_yaml is not None:
        write_class_names(out_data_yaml, parsed.class_names)
    return {
        "images": len(planned),
        "boxes": sum(len(b) for _, b in planned.values()),
        "clipped": clipped.note(xml_path),
        "shapes": parsed.shapes.as_dict(),
        "labels_dir": str(out_labels_dir),
        "data_yaml": None if out_data_yaml is None else str(out_data_yaml),
    }


def _resolve_names(
    class_names: Sequence[str] | str | os.PathLike[str] | None, near: Path
) -> list[str]:
    """A list as given, a data.yaml path, or the data.yaml of the split/dataset `near` is in."""
    if class_names is not None and not isinstance(class_names, (str, os.PathLike)):
        return [str(n) for n in class_names]
    if class_names is not None:
        return read_class_names(class_names)
    for folder in (near, *near.parents[:2]):
        if (folder / "data.yaml").is_file():
            return read_class_names(folder / "data.yaml")
    raise FileNotFoundError(f"{near}: no data.yaml here or above; give the class names")


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header, without decoding the pixels."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.size
    except Exception as exc:  # PIL raises many types for a foreign or damaged file
        raise FormatError(path, f"cannot read the image size ({exc})") from None


def yolo_to_cvat(
    source: str | os.PathLike[str],
    labels_dir: str | os.PathLike[str] | None,
    class_names: Sequence[str] | str | os.PathLike[str] | None,
    out_xml: str | os.PathLike[str],
) -> Path:
    """ "CVAT for images 1.1" XML of a YOLO split (`split/images`, `split/labels`) or images dir.

    `labels_dir` defaults to `split/labels` (or the `labels` sibling of an `images` folder);
    `class_names` (a list or a data.yaml) defaults to the data.yaml of the split or dataset.
    Image sizes come from the image files. Label files without an image are reported.
    """
    src = Path(source)
    images_dir = src / "images" if (src / "images").is_dir() else src
    if not images_dir.is_dir():
        raise FileNotFoundError(f"{src}: images folder not found")
    if labels_dir is None:
        if images_dir == src and src.name != "images":
            raise ValueError(f"{src}: give labels_dir (no split/images + split/labels layout)")
        labels_dir = images_dir.parent / "labels"
    labels = Path(labels_dir)
    names = _resolve_names(class_names, src)
    files = sorted(p for p in images_dir.iterdir() if is_image_file(p))
    items = []
    for image in files:
        width, height = _image_size(image)
        boxes = read_yolo_labels(labels / f"{image.stem}.txt", num_classes=len(names))
        items.append((image.name, width, height, boxes))
    stems = {p.stem for p in files}
    orphans = sorted(p.name for p in labels.glob("*.txt") if p.stem not in stems)
    if orphans:
        logger.warning(
            "%s: %d label file(s) without an image are not in the XML: %s",
            labels,
            len(orphans),
            ", ".join(orphans[:5]) + (", ..." if len(orphans) > 5 else ""),
        )
    return write_cvat_images_xml(out_xml, items, names)


# --------------------------------------------------------------------------- YOLO 1.1 export


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8-sig").split("\n")
    except UnicodeDecodeError:
        raise FormatError(path, "not UTF-8 text") from None


def _obj_names(path: Path) -> list[str]:
    """obj.names: one class per line; a blank line inside would shift every later class id."""
    lines = [line.strip() for line in _read_lines(path)]
    while lines and not lines[-1]:
        lines.pop()
    names: list[str] = []
    for lineno, name in enumerate(lines, start=1):
        if not name:
            raise FormatError(path, "empty class name", lineno)
        if name in names:
            raise FormatError(path, f"class {name!r} repeats line {names.index(name) + 1}", lineno)
        names.append(name)
    if not names:
        raise FormatError(path, "no class names")
    return names


def _check_obj_data(path: Path, names: list[str]) -> None:
    """obj.data's `classes = N` must match obj.names (a mismatch means a mixed-up export)."""
    if not path.is_file():
        return
    for lineno, line in enumerate(_read_lines(path), start=1):
        key, _, value = line.partition("=")
        if key.strip() != "classes":
            continue
        try:
            count = int(value.strip())
        except ValueError:
            raise FormatError(
                path, f"classes is not an integer: {value.strip()!r}", lineno
            ) from None
        if count != len(names):
            raise FormatError(path, f"classes = {count} but obj.names has {len(names)}", lineno)


def _listed_images(list_file: Path, subset_dir: Path) -> list[PurePosixPath]:
    """Paths inside obj_<subset>_data named by `<subset>.txt` (`data/obj_train_data/a.jpg`)."""
    if not list_file.is_file():
        return []
    marker = subset_dir.name
    rels = []
    for lineno, line in enumerate(_read_lines(list_file), start=1):
        entry = line.strip().replace("\\", "/")
        if not entry:
            continue
        parts = PurePosixPath(entry).parts
        if marker not in parts:
            raise FormatError(list_file, f"{entry!r} is not under {marker}/", lineno)
        rel = PurePosixPath(*parts[parts.index(marker) + 1 :])
        if not rel.parts or ".." in rel.parts:
            raise FormatError(list_file, f"{entry!r}: no file name after {marker}/", lineno)
        rels.append(rel)
    return rels


def _subset_frames(
    folder: Path, subset_dir: Path, names: list[str], report: SkipReport, clip: float
) -> list[YoloFrame]:
    subset = subset_dir.name[len("obj_") : -len("_data")]
    rels = _listed_images(folder / f"{subset}.txt", subset_dir)
    for image in sorted(subset_dir.rglob("*")):
        rel = PurePosixPath(image.relative_to(subset_dir).as_posix())
        if is_image_file(image) and rel not in rels:
            rels.append(rel)
    covered = {rel.with_suffix("") for rel in rels}
    for label in sorted(subset_dir.rglob("*.txt")):
        rel = PurePosixPath(label.relative_to(subset_dir).as_posix())
        if rel.with_suffix("") not in covered and not label.name.startswith("."):
            rels.append(rel)
    frames = []
    for rel in rels:
        label_path = subset_dir / rel.with_suffix(".txt")
        image = subset_dir / rel
        present = rel.suffix.lower() != ".txt" and image.is_file()
        boxes = read_yolo_labels(label_path, len(names), report=report, clip_tolerance=clip)
        frames.append(YoloFrame(subset, str(rel), label_path, image if present else None, boxes))
    return frames


def read_cvat_yolo_export(
    folder: str | os.PathLike[str], clip_tolerance: float = IMPORT_CLIP_TOLERANCE
) -> CvatYoloExport:
    """Read an unzipped CVAT "YOLO 1.1" export: obj.names, obj.data, <subset>.txt, obj_*_data/.

    Frames come from `<subset>.txt` plus any image or label file in `obj_<subset>_data`; a
    frame without a label file has no boxes (CVAT leaves out empty ones in some versions).
    Boxes drawn past the border (Datumaro writes e.g. w = 1.05) are clipped to the image by up
    to `clip_tolerance` (normalised), one warning per label file, counted in `.report.clipped`.
    """
    root = Path(folder)
    names_file = root / "obj.names"
    if not names_file.is_file():
        raise FormatError(root, "not a CVAT YOLO 1.1 export (obj.names missing)")
    names = _obj_names(names_file)
    _check_obj_data(root / "obj.data", names)
    subsets = sorted(p for p in root.glob("obj_*_data") if p.is_dir())
    if not subsets:
        raise FormatError(root, "not a CVAT YOLO 1.1 export (no obj_<subset>_data folder)")
    report = SkipReport()
    frames = [
        frame
        for subset in subsets
        for frame in _subset_frames(root, subset, names, report, clip_tolerance)
    ]
    return CvatYoloExport(names, frames, report)


def import_cvat_yolo_export(
    folder: str | os.PathLike[str], out_dir: str | os.PathLike[str]
) -> dict:
    """A CVAT "YOLO 1.1" export as our layout: out_dir/images, out_dir/labels, data.yaml.

    Images are copied (the export is only read); when the export has none (exported without
    "Save images") only labels and data.yaml are written, with a warning. `out_dir` is
    written whole or not at all and replaces an earlier one. Subsets are merged; two frames
    with the same path in different subsets are a FormatError. Boxes past the border are
    clipped (see `read_cvat_yolo_export`); the return value counts them under "clipped".
    """
    export = read_cvat_yolo_export(folder)
    src, out = Path(folder).resolve(), Path(out_dir).resolve()
    if out == src or src in out.parents or out in src.parents:
        raise ValueError(f"{out_dir}: out_dir must be outside the export folder {folder}")
    by_stem: dict[PurePosixPath, YoloFrame] = {}
    for frame in export.frames:
        key = PurePosixPath(frame.name).with_suffix("")
        if key in by_stem:
            other = by_stem[key]
            raise FormatError(
                frame.label_path, f"same frame as {other.subset}/{other.name} ({frame.subset})"
            )
        by_stem[key] = frame
    images = sum(frame.image is not None for frame in export.frames)
    if images == 0:
        logger.warning("%s: the export has no images; writing labels and data.yaml only", folder)
    with atomic_directory(out) as tmp:
        for key, frame in progress(by_stem.items(), "import CVAT YOLO", len(by_stem)):
            write_yolo_labels(tmp / "labels" / f"{key}.txt", frame.boxes)
            if frame.image is not None:
                target = tmp / "images" / frame.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(frame.image, target)
        write_class_names(tmp / "data.yaml", export.class_names)
    return {
        "frames": len(by_stem),
        "images": images,
        "boxes": sum(len(f.boxes) for f in export.frames),
        "clipped": export.report.clipped_count,
        "classes": export.class_names,
        "out_dir": str(out_dir),
    }


# --------------------------------------------------------------------------- CVAT for video


def _task_meta(doc: LinedXml, path: Path) -> ET.Element:
    meta = doc.root.find("meta")
    node = None if meta is None else meta.find("task")
    if node is None and meta is not None:
        node = meta.find("job")
    if node is None:
        raise FormatError(path, "missing <meta><task> (or <meta><job>)", doc.line(meta))
    return node


def _int_text(doc: LinedXml, path: Path, parent: ET.Element, tag: str, low: int = 0) -> int | None:
    child = parent.find(tag)
    if child is None or not (child.text or "").strip():
        return None
    text = child.text.strip()  # type: ignore[union-attr]
    if not re.fullmatch(r"-?[0-9]+", text) or int(text) < low:  # ASCII: "²".isdigit() is True
        raise FormatError(
            path, f"<{tag}> must be an integer >= {low}, got {text!r}", doc.line(child)
        )
    return int(text)


def _video_size(doc: LinedXml, path: Path, task: ET.Element) -> tuple[int, int]:
    size = task.find("original_size")
    if size is None:
        raise FormatError(path, "missing <original_size> (frame width and height)", doc.line(task))
    width = _int_text(doc, path, size, "width", low=1)
    height = _int_text(doc, path, size, "height", low=1)
    if width is None or height is None:
        raise FormatError(path, "<original_size> lacks <width> or <height>", doc.line(size))
    return width, height


def _last_frame(doc: LinedXml, path: Path, task: ET.Element) -> int | None:
    """The task's last frame: size - 1 for a task, stop_frame for a job (its frames are the
    task's); None when the file says neither."""
    size = _int_text(doc, path, task, "size")
    stop = _int_text(doc, path, task, "stop_frame")
    if task.tag == "job" and stop is not None:
        last = stop
    elif size is not None:
        last = size - 1
    elif stop is not None:
        last = stop - (_int_text(doc, path, task, "start_frame") or 0)
    else:
        return None
    if last >= MAX_FRAMES:
        raise FormatError(
            path, f"<{task.tag}> claims {last + 1} frames, more than {MAX_FRAMES}", doc.line(task)
        )
    return last


@dataclass(frozen=True)
class _Key:
    """One listed shape of a track: its frame, box and whether the object is outside there."""

    frame: int
    box: CvatBox
    outside: bool


def _track_keys(
    doc: LinedXml,
    path: Path,
    track: ET.Element,
    index: int,
    names: list[str],
    last: float,
    report: ShapeReport,
    boxes_only: bool,
) -> list[_Key]:
    """The track's listed shapes as boxes, by frame. A shape without a box (see `_shape`) is
    left out, unless it marks the object outside: then it holds the previous position."""
    where = f"track[{index}]"
    track_id = _integer(doc, path, track, "id", where) if track.get("id") else index
    where = f"track {track_id}"
    label = _attr(doc, path, track, "label", where)
    report.note_dropped(track)
    listed: dict[int, tuple[CvatBox | None, bool]] = {}
    seen: Counter[str] = Counter()
    for element in track:
        if element.tag not in _SHAPES:
            continue
        frame = _integer(doc, path, element, "frame", f"{where} {element.tag} {seen[element.tag]}")
        seen[element.tag] += 1
        box_where = f"{where} frame {frame}"
        if frame > min(last, MAX_FRAMES - 1):
            raise FormatError(
                path,
                f"{box_where}: beyond the task's last frame {min(last, MAX_FRAMES - 1):g}",
                doc.line(element),
            )
        if frame in listed:
            raise FormatError(path, f"{box_where}: two shapes on one frame", doc.line(element))
        outside = _flag(doc, path, element, "outside", box_where)
        box = _shape(doc, path, element, names, box_where, report, boxes_only, label, track_id)
        listed[frame] = (box, outside)
    keys: list[_Key] = []
    for frame in sorted(listed):
        box, outside = listed[frame]
        if box is None and outside and keys:
            box = keys[-1].box
        if box is not None:
            keys.append(_Key(frame, box, outside))
    return keys


def _between(a: CvatBox, b: CvatBox, t: float) -> CvatBox:
    xtl, ytl, xbr, ybr = (getattr(a, c) + (getattr(b, c) - getattr(a, c)) * t for c in _COORDS)
    return CvatBox(a.label, a.class_id, xtl, ytl, xbr, ybr, a.occluded, a.track_id, a.line, a.shape)


def _expand_track(keys: list[_Key], last: int) -> Iterator[tuple[int, CvatBox]]:
    """CVAT's interpolation: linear between listed shapes, hidden from an outside one to the
    next visible one, and held after the last one until the task's `last` frame."""
    for key, nxt in zip(keys, keys[1:], strict=False):
        if key.outside:
            continue
        span = nxt.frame - key.frame
        for frame in range(key.frame, nxt.frame):
            yield frame, _between(key.box, nxt.box, (frame - key.frame) / span)
    if keys and not keys[-1].outside:
        for frame in range(keys[-1].frame, last + 1):
            yield frame, keys[-1].box


def read_cvat_video_xml(path: str | os.PathLike[str], boxes_only: bool = False) -> CvatVideo:
    """Read "CVAT for video 1.1" and expand its tracks to per-frame boxes (see expand_track).

    Every listed shape is used, keyframe or not (CVAT writes interpolated frames with
    keyframe="0"), so files with only keyframes and files with every frame give the same.
    Other shapes than boxes become boxes by the `cvat_shapes` rule (`boxes_only` skips them)
    before interpolation, so a tracked polygon moves as its bounding box does between keys.
    Without <size> or <stop_frame> the video ends at the last listed frame.
    """
    xml_path = Path(path)
    doc = _parse(xml_path)
    names = _meta_labels(doc, xml_path)
    task = _task_meta(doc, xml_path)
    width, height = _video_size(doc, xml_path, task)
    known = _last_frame(doc, xml_path, task)
    limit = known if known is not None else math.inf
    report = ShapeReport()
    tracks = [
        _track_keys(doc, xml_path, track, index, names, limit, report, boxes_only)
        for index, track in enumerate(doc.root.findall("track"))
    ]
    tags = len(doc.root.findall("tag"))
    if tags:
        report.skipped["tag (image-level)"] += tags
    last = known if known is not None else max((k.frame for t in tracks for k in t), default=-1)
    frames: dict[int, list[CvatBox]] = {f: [] for f in range(last + 1)}
    for keys in tracks:
        for frame, box in _expand_track(keys, last):
            frames[frame].append(box)
    _log_shapes(xml_path, report)
    return CvatVideo(names, width, height, last + 1, frames, report)


def cvat_video_to_yolo(
    xml: str | os.PathLike[str],
    out_labels_dir: str | os.PathLike[str],
    name_pattern: str = "frame_{:06d}",
    out_data_yaml: str | os.PathLike[str] | None = None,
    boxes_only: bool = False,
) -> dict:
    """One YOLO label file per frame of the task (`name_pattern.format(frame)` + .txt; empty
    = nothing on that frame). Use `"<video stem>_{:06d}"` to match `extract_frames` names.
    Boxes past the border are clipped (one warning for the file). Returns {"frames", "boxes",
    "clipped", "shapes" (ShapeReport.as_dict), "labels_dir"}."""
    xml_path = Path(xml)
    video = read_cvat_video_xml(xml_path, boxes_only=boxes_only)
    clipped = _Clipped()
    planned: dict[str, list[YoloBox]] = {}
    for frame, boxes in video.frames.items():
        name = name_pattern.format(frame)
        planned[name] = [
            clipped.convert(
                xml_path, box, video.width, video.height, f"track {box.track_id} frame {frame}"
            )
            for box in boxes
        ]
    if len(planned) != len(video.frames):
        raise ValueError(f"name_pattern {name_pattern!r} gives the same name to several frames")
    with staged_directory(out_labels_dir) as tmp:
        for name, frame_boxes in planned.items():
            write_yolo_labels(tmp / f"{name}.txt", frame_boxes)
    if out_data_yaml is not None:
        write_class_names(out_data_yaml, video.class_names)
    return {
        "frames": len(planned),
        "boxes": sum(len(b) for b in planned.values()),
        "clipped": clipped.note(xml_path),
        "shapes": video.shapes.as_dict(),
        "labels_dir": str(out_labels_dir),
    }
