"""Property-based tests of every annotation reader: YOLO txt and data.yaml, Pascal VOC, CVAT XML
(images and video), Severstal CSV/RLE and mask folders.

The property is the same for each: any input either loads and round-trips (written by our writer
and read again it gives the same), or raises the project's FormatError naming the file. Never
another exception, never a hang (a hypothesis deadline per example and a timeout per test),
never a write outside the output folder. Inputs mix well-formed structure with the junk real
files hold (odd numbers, unicode digits, huge values, path tricks, cut-off bytes).

Bounded and repeatable: the "fuzz-ci" profile runs a few dozen derandomized examples per test.
For a longer search: FUZZ_PROFILE=fuzz-explore (random seeds, many more examples); on a busy
machine FUZZ_PROFILE=fuzz-noshrink reports failures without shrinking them. Every real bug
found is pinned below with @example.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from defects.formats import (
    FormatError,
    SkipReport,
    parse_yolo_line,
    read_class_names,
    read_severstal_csv,
    read_voc,
    read_yolo_labels,
    rle_decode,
    rle_encode,
    write_class_names,
    write_severstal_csv,
    write_yolo_labels,
)
from defects.formats.cvat import (
    cvat_to_yolo,
    cvat_video_to_yolo,
    read_cvat_images_xml,
    read_cvat_video_xml,
    write_cvat_images_xml,
)
from defects.formats.mask_folder import import_mask_folder, read_index_mask, write_index_mask
from defects.formats.voc import convert_voc_dataset
from defects.formats.yolo import read_numbered_labels

settings.register_profile(
    "fuzz-ci",
    max_examples=30,
    derandomize=True,  # the same examples on every run: CI failures are repeatable
    deadline=timedelta(seconds=10),  # generous: CI shares its cores; a hang takes far longer
    database=None,  # nothing written into the checkout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile(
    "fuzz-explore", parent=settings.get_profile("fuzz-ci"), max_examples=1000, derandomize=False
)
settings.register_profile(  # the CI examples, failures reported as found (no shrinking)
    "fuzz-noshrink",
    parent=settings.get_profile("fuzz-ci"),
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
FUZZ = settings.get_profile(os.environ.get("FUZZ_PROFILE", "fuzz-ci"))
pytestmark = pytest.mark.timeout(120)  # per test: a hang fails the test instead of CI


# --------------------------------------------------------------------------- helpers


@contextmanager
def workdir() -> Iterator[Path]:
    """A fresh folder per example (pytest's tmp_path is shared by all examples of a test)."""
    with tempfile.TemporaryDirectory(prefix="fuzz-") as name:
        yield Path(name)


@contextmanager
def input_file(data: bytes, name: str) -> Iterator[tuple[Path, Path, Path]]:
    """(folder, `data` written as folder/in/`name`, the output folder): fresh per example.
    The output sits a few levels deep, so a `../` name that escapes it is seen (`confined`)."""
    with workdir() as root:
        path = root / "in" / name
        path.parent.mkdir()
        path.write_bytes(data)
        yield root, path, root / "a" / "b" / "out"


def snapshot(root: Path, skip: Path) -> dict[str, bytes]:
    """Every file under `root` except those under `skip` (the output), with its bytes."""
    return {
        str(p): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and skip not in p.parents and p != skip
    }


@contextmanager
def confined(root: Path, out: Path) -> Iterator[None]:
    """Fail if anything under `root` outside `out` changed (out sits a few levels deep, so a
    `../` name that escapes it lands in `root` and is seen)."""
    before = snapshot(root, out)
    yield
    assert snapshot(root, out) == before, "a file outside the output folder was written"


def names_file(err: FormatError, *paths: Path) -> None:
    """The error names one of the given files (or a file inside one of the given folders)."""
    event("refused with FormatError")  # --hypothesis-show-statistics: how often each path ran
    named = Path(err.path)
    assert any(named == p or p in named.parents for p in paths), (err.path, paths)
    assert str(err).startswith(err.path)


def loose(options: list[str], dirty: bool = True) -> st.SearchStrategy[str]:
    """One of `options`; when `dirty`, one draw in four is junk text instead."""
    plausible = st.sampled_from(options)
    return st.one_of(plausible, plausible, plausible, st.text(max_size=6)) if dirty else plausible


NUMBERS = [
    "0", "1", "0.5", "12", "12.5", "-3", "1e3", "1e400", "-0", "nan", "inf", "-inf", "0x10",
    "1_0", "\u0661", "\u00b2", "+.5", "5.", ".", "", " ", "9" * 25, "1e-7", "1.05", "1.0004",
]  # fmt: skip
number = st.one_of(
    st.sampled_from(NUMBERS),
    st.integers(-10, 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True, width=32).map(repr),
    st.floats(0, 1).map(lambda v: f"{v:.6f}"),
)


def numeric(good: st.SearchStrategy[str], dirty: bool) -> st.SearchStrategy[str]:
    """A number from `good`; when `dirty`, one draw in four from the junk-laden `number`."""
    return st.one_of(good, good, good, number) if dirty else good


def keep(draw: st.DrawFn, dirty: bool, attrs: dict[str, str]) -> dict[str, str]:
    """`attrs`, each one sometimes left out when `dirty`."""
    return {k: v for k, v in attrs.items() if not dirty or draw(st.integers(0, 9))}


def span(draw: st.DrawFn, low: float = -5, high: float = 70) -> tuple[str, str]:
    """Two ordered coordinates as CVAT writes them (2 decimals), sometimes past the border."""
    a = draw(st.floats(low, high))
    return f"{a:.2f}", f"{a + draw(st.floats(0.5, 40)):.2f}"


def mangle(data: bytes, draw: st.DrawFn, dirty: bool = True) -> bytes:
    """When `dirty`, sometimes cut the bytes short or splice junk in (a crash, a bad copy)."""
    if not dirty:
        return data
    how = draw(st.sampled_from(["keep", "keep", "cut", "splice"]))
    if how == "cut" and data:
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "splice":
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.binary(max_size=8)) + data[at:]
    return data


