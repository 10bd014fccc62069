"""Pascal VOC XML annotations and import of VOC datasets (e.g. NEU-DET) into the YOLO layout."""

from __future__ import annotations

import logging
import math
import os
import random
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from defects.formats.errors import FormatError, SkipReport, first_few, handle, note_clipped
from defects.formats.io import atomic_directory
from defects.formats.layout import IMAGE_SUFFIXES, SPLITS
from defects.formats.xml_lines import LinedXml, finite_number, parse_xml
from defects.formats.yolo import (
    PIXEL_EDGE_TOL,
    YoloBox,
    pixel_overshoot,
    write_class_names,
    write_yolo_labels,
)
from defects.progress import progress

__all__ = ["VocObject", "VocAnnotation", "read_voc", "convert_voc_dataset"]

logger = logging.getLogger("defects")

# Boxes past the border are clipped, as they always were (tools draw a pixel or two past the
# edge, or overshoot by float rounding); past PIXEL_EDGE_TOL the clip is also counted, with one
# warning per XML file giving the largest overshoot. Below it is noise from the real/xml scaling.


@dataclass
class VocObject:
    """One labelled box in VOC pixel coordinates; `line` is its <object> line in the XML."""

    name: str
    x1: float
    y1: float
    x2: float
    y2: float
    line: int | None = field(default=None, compare=False)


@dataclass
class VocAnnotation:
    """One VOC XML file; width/height are what the XML claims, not necessarily the image."""

    filename: str
    width: int
    height: int
    objects: list[VocObject] = field(default_factory=list)


def _text(doc: LinedXml, path: Path, parent: ET.Element, tag: str, where: str) -> str:
    """Non-empty text of a required child element, or a FormatError naming it."""
    child = parent.find(tag)
    if child is None:
        raise FormatError(path, f"missing <{where}/{tag}>", line=doc.line(parent))
    text = (child.text or "").strip()
    if not text:
        raise FormatError(path, f"empty <{where}/{tag}>", line=doc.line(child))
    return text


def _number(doc: LinedXml, path: Path, parent: ET.Element, tag: str, where: str) -> float:
    """Finite number from a required child element, or a FormatError naming it."""
    text = _text(doc, path, parent, tag, where)
    value = finite_number(text)
    if value is None:
        raise FormatError(
            path,
            f"<{where}/{tag}> is not a finite number: {text!r}",
            line=doc.line(parent.find(tag)),
        )
    return value


def read_voc(path: str | os.PathLike[str]) -> VocAnnotation:
    """Read one VOC XML file; FormatError names the file, line and element for any problem.

    Boxes are checked for order (xmax > xmin, ymax > ymin) but not against the image size,
    because the XML size is often wrong; the converter clips against the real image instead.
    """
    xml_path = Path(path)
    doc = parse_xml(xml_path, "a VOC annotation")
    root = doc.root
    if root.tag != "annotation":
        raise FormatError(xml_path, f"root element is <{root.tag}>, expected <annotation>", line=1)
    size = root.find("size")
    if size is None:
        raise FormatError(xml_path, "missing <size>", line=doc.line(root))
    dims = []
    for tag in ("width", "height"):
        value = _number(doc, xml_path, size, tag, "size")
        if value <= 0 or not value.is_integer():
            raise FormatError(
                xml_path,
                f"<size/{tag}> must be a positive integer, got {value:g}",
                line=doc.line(size.find(tag)),
            )
        dims.append(int(value))
    objects = []
    for index, obj in enumerate(root.iter("object")):
        where = f"object[{index}]"
        name = _text(doc, xml_path, obj, "name", where)
        box = obj.find("bndbox")
        if box is None:
            raise FormatError(xml_path, f"missing <{where}/bndbox> ({name})", line=doc.line(obj))
        bw = f"{where}/bndbox"
        x1, y1, x2, y2 = (
            _number(doc, xml_path, box, t, bw) for t in ("xmin", "ymin", "xmax", "ymax")
        )
        if x2 <= x1 or y2 <= y1:
            raise FormatError(
                xml_path,
                f"<{bw}> of {name!r} is empty or inverted: "
                f"xmin={x1:g} xmax={x2:g} ymin={y1:g} ymax={y2:g}",
                line=doc.line(box),
            )
        objects.append(VocObject(name, x1, y1, x2, y2, line=doc.line(obj)))
    filename = (root.findtext("filename") or "").strip()
    return VocAnnotation(filename, dims[0], dims[1], objects)


