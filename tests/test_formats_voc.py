"""Pascal VOC reading and VOC -> YOLO dataset conversion on tiny generated fixtures."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from PIL import Image, features

from defects.formats import (
    FormatError,
    VocAnnotation,
    VocObject,
    YoloBox,
    convert_voc_dataset,
    read_class_names,
    read_voc,
    read_yolo_labels,
)

CLASSES = ["crack", "pore"]


def voc_xml(
    filename: str, width: int, height: int, objects: list[tuple[str, float, float, float, float]]
) -> str:
    objs = "".join(
        f"<object><name>{n}</name><difficult>0</difficult><bndbox>"
        f"<xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax>"
        "</bndbox></object>"
        for n, a, b, c, d in objects
    )
    return (
        f"<annotation>\n<folder>x</folder>\n<filename>{filename}</filename>\n"
        f"<size><width>{width}</width><height>{height}</height><depth>1</depth></size>\n"
        f"{objs}\n</annotation>\n"
    )


def make_dataset(root: Path, n: int = 10, size: tuple[int, int] = (40, 20)) -> tuple[Path, Path]:
    """n tiny PNGs, each with one or two boxes, alternating classes."""
    images, annotations = root / "images", root / "annotations"
    images.mkdir(parents=True)
    annotations.mkdir()
    for i in range(n):
        name = f"img_{i:02d}"
        Image.new("RGB", size, (i * 20, 0, 0)).save(images / f"{name}.png")
        objects = [(CLASSES[i % 2], 2, 3, 12, 13)]
        if i % 3 == 0:
            objects.append(("pore", 20, 0, 40, 20))
        (annotations / f"{name}.xml").write_text(voc_xml(f"{name}.png", *size, objects))
    return images, annotations


def snapshot(*dirs: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p): (p.read_bytes(), p.stat().st_mtime_ns)
        for d in dirs
        for p in sorted(d.rglob("*"))
        if p.is_file()
    }


def split_of(out: Path) -> dict[str, list[str]]:
    return {
        s: sorted(p.stem for p in (out / s / "images").iterdir())
        for s in ("train", "valid", "test")
    }


def test_read_good_xml(tmp_path: Path) -> None:
    path = tmp_path / "a.xml"
    path.write_text(voc_xml("a.jpg", 200, 100, [("crack", 1, 2, 30, 40), ("pore", 5.5, 6, 7, 8)]))
    assert read_voc(path) == VocAnnotation(
        "a.jpg", 200, 100, [VocObject("crack", 1, 2, 30, 40), VocObject("pore", 5.5, 6, 7, 8)]
    )


def test_read_xml_without_objects(tmp_path: Path) -> None:
    path = tmp_path / "a.xml"
    path.write_text(voc_xml("a.jpg", 200, 100, []))
    assert read_voc(path).objects == []


def test_malformed_xml_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.xml"
    path.write_text("<annotation>\n<size>\n</annotation>\n")
    with pytest.raises(FormatError, match=r"broken\.xml:3: malformed XML") as info:
        read_voc(path)
    assert info.value.line == 3


def test_doctype_refused(tmp_path: Path) -> None:
    path = tmp_path / "dtd.xml"
    path.write_text('<!DOCTYPE a [<!ENTITY x "y">]><annotation/>')
    with pytest.raises(FormatError, match="DOCTYPE"):
        read_voc(path)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("<annotation><filename>a</filename></annotation>", "missing <size>"),
        ("<annotation><size><width>3</width></size></annotation>", "missing <size/height>"),
        ("<annotation><size><width>3</width><height> </height></size></annotation>", "empty"),
        ("<annotation><size><width>x</width><height>3</height></size></annotation>", "number"),
        ("<annotation><size><width>0</width><height>3</height></size></annotation>", "positive"),
        ("<foo/>", "expected <annotation>"),
    ],
)
def test_bad_size(tmp_path: Path, body: str, needle: str) -> None:
    path = tmp_path / "a.xml"
    path.write_text(body)
    with pytest.raises(FormatError, match="a.xml") as info:
        read_voc(path)
    assert needle in str(info.value)


def test_missing_bndbox(tmp_path: Path) -> None:
    path = tmp_path / "nobox.xml"
    path.write_text(
        "<annotation>\n<size><width>10</width><height>10</height></size>\n"
        "<object>\n<name>crack</name>\n</object>\n</annotation>"
    )
    with pytest.raises(FormatError, match=r"nobox\.xml:3: missing <object\[0\]/bndbox>"):
        read_voc(path)


@pytest.mark.parametrize(
    ("box", "needle"),
    [
        ((1, 2, "abc", 4), "object[0]/bndbox/xmax> is not a finite number"),
        ((1, 2, "nan", 4), "not a finite number"),
        ((5, 2, 5, 4), "empty or inverted"),
        ((1, 6, 5, 4), "empty or inverted"),
    ],
)
def test_bad_bndbox(tmp_path: Path, box: tuple[object, ...], needle: str) -> None:
    path = tmp_path / "b.xml"
    path.write_text(voc_xml("b.jpg", 10, 10, [("crack", *box)]))  # type: ignore[list-item]
    with pytest.raises(FormatError, match=r"b\.xml:\d+:") as info:
        read_voc(path)
    assert needle in str(info.value)


def test_convert_layout_counts_and_labels(tmp_path: Path) -> None:
    images, annotations = make_dataset(tmp_path / "src")
    out = tmp_path / "out"
    summary = convert_voc_dataset(images, annotations, out, split=(0.6, 0.2, 0.2))
    assert summary == {
        "images": {"train": 6, "valid": 2, "test": 2},
        "boxes": 14,
        "classes": CLASSES,
        "skipped": 0,
        "clipped": 0,
    }
    assert read_class_names(out / "data.yaml") == CLASSES
    for split in ("train", "valid", "test"):
        stems = {p.stem for p in (out / split / "images").iterdir()}
        assert stems == {p.stem for p in (out / split / "labels").iterdir()}
    label = next(out.glob("*/labels/img_03.txt"))
    assert read_yolo_labels(label, num_classes=2) == [
        YoloBox(1, 7 / 40, 8 / 20, 10 / 40, 10 / 20),
        YoloBox(1, 0.75, 0.5, 0.5, 1.0),
    ]
    copied = next(out.glob("*/images/img_03.png"))
    assert copied.read_bytes() == (images / "img_03.png").read_bytes()


def test_convert_deterministic_split_and_sources_untouched(tmp_path: Path) -> None:
    images, annotations = make_dataset(tmp_path / "src")
    before = snapshot(images, annotations)
    convert_voc_dataset(images, annotations, tmp_path / "a", seed=1)
    convert_voc_dataset(images, annotations, tmp_path / "b", seed=1)
    convert_voc_dataset(images, annotations, tmp_path / "c", seed=2)
    assert split_of(tmp_path / "a") == split_of(tmp_path / "b")
    assert split_of(tmp_path / "a") != split_of(tmp_path / "c")
    assert {k: len(v) for k, v in split_of(tmp_path / "a").items()} == {
        "train": 7,
        "valid": 2,
        "test": 1,
    }
    assert snapshot(images, annotations) == before


def test_convert_zero_fraction_split_stays_empty(tmp_path: Path) -> None:
    images, annotations = make_dataset(tmp_path / "src", n=5)
    summary = convert_voc_dataset(images, annotations, tmp_path / "out", split=(0.5, 0.5, 0.0))
    assert summary["images"]["test"] == 0
    assert (tmp_path / "out" / "test" / "labels").is_dir()


def test_convert_rejects_bad_split(tmp_path: Path) -> None:
    images, annotations = make_dataset(tmp_path / "src", n=2)
    with pytest.raises(ValueError, match="sum to 1"):
        convert_voc_dataset(images, annotations, tmp_path / "out", split=(0.5, 0.2, 0.2))


def test_convert_unknown_class_strict_vs_lenient(tmp_path: Path) -> None:
    images, annotations = make_dataset(tmp_path / "src")
    out = tmp_path / "out"
    with pytest.raises(FormatError, match=r"img_00\.xml:5: object\[0\]: unknown class 'crack'"):
        convert_voc_dataset(images, annotations, out, class_names=["pore"])
    assert not out.exists()
    summary = convert_voc_dataset(images, annotations, out, class_names=["pore"], strict=False)
    assert summary["skipped"] == 5  # the five 'crack' objects
    assert summary["boxes"] == 9
    assert sum(summary["images"].values()) == 10  # images keep their remaining boxes
    assert read_class_names(out / "data.yaml") == ["pore"]
    assert read_yolo_labels(next(out.glob("*/labels/img_00.txt"))) == [
        YoloBox(0, 0.75, 0.5, 0.5, 1.0)
    ]


def test_convert_unpaired_and_broken_files(tmp_path: Path) -> None:
    images, annotations = make_dataset(tmp_path / "src")
    (images / "img_00.png").unlink()  # annotation without image
    (annotations / "img_01.xml").unlink()  # image without annotation
    (annotations / "img_02.xml").write_text("<annotation>")  # malformed
    (images / "img_04.png").write_bytes(b"not an image")  # unreadable image
    out = tmp_path / "out"
    with pytest.raises(FormatError, match="img_01.png: no annotation"):
        convert_voc_dataset(images, annotations, out)
    assert not out.exists()
    summary = convert_voc_dataset(images, annotations, out, strict=False)
    assert summary["skipped"] == 4
    assert sum(summary["images"].values()) == 6
    kept = {p.stem for p in out.glob("*/images/*")}
    assert kept == {f"img_{i:02d}" for i in (3, 5, 6, 7, 8, 9)}


def test_convert_uses_real_image_size(tmp_path: Path) -> None:
    images, annotations = make_dataset(tmp_path / "src", n=1, size=(40, 20))
    # XML claims half the real size: coordinates must be scaled by real/xml.
    (annotations / "img_00.xml").write_text(voc_xml("img_00.png", 20, 10, [("crack", 1, 1, 6, 6)]))
    out = tmp_path / "out"
    convert_voc_dataset(images, annotations, out, split=(1.0, 0.0, 0.0))
    (box,) = read_yolo_labels(out / "train" / "labels" / "img_00.txt")
    assert box.to_xyxy(40, 20) == pytest.approx((2, 2, 12, 12), abs=1e-4)


def test_object_line_is_recorded(tmp_path: Path) -> None:
    path = tmp_path / "a.xml"
    path.write_text(voc_xml("a.jpg", 200, 100, [("crack", 1, 2, 30, 40)]))
    (obj,) = read_voc(path).objects
    assert obj.line == 5  # compare=False: equality ignores it


def one_box(tmp_path: Path, box: tuple[float, float, float, float]) -> tuple[Path, Path]:
    """One 40x20 image whose single 'crack' box is `box` (xmin, ymin, xmax, ymax)."""
    images, annotations = make_dataset(tmp_path / "src", n=1, size=(40, 20))
    (annotations / "img_00.xml").write_text(voc_xml("img_00.png", 40, 20, [("crack", *box)]))
    return images, annotations


def test_convert_clips_rounding_overshoot_and_counts_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # 0.02 px past a 40 px wide image and 0.01 px before a 20 px high one: float rounding.
    images, annotations = one_box(tmp_path, (2, -0.01, 40.02, 13))
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="defects"):
        summary = convert_voc_dataset(images, annotations, out, split=(1.0, 0.0, 0.0))
    assert summary["clipped"] == 1 and summary["skipped"] == 0 and summary["boxes"] == 1
    (box,) = read_yolo_labels(out / "train" / "labels" / "img_00.txt")
    assert box.to_xyxy(40, 20) == pytest.approx((2, 0, 40, 13), abs=1e-4)
    per_file = [r.getMessage() for r in caplog.records if "clipped 1 box(es)" in r.getMessage()]
    assert len(per_file) == 1 and "img_00.xml" in per_file[0]
    assert "0.02 px of 40x20" in per_file[0]


def test_convert_clips_larger_overshoot_as_before_and_counts_it(tmp_path: Path) -> None:
    # VOC boxes a pixel or two past the border were always clipped; now they are counted too.
    images, annotations = one_box(tmp_path, (2, 3, 42, 13))
    summary = convert_voc_dataset(images, annotations, tmp_path / "out", split=(1.0, 0.0, 0.0))
    assert summary["clipped"] == 1 and summary["skipped"] == 0
    (box,) = read_yolo_labels(tmp_path / "out" / "train" / "labels" / "img_00.txt")
    assert box.to_xyxy(40, 20) == pytest.approx((2, 3, 40, 13), abs=1e-4)


def test_convert_box_outside_the_image_names_file_and_line(tmp_path: Path) -> None:
    images, annotations = one_box(tmp_path, (41, 3, 45, 13))
    out = tmp_path / "out"
    with pytest.raises(FormatError, match=r"img_00\.xml:5: object\[0\] 'crack': .*zero area"):
        convert_voc_dataset(images, annotations, out, class_names=CLASSES)
    assert not out.exists()


def test_convert_skips_truncated_image(tmp_path: Path) -> None:
    images, annotations = make_dataset(tmp_path / "src", n=4)
    cut = images / "img_01.png"
    cut.write_bytes(cut.read_bytes()[:60])  # the header still says 40x20
    with pytest.raises(FormatError, match=r"img_01\.png: cannot decode"):
        convert_voc_dataset(images, annotations, tmp_path / "out")
    summary = convert_voc_dataset(images, annotations, tmp_path / "out", strict=False)
    assert summary["skipped"] == 1 and sum(summary["images"].values()) == 3


@pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WebP")
def test_convert_takes_webp_images(tmp_path: Path) -> None:
    images, annotations = make_dataset(tmp_path / "src", n=2)
    with Image.open(images / "img_00.png") as im:
        im.save(images / "img_00.webp", lossless=True)
    (images / "img_00.png").unlink()
    summary = convert_voc_dataset(images, annotations, tmp_path / "out")
    assert summary["skipped"] == 0 and sum(summary["images"].values()) == 2
    assert len(list((tmp_path / "out").glob("*/images/img_00.webp"))) == 1


def test_convert_failure_keeps_previous_output(tmp_path: Path) -> None:
    images, annotations = make_dataset(tmp_path / "src")
    out = tmp_path / "out"
    convert_voc_dataset(images, annotations, out)
    before = snapshot(out)
    (annotations / "img_05.xml").write_text("<annotation>")
    with pytest.raises(FormatError):
        convert_voc_dataset(images, annotations, out, seed=7)
    assert snapshot(out) == before
    assert sorted(os.listdir(tmp_path)) == ["out", "src"]


def test_convert_refuses_out_dir_containing_sources(tmp_path: Path) -> None:
    images, annotations = make_dataset(tmp_path / "src", n=2)
    with pytest.raises(ValueError, match="must not be or contain"):
        convert_voc_dataset(images, annotations, tmp_path / "src")
    assert len(list(images.iterdir())) == 2


def test_convert_failure_while_writing_keeps_previous_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images, annotations = make_dataset(tmp_path / "src")
    out = tmp_path / "out"
    convert_voc_dataset(images, annotations, out)
    before = snapshot(out)
    calls = []

    def flaky_copy(src: Path, dst: Path) -> None:
        calls.append(src)
        if len(calls) == 4:
            raise OSError("disk full")
        Path(dst).write_bytes(Path(src).read_bytes())

    monkeypatch.setattr("defects.formats.voc.shutil.copy2", flaky_copy)
    with pytest.raises(OSError, match="disk full"):
        convert_voc_dataset(images, annotations, out, seed=3)
    assert snapshot(out) == before
    assert sorted(os.listdir(tmp_path)) == ["out", "src"]