# --------------------------------------------------------------------------- YOLO


yolo_line = st.one_of(
    st.lists(number, min_size=0, max_size=7).map(" ".join),
    st.tuples(st.integers(0, 4), *[st.floats(-0.2, 1.2)] * 4).map(
        lambda t: " ".join([str(t[0]), *(f"{v:.7g}" for v in t[1:])])
    ),
    st.text(max_size=20),
)


@st.composite
def yolo_file(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(yolo_line, max_size=6))
    text = draw(st.sampled_from(["\n", "\r\n", "\r"])).join(lines)
    data = draw(st.sampled_from([b"", b"\xef\xbb\xbf"])) + text.encode("utf-8")
    return mangle(data, draw)


@FUZZ
@given(data=yolo_file(), num_classes=st.sampled_from([None, 1, 3]))
@example(data=b"0 0.5 0.5 0.0000001 0.5\n", num_classes=None)  # below 6-decimal precision
@example(data=b"0 0.9999995 0.5 0.000002 0.5\n", num_classes=None)  # rounds past the edge
@example(data=b"0 0.5 0.5 1.05 0.3\n", num_classes=None)  # Datumaro-style overshoot
def test_yolo_labels_load_and_round_trip_or_fail_naming_the_file(
    data: bytes, num_classes: int | None
) -> None:
    with input_file(data, "img.txt") as (root, path, out):
        with confined(root, out):
            try:
                boxes = read_yolo_labels(path, num_classes=num_classes)
            except FormatError as err:
                names_file(err, path)
                assert err.line is None or err.line >= 1
                boxes = None
            report = SkipReport()  # lenient: never raises, keeps every good line
            lenient = read_yolo_labels(path, num_classes, strict=False, report=report)
            read_numbered_labels(path, num_classes, strict=False, check_geometry=False)
            if boxes is None:
                assert report.count >= 1
                return
            assert lenient == boxes and report.count == 0
            write_yolo_labels(out / "img.txt", boxes)
        # exactly: the reader gives values at the format's 6 decimals, the writer writes those
        assert read_yolo_labels(out / "img.txt", num_classes=num_classes) == boxes