def _split_counts(n: int, split: tuple[float, float, float]) -> list[int]:
    """Largest-remainder rounding: counts sum to n and a 0 fraction always gets 0 items."""
    exact = [n * p for p in split]
    counts = [math.floor(x) for x in exact]
    order = sorted(range(len(split)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def _check_split(split: tuple[float, float, float]) -> tuple[float, float, float]:
    if len(split) != 3 or not all(math.isfinite(p) and p >= 0 for p in split):
        raise ValueError(f"split must be 3 non-negative fractions, got {split!r}")
    if abs(sum(split) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {split!r} (sum {sum(split):g})")
    return (float(split[0]), float(split[1]), float(split[2]))


def _is_within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _list_files(directory: Path, suffixes: Collection[str]) -> list[Path]:
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes
    )


@dataclass
class _Item:
    stem: str
    image: Path
    boxes: list[YoloBox]


def convert_voc_dataset(
    images_dir: str | os.PathLike[str],
    annotations_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    class_names: list[str] | None = None,
    split: tuple[float, float, float] = (0.7, 0.2, 0.1),
    seed: int = 0,
    strict: bool = True,
) -> dict:
    """Import `images_dir/NAME.ext` + `annotations_dir/NAME.xml` into a YOLO dataset.

    Writes `out_dir/{train,valid,test}/{images,labels}/` and `out_dir/data.yaml`, all through
    `atomic_directory`, so a failure leaves any previous `out_dir` untouched; an existing
    `out_dir` is replaced on success. Images are copied byte-for-byte and never modified.

    - Pairs are matched by file stem (the XML <filename> is ignored: it is often stale).
    - Each image is fully decoded (`defects.data.images.open_image`), so a truncated image
      is caught here, and boxes are normalized against its real size; if the XML <size>
      disagrees, coordinates are scaled by real/xml first. Boxes past the border are clipped
      to the image, kept, and counted: one warning per XML file, total in the log summary.
    - `class_names` defaults to the sorted set of object names in the usable annotations.
    - Problems go through `handle()`: strict raises FormatError at the first one (before
      anything is written); otherwise they are counted and skipped. Skipped units are an
      unknown-class or degenerate object (the image is kept with its other boxes), and an
      unreadable XML, an XML without image, an image without XML or an unreadable image
      (the whole image is left out, not imported as defect-free).
    - The split shuffles the sorted stems with `random.Random(seed)`: deterministic per seed.

    Returns {"images": {"train": n, "valid": n, "test": n}, "boxes": n, "classes": names,
    "skipped": n, "clipped": n boxes clipped to their image}.
    """
    # Imported here: defects.data.images imports defects.formats, which imports this module.
    from defects.data.images import open_image

    fractions = _check_split(split)
    img_root, ann_root, out_root = Path(images_dir), Path(annotations_dir), Path(out_dir)
    for d in (img_root, ann_root):
        if not d.is_dir():
            raise NotADirectoryError(f"{d}: not a directory")
    out_abs = out_root.resolve()
    for d in (img_root, ann_root):
        if _is_within(d.resolve(), out_abs):
            # Replacing out_dir would delete the source data.
            raise ValueError(f"out_dir {out_root} must not be or contain source directory {d}")
    if class_names is not None:
        if not class_names:
            raise ValueError("class_names is empty")
        if len(set(class_names)) != len(class_names):
            raise ValueError(f"class_names has duplicates: {class_names}")

    report = SkipReport()
    images: dict[str, Path] = {}
    for p in _list_files(img_root, IMAGE_SUFFIXES):
        if p.stem in images:
            handle(
                FormatError(p, f"another image has the same stem: {images[p.stem].name}"),
                strict,
                report,
            )
            continue
        images[p.stem] = p
    xmls = {p.stem: p for p in _list_files(ann_root, frozenset({".xml"}))}

    for stem in sorted(images.keys() - xmls.keys()):
        handle(FormatError(images[stem], f"no annotation {stem}.xml in {ann_root}"), strict, report)

    parsed: list[tuple[str, Path, VocAnnotation]] = []
    for stem in progress(sorted(xmls), "read VOC", unit="xml"):
        xml_path = xmls[stem]
        if stem not in images:
            handle(FormatError(xml_path, f"no image named {stem}.* in {img_root}"), strict, report)
            continue
        try:
            parsed.append((stem, xml_path, read_voc(xml_path)))
        except FormatError as err:
            handle(err, strict, report)

    names = (
        list(class_names)
        if class_names is not None
        else sorted({obj.name for _, _, ann in parsed for obj in ann.objects})
    )
    if not names:
        raise FormatError(ann_root, "no object names found; pass class_names explicitly")
    class_ids = {name: i for i, name in enumerate(names)}

    items: list[_Item] = []
    for stem, xml_path, ann in parsed:
        image_path = images[stem]
        try:
            with open_image(image_path) as im:  # full decode: a truncated file fails here
                real_w, real_h = im.size
        except FormatError as err:
            handle(err, strict, report)
            continue
        sx, sy = real_w / ann.width, real_h / ann.height
        if (sx, sy) != (1.0, 1.0):
            logger.info(
                "%s: XML size %dx%d, image is %dx%d; scaling boxes",
                xml_path,
                ann.width,
                ann.height,
                real_w,
                real_h,
            )
        boxes = []
        clipped: list[int] = []
        worst = 0.0
        for index, obj in enumerate(ann.objects):
            if obj.name not in class_ids:
                handle(
                    FormatError(
                        xml_path,
                        f"object[{index}]: unknown class {obj.name!r} (known: {', '.join(names)})",
                        line=obj.line,
                    ),
                    strict,
                    report,
                )
                continue
            x1, y1, x2, y2 = obj.x1 * sx, obj.y1 * sy, obj.x2 * sx, obj.y2 * sy
            try:
                box = YoloBox.from_xyxy(class_ids[obj.name], x1, y1, x2, y2, real_w, real_h)
            except ValueError as exc:
                handle(
                    FormatError(xml_path, f"object[{index}] {obj.name!r}: {exc}", line=obj.line),
                    strict,
                    report,
                )
                continue
            boxes.append(box)
            overshoot = pixel_overshoot(x1, y1, x2, y2, real_w, real_h)
            if overshoot > PIXEL_EDGE_TOL:
                clipped.append(index)
                worst = max(worst, overshoot)
        if clipped:
            shown = first_few(clipped)
            detail = f"overshoot up to {worst:.3g} px of {real_w}x{real_h}, object(s) {shown}"
            note_clipped(xml_path, len(clipped), detail, report)
        items.append(_Item(stem, image_path, boxes))

    if not items:
        raise FormatError(img_root, f"no usable image/annotation pairs\n{report.summary()}")

    order = sorted(items, key=lambda it: it.stem)
    random.Random(seed).shuffle(order)
    counts = _split_counts(len(order), fractions)
    assignment: dict[str, list[_Item]] = {}
    start = 0
    for name, count in zip(SPLITS, counts, strict=True):
        assignment[name] = order[start : start + count]
        start += count

    with atomic_directory(out_root) as tmp:
        for name in SPLITS:
            (tmp / name / "images").mkdir(parents=True)
            (tmp / name / "labels").mkdir(parents=True)
            for item in progress(assignment[name], f"write {name}"):
                shutil.copy2(item.image, tmp / name / "images" / item.image.name)
                write_yolo_labels(tmp / name / "labels" / f"{item.stem}.txt", item.boxes)
        write_class_names(tmp / "data.yaml", names)

    if report.count or report.clipped:
        logger.warning("convert_voc_dataset: %s", report.summary())
    return {
        "images": {name: len(assignment[name]) for name in SPLITS},
        "boxes": sum(len(it.boxes) for it in items),
        "classes": names,
        "skipped": report.count,
        "clipped": report.clipped_count,
    }