yaml_names = st.one_of(
    st.lists(loose(["crack", "pore", "yes", "010", "a b", "'q'", "x: y", ""]), max_size=4).map(
        lambda names: "names: [" + ", ".join(names) + "]\n"
    ),
    st.dictionaries(st.integers(-1, 4), loose(["crack", "pore"]), max_size=4).map(
        lambda d: "names:\n" + "".join(f"  {k}: {v}\n" for k, v in d.items())
    ),
    st.text(max_size=40),
)


@FUZZ
@given(text=yaml_names, nc=st.sampled_from(["", "nc: 2\n", "nc: yes\n", "nc: [1]\n"]))
def test_data_yaml_loads_and_round_trips_or_fails_naming_the_file(text: str, nc: str) -> None:
    with workdir() as root:
        path = root / "data.yaml"
        path.write_text(text + nc, encoding="utf-8")
        try:
            names = read_class_names(path)
        except FormatError as err:
            names_file(err, path)
            return
        write_class_names(root / "out.yaml", names)
        assert read_class_names(root / "out.yaml") == names


# --------------------------------------------------------------------------- Pascal VOC


def _child(parent: ET.Element, tag: str, text: str | None) -> None:
    if text is not None:
        ET.SubElement(parent, tag).text = text


@st.composite
def voc_document(draw: st.DrawFn) -> bytes:
    """An <annotation> as labelling tools write it; half of them with parts missing or junk."""
    dirty = draw(st.booleans())

    def maybe(good: st.SearchStrategy[str]) -> str | None:
        return draw(st.one_of(st.none(), numeric(good, dirty)) if dirty else good)

    root = ET.Element(draw(loose(["annotation"] * 3 + ["annotations"], dirty)))
    _child(root, "filename", draw(st.one_of(st.none(), st.text(max_size=6))))
    size = ET.SubElement(root, "size")
    _child(size, "width", maybe(st.integers(1, 64).map(str)))
    _child(size, "height", maybe(st.sampled_from(["12", "20", "12.0"])))
    _child(size, "depth", "3")
    for _ in range(draw(st.integers(0, 3))):
        obj = ET.SubElement(root, "object")
        _child(obj, "name", draw(loose(["crack", "pore", " crack "], dirty)))
        _child(obj, "truncated", draw(st.sampled_from([None, "0", "1"])))
        _child(obj, "difficult", draw(st.sampled_from([None, "0", "1"])))
        if not dirty or draw(st.integers(0, 5)):
            box = ET.SubElement(obj, "bndbox")
            (x1, x2), (y1, y2) = span(draw, -3, 20), span(draw, -3, 14)
            for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), (x1, y1, x2, y2), strict=True):
                _child(box, tag, maybe(st.just(value)))
    return mangle(ET.tostring(root, encoding="utf-8"), draw, dirty)


@FUZZ
@given(data=voc_document())
@example(data=b"<!DOCTYPE a [<!ENTITY x 'y'>]><annotation/>")  # entity tricks: refused
def test_voc_xml_loads_or_fails_naming_the_file(data: bytes) -> None:
    with workdir() as root:
        path = root / "a.xml"
        path.write_bytes(data)
        try:
            ann = read_voc(path)
        except FormatError as err:
            names_file(err, path)
            return
        assert ann.width >= 1 and ann.height >= 1
        for obj in ann.objects:
            assert obj.name == obj.name.strip() and obj.name
            assert obj.x1 < obj.x2 and obj.y1 < obj.y2


def voc_text(filename: str, width: int, height: int, objects: list[tuple]) -> str:
    """Our writer for the round trip: VOC as LabelImg writes it."""
    root = ET.Element("annotation")
    _child(root, "filename", filename)
    size = ET.SubElement(root, "size")
    _child(size, "width", str(width))
    _child(size, "height", str(height))
    for name, *coords in objects:
        obj = ET.SubElement(root, "object")
        _child(obj, "name", name)
        box = ET.SubElement(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), coords, strict=True):
            _child(box, tag, repr(value))
    return ET.tostring(root, encoding="unicode")


coord = st.floats(-20, 80, allow_nan=False)


@st.composite
def voc_objects(draw: st.DrawFn) -> list[tuple]:
    objects = []
    for _ in range(draw(st.integers(0, 3))):
        x1, y1 = draw(coord), draw(coord)
        x2 = x1 + draw(st.floats(0.01, 60))
        y2 = y1 + draw(st.floats(0.01, 60))
        objects.append((draw(st.sampled_from(["crack", "pore"])), x1, y1, x2, y2))
    return objects


@FUZZ
@given(objects=voc_objects(), size=st.tuples(st.integers(1, 64), st.integers(1, 64)))
def test_voc_written_then_read_gives_the_same(objects: list[tuple], size: tuple) -> None:
    with workdir() as root:
        path = root / "a.xml"
        path.write_text(voc_text("a.png", *size, objects), encoding="utf-8")
        ann = read_voc(path)
        assert (ann.filename, ann.width, ann.height) == ("a.png", *size)
        assert [(o.name, o.x1, o.y1, o.x2, o.y2) for o in ann.objects] == objects


@FUZZ
@given(data=voc_document())
def test_voc_import_writes_only_its_output_and_valid_labels(data: bytes) -> None:
    with workdir() as root:
        images, annotations = root / "src" / "images", root / "src" / "annotations"
        images.mkdir(parents=True)
        annotations.mkdir()
        Image.new("L", (16, 12), 90).save(images / "a.png")
        (annotations / "a.xml").write_bytes(data)
        out = root / "a" / "b" / "out"
        with confined(root, out):
            try:
                summary = convert_voc_dataset(images, annotations, out, ["crack", "pore"])
            except FormatError as err:
                names_file(err, root / "src")
                assert not out.exists()
                return
        assert summary["skipped"] == 0
        (label,) = out.glob("*/labels/a.txt")
        assert len(read_yolo_labels(label, num_classes=2)) == summary["boxes"]


# --------------------------------------------------------------------------- CVAT XML


LABELS = ["crack", "pore"]
IMAGE_NAMES = [
    "a.png", "a.jpg", "sub/b.png", "../up.png", "../../../up.png", "/abs.png", "a\\b.png", ".",
    "", "c", "x" * 300 + ".png", "..", "d/../e.png", " f.png",
]  # fmt: skip
SHAPES = {  # plausible attributes of each shape; the first value of each is readable
    "polygon": {"points": ["1,1;5,5;1,5", "2,2", "1,x", ""]},
    "polyline": {"points": ["0,0;9,9", "3,3;3,3"]},
    "points": {"points": ["4,4;6,9", "1,2"]},
    "ellipse": {"cx": ["8", *NUMBERS], "cy": ["5"], "rx": ["2", "-1"], "ry": ["3"]},
    "mask": {"rle": ["3, 5, 4", "0, 4", "x"], "left": ["1"], "top": ["1"], "width": ["3", "-2"],
             "height": ["4"]},
    "cuboid": {k: ["1", "x"] for k in (f"{a}{c}{f}" for f in "12" for c in ("tl", "bl", "tr", "br")
                                       for a in "xy")} | {"xbr2": ["6"], "ybr2": ["7"]},
    "tag": {},
}  # fmt: skip


def _shape(draw: st.DrawFn, parent: ET.Element, labels: list[str], dirty: bool) -> None:
    tag = draw(st.sampled_from(["box", "box", "box", *SHAPES, "skeleton"]))
    attrs = {"label": draw(loose(labels, dirty)), "occluded": draw(loose(["0", "1"], dirty))}
    if tag == "box":
        (xtl, xbr), (ytl, ybr) = span(draw), span(draw)
        corners = {"xtl": xtl, "ytl": ytl, "xbr": xbr, "ybr": ybr}
        attrs |= {k: draw(numeric(st.just(v), dirty)) for k, v in corners.items()}
        if draw(st.integers(0, 4)) == 0:
            attrs["rotation"] = draw(loose(["0", "30", "360"], dirty))
    else:
        options = SHAPES.get(tag, {})
        attrs |= {k: draw(loose(v if dirty else v[:1], dirty)) for k, v in options.items()}
    attrs["z_order"] = draw(loose(["0", "2"], dirty))
    if draw(st.integers(0, 4)) == 0:
        attrs["group_id"] = "1"
    element = ET.SubElement(parent, tag, keep(draw, dirty, attrs))
    if tag == "skeleton":
        points = draw(loose(["3,3", "9,8", "x"] if dirty else ["3,3", "9,8"], dirty))
        ET.SubElement(element, "points", {"label": "1", "points": points})
    if draw(st.integers(0, 3)) == 0:
        ET.SubElement(element, "attribute", {"name": "size"}).text = "big"


def _meta(draw: st.DrawFn, root: ET.Element, dirty: bool) -> tuple[ET.Element, list[str]]:
    """<meta><task> with its labels, and the names used for shapes (some unknown when dirty)."""
    task = ET.SubElement(ET.SubElement(root, "meta"), "task")
    labels = ET.SubElement(task, "labels")
    names = draw(st.lists(loose(LABELS, dirty), min_size=0 if dirty else 1, max_size=3))
    for name in names:
        label = ET.SubElement(labels, "label")
        _child(label, "name", name)
    return task, (LABELS if dirty else names)


CVAT_LONG_NAME = (
    "<annotations><meta><task><labels><label><name>crack</name></label></labels></task></meta>"
    f'<image id="0" name="{"x" * 300}.png" width="4" height="4"/></annotations>'
).encode()


@st.composite
def cvat_images_document(draw: st.DrawFn) -> bytes:
    """A "CVAT for images" file; half of them with junk, path tricks and missing parts."""
    dirty = draw(st.booleans())
    root = ET.Element(draw(loose(["annotations"] * 3 + ["annotation"], dirty)))
    _child(root, "version", "1.1")
    _, labels = _meta(draw, root, dirty)
    for index in range(draw(st.integers(0, 3))):
        name = IMAGE_NAMES if dirty else [f"img{index}.png", f"sub/img{index}.jpg"]
        attrs = {
            "id": draw(loose([str(index), "-1"], dirty)),
            "name": draw(loose(name, dirty)),
            "width": draw(numeric(st.sampled_from(["64", "48", "101"]), dirty)),
            "height": draw(numeric(st.sampled_from(["64", "48", "77"]), dirty)),
        }
        image = ET.SubElement(root, "image", keep(draw, dirty, attrs))
        for _ in range(draw(st.integers(0, 3))):
            _shape(draw, image, labels, dirty)
    return mangle(ET.tostring(root, encoding="utf-8"), draw, dirty)


@FUZZ
@given(data=cvat_images_document())
@example(data=CVAT_LONG_NAME)  # a name too long for a file on the disk
def test_cvat_images_load_and_round_trip_or_fail_naming_the_file(data: bytes) -> None:
    with input_file(data, "annotations.xml") as (root, xml, out):
        with confined(root, out):
            try:
                parsed = read_cvat_images_xml(xml)
                summary = cvat_to_yolo(xml, out / "labels", out / "data.yaml")
            except FormatError as err:
                names_file(err, xml)
                assert not (out / "labels").exists()
                return
        assert summary["images"] == len(parsed.images)
        items = []
        for image in parsed.images:
            rel = Path(image.name.replace("\\", "/")).with_suffix(".txt")
            boxes = read_yolo_labels(out / "labels" / rel, num_classes=len(parsed.class_names))
            expected = [b.to_yolo(image.width, image.height).to_line() for b in image.boxes]
            assert [b.to_line() for b in boxes] == expected  # the labels hold what was read
            # back to CVAT XML: its 2 decimals cannot hold a box under 0.01 px, leave those out
            kept = [b for b in boxes if min(b.w * image.width, b.h * image.height) >= 0.02]
            items.append((image.name, image.width, image.height, kept))
        write_cvat_images_xml(out / "again.xml", items, parsed.class_names)
        again = read_cvat_images_xml(out / "again.xml")
        assert again.class_names == parsed.class_names
        for (_, width, height, boxes), image in zip(items, again.images, strict=True):
            corners = [b.to_xyxy(width, height) for b in boxes]
            assert [b.class_id for b in image.boxes] == [b.class_id for b in boxes]
            for box, xyxy in zip(image.boxes, corners, strict=True):
                assert (box.xtl, box.ytl, box.xbr, box.ybr) == pytest.approx(xyxy, abs=0.0051)


def video_example(task: str, width: str = "64", frame: str = "1") -> bytes:
    """A small "CVAT for video" file with one box track; `task` goes into <task>."""
    return (
        "<annotations><meta><task>"
        f"{task}<labels><label><name>crack</name></label></labels><original_size>"
        f"<width>{width}</width><height>48</height></original_size></task></meta>"
        f'<track id="0" label="crack"><box frame="{frame}" outside="0" xtl="1" ytl="1" '
        'xbr="5" ybr="5"/></track></annotations>'
    ).encode()


@st.composite
def cvat_video_document(draw: st.DrawFn) -> bytes:
    """A "CVAT for video" file with tracks; half of them with junk and missing parts. Frame
    counts stay small (every frame becomes a file); MAX_FRAMES has its own examples."""
    dirty = draw(st.booleans())
    root = ET.Element("annotations")
    task, labels = _meta(draw, root, dirty)
    for tag, options in (("size", ["10", "12", "0"]), ("stop_frame", ["9", "3"])):
        if draw(st.booleans()):
            _child(task, tag, draw(loose(options, dirty)))
    if not dirty or draw(st.integers(0, 9)):
        size = ET.SubElement(task, "original_size")
        _child(size, "width", draw(loose(["64", "0", "\u00b2"] if dirty else ["64"], dirty)))
        _child(size, "height", draw(loose(["48", "-4"] if dirty else ["48"], dirty)))
    for index in range(draw(st.integers(0, 2))):
        label = draw(loose(labels, dirty))
        track = ET.SubElement(root, "track", {"id": str(index), "label": label})
        for frame in draw(st.lists(st.integers(0, 9), max_size=3, unique=True)):
            (xtl, xbr), (ytl, ybr) = span(draw), span(draw)
            tag = draw(st.sampled_from(["box", "box", "polygon"]))
            attrs = {
                "frame": draw(loose([str(frame)] * 3 + ["-1", "2.5", "1e15", "x"], dirty)),
                "outside": draw(loose(["0", "0", "1"], dirty)),
                "keyframe": "1",
            }
            if tag == "box":
                attrs |= {"xtl": xtl, "ytl": ytl, "xbr": xbr, "ybr": ybr}
            else:
                attrs["points"] = f"{xtl},{ytl};{xbr},{ytl};{xbr},{ybr}"
            ET.SubElement(track, tag, keep(draw, dirty, attrs))
    return mangle(ET.tostring(root, encoding="utf-8"), draw, dirty)


@FUZZ
@given(data=cvat_video_document())
@example(data=video_example("<size>99999999999999</size>"))  # was: a dict of 10**14 frames
@example(data=video_example("<size>3</size>", width="\u00b2"))  # "²".isdigit() is True
@example(data=video_example("", frame="1e15"))  # no size: the last listed frame sets it
def test_cvat_video_loads_or_fails_naming_the_file(data: bytes) -> None:
    with input_file(data, "annotations.xml") as (root, xml, out):
        with confined(root, out):
            try:
                video = read_cvat_video_xml(xml)
                summary = cvat_video_to_yolo(xml, out / "labels")
            except FormatError as err:
                names_file(err, xml)
                assert not (out / "labels").exists()
                return
        assert summary["frames"] == video.frame_count == len(video.frames)
        for frame, boxes in video.frames.items():
            label = out / "labels" / f"frame_{frame:06d}.txt"
            written = read_yolo_labels(label, num_classes=len(video.class_names))
            expected = [b.to_yolo(video.width, video.height).to_line() for b in boxes]
            assert written == [parse_yolo_line(line) for line in expected]


# --------------------------------------------------------------------------- Severstal CSV


SHAPE = (4, 5)  # 20 pixels: small enough that random runs are often valid
rle_junk = st.one_of(
    st.lists(st.integers(-2, 25), max_size=6).map(lambda v: " ".join(map(str, v))),
    st.lists(number, max_size=4).map(" ".join),
    st.sampled_from(["nan", "1 20", "2 9223372036854775807", "1 -1", "1 2 3 4"]),
)
rle_good = st.lists(st.booleans(), min_size=20, max_size=20).map(
    lambda bits: rle_encode(np.array(bits).reshape(SHAPE))  # "" when nothing is set
)
IMAGE_IDS = ["a.jpg", "b.jpg", "a,b.jpg", 'q"t.jpg', "x\ny.jpg", " s.jpg ", "c_1.jpg"]


@st.composite
def severstal_file(draw: st.DrawFn) -> bytes:
    """Either Kaggle layout; half of the files with junk rows, cells and bytes."""
    dirty, old = draw(st.booleans()), draw(st.booleans())
    header = "ImageId_ClassId,EncodedPixels" if old else "ImageId,ClassId,EncodedPixels"
    rows = [draw(st.one_of(st.just(header), st.text(max_size=12)) if dirty else st.just(header))]
    keys = st.tuples(
        loose(IMAGE_IDS, dirty), loose(["1", "2", "4", "5"] if dirty else ["1", "4"], dirty)
    )
    for image, cls in draw(st.lists(keys, max_size=5, unique=not dirty)):
        rle = draw(st.one_of(rle_good, rle_junk) if dirty else rle_good)
        cells = [f"{image}_{cls}", rle] if old else [image, cls, rle]
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="").writerow(cells)
        quoted = buffer.getvalue()
        rows.append(draw(st.sampled_from([quoted, ",".join(cells)])) if dirty else quoted)
    text = draw(st.sampled_from(["\n", "\r\n"])).join(rows)
    return mangle(text.encode("utf-8"), draw, dirty)


@FUZZ
@given(data=severstal_file())
@example(data=b"ImageId,ClassId,EncodedPixels\na.jpg,1,2 9223372036854775807\n")  # int64 wrap
def test_severstal_csv_loads_and_round_trips_or_fails_naming_the_file(data: bytes) -> None:
    with input_file(data, "train.csv") as (root, path, out):
        with confined(root, out):
            try:
                masks = read_severstal_csv(path, num_classes=4, shape=SHAPE)
            except FormatError as err:
                names_file(err, path)
                return
            read_severstal_csv(path, num_classes=4, shape=SHAPE, strict=False)
            write_severstal_csv(out / "train.csv", masks)
        assert read_severstal_csv(out / "train.csv", num_classes=4, shape=SHAPE) == masks
        for per_class in masks.values():  # what the reader let through decodes
            for rle in per_class.values():
                lengths = [int(v) for v in rle.split()[1::2]]
                assert int(rle_decode(rle, SHAPE).sum()) == sum(lengths)


# --------------------------------------------------------------------------- mask folders


MODES = ["L", "RGB", "P", "RGBA", "1", "I;16", "LA", "F", "CMYK"]


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


ONE_BIT = _png(Image.fromarray(np.eye(4, dtype=bool)))  # a 1-bit PNG, white diagonal


@st.composite
def image_bytes(
    draw: st.DrawFn, suffix: str, dirty: bool = True, size: tuple[int, int] | None = None
) -> bytes:
    """A tiny image of a random mode (and size, unless given), its bytes damaged when dirty."""
    mode = draw(st.sampled_from(MODES))
    w, h = size or (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    values = draw(st.lists(st.sampled_from([0, 1, 2, 128, 255]), min_size=w * h, max_size=w * h))
    grey = Image.fromarray(np.array(values, np.uint8).reshape(h, w))
    fmt = {".png": "PNG", ".bmp": "BMP", ".jpg": "JPEG", ".tif": "TIFF"}[suffix]
    try:
        im = grey.convert(mode)
        buffer = io.BytesIO()
        im.save(buffer, format=fmt)
    except (OSError, ValueError, KeyError):  # mode not storable in this format: keep it grey
        buffer = io.BytesIO()
        grey.save(buffer, format=fmt)
    return mangle(buffer.getvalue(), draw, dirty)


@st.composite
def mask_tree(draw: st.DrawFn) -> dict[str, bytes]:
    """Relative path -> bytes of a source tree with a class folder and a defect-free folder;
    half of the trees with damaged files, odd names, missing or misplaced masks."""
    dirty = draw(st.booleans())
    files: dict[str, bytes] = {}
    for folder in ("crack", "free"):
        stems = ["a", "b", "c", ".h", "a_mask"] if dirty else ["a", "b", "c"]
        for stem in draw(st.lists(st.sampled_from(stems), max_size=3, unique=not dirty)):
            suffix = draw(st.sampled_from([".jpg", ".png", ".bmp", ".tif"]))
            size = None if dirty else (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
            files[f"{folder}/{stem}{suffix}"] = draw(image_bytes(suffix, dirty, size))
            if draw(st.integers(0, 3)) if dirty else folder == "crack":
                files[f"{folder}/{stem}_mask.png"] = draw(image_bytes(".png", dirty, size))
    return files


@FUZZ
@given(tree=mask_tree(), threshold=st.sampled_from([1, 128]))
@example(tree={"crack/a.png": ONE_BIT, "crack/a_mask.png": ONE_BIT}, threshold=128)  # 1-bit
def test_mask_folder_import_round_trips_or_fails_naming_the_file(
    tree: dict[str, bytes], threshold: int
) -> None:
    with workdir() as root:
        src = root / "src"
        for folder in ("crack", "free"):
            (src / folder).mkdir(parents=True)
        for rel, data in tree.items():
            (src / rel).write_bytes(data)
        out = root / "a" / "b" / "out"
        with confined(root, out):
            try:
                summary = import_mask_folder(
                    src,
                    out,
                    {"crack": "crack", "none": "free"},
                    mask_suffix="_mask.png",
                    mask_threshold=threshold,
                )
            except FormatError as err:
                names_file(err, src)
                assert not out.exists()
                return
        assert sum(summary["images"].values()) >= 1
        for image in out.glob("*/images/*"):
            folder, _, stem = image.stem.partition("__")
            source = src / ("crack" if folder == "crack" else "free") / f"{stem}{image.suffix}"
            assert image.read_bytes() == source.read_bytes()
            mask = image.parent.parent / "masks" / f"{image.stem}.png"
            if folder != "crack":
                assert not mask.exists()
                continue
            with Image.open(src / "crack" / f"{stem}_mask.png") as im:
                shown = np.array(im.convert("RGB") if im.mode == "P" else im)
            grey = shown[..., 0] if shown.ndim == 3 else shown  # grey masks: bands are equal
            if grey.dtype == np.bool_:  # 1-bit: black and white
                grey = grey * 255
            expected = (grey >= threshold).astype(np.uint8)
            assert mask.exists() == bool(expected.any())  # an empty mask: defect-free image
            if mask.exists():
                np.testing.assert_array_equal(read_index_mask(mask, num_classes=1), expected)


@FUZZ
@given(data=image_bytes(".png"), num_classes=st.sampled_from([1, 2, 255]))
def test_index_mask_loads_and_round_trips_or_fails_naming_the_file(
    data: bytes, num_classes: int
) -> None:
    with workdir() as root:
        path = root / "m.png"
        path.write_bytes(data)
        try:
            mask = read_index_mask(path, num_classes=num_classes)
        except FormatError as err:
            names_file(err, path)
            return
        write_index_mask(root / "out" / "m.png", mask)
        np.testing.assert_array_equal(read_index_mask(root / "out" / "m.png", num_classes), mask)
