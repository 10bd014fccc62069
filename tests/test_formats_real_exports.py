"""Imports of what real tools and datasets produce: every CVAT shape, boxes past the border in
CVAT, Datumaro-YOLO and VOC exports (LabelImg, CVAT, Roboflow), and mask datasets shipped one
folder per part. Small hand-written fixtures shaped like each tool's output."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from defects.cli import main
from defects.formats import FormatError, YoloBox, convert_voc_dataset, read_yolo_labels
from defects.formats.cvat import (
    cvat_to_yolo,
    cvat_video_to_yolo,
    import_cvat_yolo_export,
    read_cvat_images_xml,
)
from defects.formats.cvat_shapes import shape_corners
from defects.formats.mask_folder import import_mask_folder, read_index_mask


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def convert_logged(
    caplog: pytest.LogCaptureFixture,
    xml: Path,
    text: str,
    convert: Callable[..., dict],
    *args: Path,
) -> tuple[dict, list[str]]:
    """Write `text` to `xml`, convert it, and return the summary and the warnings it logged."""
    xml.write_text(text)
    with caplog.at_level(logging.WARNING, logger="defects"):
        summary = convert(xml, *args)
    return summary, warnings_of(caplog)


# --------------------------------------------------------------------------- CVAT shapes

# "CVAT for images 1.1" as CVAT 2.x writes a box task where annotators used every tool.
CVAT_ALL_SHAPES = """<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta><task><name>weld line 3</name><mode>annotation</mode><labels>
    <label><name>crack</name><type>any</type><attributes>
      <attribute><name>severity</name><input_type>select</input_type></attribute>
    </attributes></label>
    <label><name>pore</name><type>any</type></label>
    <label><name>ok_frame</name><type>tag</type></label>
    <label><name>seam</name><type>skeleton</type></label>
    <label><name>1</name><type>points</type><parent>seam</parent></label>
    <label><name>2</name><type>points</type><parent>seam</parent></label>
  </labels></task></meta>
  <image id="0" name="a.png" width="100" height="80">
    <box label="crack" source="manual" occluded="0" xtl="10.00" ytl="20.00" xbr="30.00"
      ybr="40.00" z_order="1" group_id="3">
      <attribute name="severity">high</attribute>
    </box>
    <box label="pore" source="manual" occluded="0" xtl="40.00" ytl="40.00" xbr="60.00"
      ybr="50.00" rotation="90.00" z_order="0"/>
    <box label="pore" source="manual" occluded="0" xtl="-4.50" ytl="70.00" xbr="12.00"
      ybr="83.20" z_order="0"/>
    <polygon label="crack" source="manual" occluded="0" points="5.00,5.00;25.00,8.00;15.00,18.50"
      z_order="0" group_id="3"/>
    <polyline label="crack" source="manual" occluded="0" points="50.00,10.00;70.00,30.00"
      z_order="0"/>
    <polyline label="crack" source="manual" occluded="0" points="50.00,60.00;90.00,60.00"
      z_order="0"/>
    <points label="pore" source="manual" occluded="0" points="80.00,5.00;90.00,15.00"
      z_order="0"/>
    <points label="pore" source="manual" occluded="0" points="3.00,3.00" z_order="0"/>
    <ellipse label="pore" source="manual" occluded="0" cx="50.00" cy="20.00" rx="10.00"
      ry="5.00" z_order="0"/>
    <mask label="crack" source="manual" occluded="0" rle="3, 2, 2, 2, 3" left="60" top="60"
      width="3" height="4" z_order="0"/>
    <cuboid label="pore" source="manual" occluded="0" xtl1="1.00" ytl1="2.00" xbl1="1.00"
      ybl1="9.00" xtr1="6.00" ytr1="2.00" xbr1="6.00" ybr1="9.00" xtl2="3.00" ytl2="1.00"
      xbl2="3.00" ybl2="8.00" xtr2="8.00" ytr2="1.00" xbr2="8.00" ybr2="8.00" z_order="0"/>
    <skeleton label="seam" source="manual" z_order="0">
      <points label="1" source="manual" outside="0" occluded="0" points="20.00,50.00"/>
      <points label="2" source="manual" outside="0" occluded="0" points="35.00,62.00"/>
    </skeleton>
    <tag label="ok_frame" source="manual"/>
  </image>
</annotations>
"""
# class ids: crack 0, pore 1, ok_frame 2, seam 3 (skeleton points are no classes)
EXPECTED = [  # (class, xtl, ytl, xbr, ybr) in the order the shapes are listed
    (0, 10, 20, 30, 40),  # box
    (1, 45, 35, 55, 55),  # box rotated by 90 degrees about its centre (50, 45)
    (1, 0, 70, 12, 80),  # box past the left and bottom border: clipped
    (0, 5, 5, 25, 18.5),  # polygon
    (0, 50, 10, 70, 30),  # polyline (the horizontal one has no area: skipped)
    (1, 80, 5, 90, 15),  # points (the single point has no area: skipped)
    (1, 40, 15, 60, 25),  # ellipse
    (0, 60, 61, 63, 63),  # mask: painted pixels in rows 1-2 of the 3x4 patch at (60, 60)
    (1, 1, 1, 8, 9),  # cuboid: both faces
    (3, 20, 50, 35, 62),  # skeleton: its points
]


def test_every_cvat_shape_is_converted_or_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    xml, labels = tmp_path / "annotations.xml", tmp_path / "labels"
    summary, logged = convert_logged(caplog, xml, CVAT_ALL_SHAPES, cvat_to_yolo, labels)
    shapes, clipped = logged  # one line for the shapes, one for the clipping
    assert read_cvat_images_xml(xml).class_names == ["crack", "pore", "ok_frame", "seam"]
    boxes = read_yolo_labels(labels / "a.txt", num_classes=4)
    expected = [YoloBox.from_xyxy(c, x1, y1, x2, y2, 100, 80) for c, x1, y1, x2, y2 in EXPECTED]
    assert [b.class_id for b in boxes] == [b.class_id for b in expected]
    for got, want in zip(boxes, expected, strict=True):
        assert got.to_xyxy(100, 80) == pytest.approx(want.to_xyxy(100, 80), abs=1e-4)
    assert summary["boxes"] == len(EXPECTED) and summary["clipped"] == 1
    assert summary["shapes"] == {
        "converted": {
            "rotated box": 1,
            "polygon": 1,
            "polyline": 1,
            "points": 1,
            "ellipse": 1,
            "mask": 1,
            "cuboid": 1,
            "skeleton": 1,
        },
        "skipped": {"polyline (no area)": 1, "points (no area)": 1, "tag (image-level)": 1},
        "attributes_dropped": {"severity": 1},
        "z_order_dropped": 1,
        "groups_dropped": 2,
    }
    assert shapes.startswith(f"{xml}: converted to boxes: 1 cuboid, 1 ellipse")
    assert "skipped: 1 points (no area), 1 polyline (no area), 1 tag (image-level)" in shapes
    assert "dropped (no YOLO equivalent): 1 attribute value(s) (1 severity)" in shapes
    assert "z_order of 1 shape(s), group_id of 2 shape(s)" in shapes
    assert clipped.startswith(f"{xml}: clipped 1 box(es) to the image, overshoot up to 4.5 px")


def test_boxes_only_skips_other_shapes_and_counts_them(tmp_path: Path) -> None:
    xml = tmp_path / "annotations.xml"
    xml.write_text(CVAT_ALL_SHAPES)
    summary = cvat_to_yolo(xml, tmp_path / "labels", boxes_only=True)
    assert summary["boxes"] == 3  # the three <box> elements, the rotated one converted
    assert summary["shapes"]["skipped"]["polygon (boxes_only)"] == 1
    assert summary["shapes"]["skipped"]["tag (image-level)"] == 1
    main(["cvat_to_yolo", str(xml), str(tmp_path / "cli"), "--boxes_only"])
    assert len(read_yolo_labels(tmp_path / "cli" / "a.txt")) == 3


def test_damaged_shape_geometry_is_still_an_error_naming_the_line(tmp_path: Path) -> None:
    xml = tmp_path / "annotations.xml"
    xml.write_text(CVAT_ALL_SHAPES.replace('rle="3, 2, 2, 2, 3"', 'rle="3, 2"'))
    with pytest.raises(FormatError, match=r"annotations\.xml:\d+: image 'a.png' mask 0: 'rle'"):
        cvat_to_yolo(xml, tmp_path / "labels")
    assert not (tmp_path / "labels").exists()


CVAT_VIDEO = """<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta><task><size>4</size><mode>interpolation</mode><labels>
    <label><name>crack</name></label><label><name>pore</name></label>
  </labels><original_size><width>64</width><height>48</height></original_size></task></meta>
  <track id="0" label="crack" source="manual">
    <polygon frame="0" keyframe="1" outside="0" occluded="0" points="0,0;10,0;10,10" z_order="0"/>
    <polygon frame="2" keyframe="1" outside="0" occluded="0" points="10,10;20,10;20,20" z_order="0">
      <attribute name="severity">low</attribute>
    </polygon>
  </track>
  <track id="1" label="pore" source="manual">
    <box frame="1" keyframe="1" outside="0" occluded="0" xtl="54" ytl="40" xbr="70" ybr="47"/>
    <box frame="3" keyframe="1" outside="1" occluded="0" xtl="54" ytl="40" xbr="70" ybr="47"/>
  </track>
  <tag frame="0" label="pore" source="manual"/>
</annotations>
"""


def test_cvat_video_tracks_of_other_shapes_and_boxes_past_the_border(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    xml = tmp_path / "video.xml"
    summary, logged = convert_logged(
        caplog, xml, CVAT_VIDEO, cvat_video_to_yolo, tmp_path / "labels"
    )
    assert summary["frames"] == 4 and summary["clipped"] == 2  # the pore box on frames 1, 2
    assert summary["shapes"]["converted"] == {"polygon": 2}
    assert summary["shapes"]["skipped"] == {"tag (image-level)": 1}
    assert summary["shapes"]["attributes_dropped"] == {"severity": 1}
    frame1 = read_yolo_labels(tmp_path / "labels" / "frame_000001.txt")
    (middle,) = [b for b in frame1 if b.class_id == 0]
    assert middle.to_xyxy(64, 48) == pytest.approx((5, 5, 15, 15), abs=1e-4)  # interpolated
    pore = [b for b in read_yolo_labels(tmp_path / "labels" / "frame_000002.txt") if b.class_id]
    assert pore[0].to_xyxy(64, 48) == pytest.approx((54, 40, 64, 47), abs=1e-4)  # clipped
    assert read_yolo_labels(tmp_path / "labels" / "frame_000003.txt")[0].class_id == 0
    assert len(logged) == 2  # the shapes line and the clipping line


# --------------------------------------------------------------------------- YOLO 1.1 export


def test_datumaro_yolo_box_past_the_border_is_clipped_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    export = tmp_path / "export"
    (export / "obj_train_data").mkdir(parents=True)
    (export / "obj.names").write_text("crack\npore\n")
    (export / "obj.data").write_text(
        "classes = 2\ntrain = data/train.txt\nnames = data/obj.names\n"
    )
    (export / "train.txt").write_text("data/obj_train_data/frame_000000.jpg\n")
    Image.new("RGB", (200, 100)).save(export / "obj_train_data" / "frame_000000.jpg")
    (export / "obj_train_data" / "frame_000000.txt").write_text(
        "0 0.500000 0.500000 1.050000 0.300000\n1 0.200000 0.300000 0.100000 0.100000\n"
    )
    with caplog.at_level(logging.WARNING, logger="defects"):
        summary = import_cvat_yolo_export(export, tmp_path / "out")
    assert summary["boxes"] == 2 and summary["clipped"] == 1
    wide, small = read_yolo_labels(tmp_path / "out" / "labels" / "frame_000000.txt", 2)
    assert (wide.cx, wide.w) == pytest.approx((0.5, 1.0)) and (wide.cy, wide.h) == (0.5, 0.3)
    assert small == YoloBox(1, 0.2, 0.3, 0.1, 0.1)
    (warning,) = warnings_of(caplog)
    assert "frame_000000.txt: clipped 1 box(es) to the image" in warning and "line(s) 1" in warning
    (export / "obj_train_data" / "frame_000000.txt").write_text("0 3.2 0.5 0.2 0.2\n")
    with pytest.raises(FormatError, match=r"frame_000000\.txt:1: cx=3\.2 is outside"):
        import_cvat_yolo_export(export, tmp_path / "out2")  # pixel numbers: still an error


# --------------------------------------------------------------------------- VOC exports


def labelimg_layout(
    filename: str, path: str, database: str, objects: list[tuple[str, ...]], extra: str = ""
) -> str:
    """VOC in LabelImg's tab-indented layout, which Roboflow's VOC export copies (adding
    `extra` tags such as <occluded> to each object). Objects: (name, truncated, difficult,
    xmin, ymin, xmax, ymax) as the tool writes the text."""
    body = "".join(
        f"\t<object>\n\t\t<name>{name}</name>\n\t\t<pose>Unspecified</pose>\n"
        f"\t\t<truncated>{truncated}</truncated>\n\t\t<difficult>{difficult}</difficult>\n"
        f"{extra}\t\t<bndbox>\n\t\t\t<xmin>{x1}</xmin>\n\t\t\t<ymin>{y1}</ymin>\n"
        f"\t\t\t<xmax>{x2}</xmax>\n\t\t\t<ymax>{y2}</ymax>\n\t\t</bndbox>\n\t</object>\n"
        for name, truncated, difficult, x1, y1, x2, y2 in objects
    )
    return (
        f"<annotation>\n\t<folder>images</folder>\n\t<filename>{filename}</filename>\n"
        f"\t<path>{path}</path>\n\t<source>\n\t\t<database>{database}</database>\n"
        "\t</source>\n\t<size>\n\t\t<width>40</width>\n\t\t<height>20</height>\n"
        f"\t\t<depth>3</depth>\n\t</size>\n\t<segmented>0</segmented>\n{body}</annotation>\n"
    )


LABELIMG = labelimg_layout(  # integer pixels; a box dragged past the right edge
    "labelimg.jpg",
    "C:\\Users\\qa\\weld\\images\\labelimg.jpg",
    "Unknown",
    [("crack", "1", "0", "1", "1", "41", "12"), ("pore", "0", "1", "20", "5", "30", "15")],
)
CVAT_VOC = """<?xml version="1.0" ?>
<annotation>
  <folder></folder>
  <filename>cvat.png</filename>
  <source>
    <database>Unknown</database>
    <annotation>Unknown</annotation>
    <image>Unknown</image>
  </source>
  <size>
    <width>40</width>
    <height>20</height>
    <depth></depth>
  </size>
  <segmented>0</segmented>
  <object>
    <name>crack</name>
    <truncated>0</truncated>
    <occluded>0</occluded>
    <difficult>0</difficult>
    <bndbox>
      <xmin>-2.35</xmin>
      <ymin>3.5</ymin>
      <xmax>12.25</xmax>
      <ymax>20.61</ymax>
    </bndbox>
    <attributes>
      <attribute>
        <name>rotation</name>
        <value>0.0</value>
      </attribute>
    </attributes>
  </object>
</annotation>
"""
ROBOFLOW = labelimg_layout(  # float pixels, past the left and bottom edges
    "roboflow_jpg.rf.5c3e9a0d1b.jpg",
    "roboflow_jpg.rf.5c3e9a0d1b.jpg",
    "roboflow.com",
    [("pore", "0", "0", "-0.5", "2.5", "10.5", "21")],
    extra="\t\t<occluded>0</occluded>\n",
)


def test_voc_from_labelimg_cvat_and_roboflow_clips_and_reports(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    images, annotations = tmp_path / "images", tmp_path / "annotations"
    images.mkdir()
    annotations.mkdir()
    for stem, text, suffix in (
        ("labelimg", LABELIMG, ".jpg"),
        ("cvat", CVAT_VOC, ".png"),
        ("roboflow", ROBOFLOW, ".jpg"),
    ):
        Image.new("RGB", (40, 20), (90, 90, 90)).save(images / f"{stem}{suffix}")
        (annotations / f"{stem}.xml").write_text(text)
    with caplog.at_level(logging.WARNING, logger="defects"):
        summary = convert_voc_dataset(images, annotations, tmp_path / "out", split=(1, 0, 0))
    assert summary["classes"] == ["crack", "pore"] and summary["skipped"] == 0
    assert summary["boxes"] == 4 and summary["clipped"] == 3  # difficult boxes are kept
    labels = tmp_path / "out" / "train" / "labels"
    expected = {
        "labelimg": [(0, 1, 1, 40, 12), (1, 20, 5, 30, 15)],
        "cvat": [(0, 0, 3.5, 12.25, 20)],
        "roboflow": [(1, 0, 2.5, 10.5, 20)],
    }
    for stem, boxes in expected.items():
        got = read_yolo_labels(labels / f"{stem}.txt", num_classes=2)
        assert [(b.class_id, *b.to_xyxy(40, 20)) for b in got] == [pytest.approx(b) for b in boxes]
    messages = warnings_of(caplog)
    assert sum("clipped 1 box(es) to the image" in m for m in messages) == 3
    assert "3 boxes clipped to the image in 3 files" in messages[-1]


# --------------------------------------------------------------------------- mask folders


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def kolektor_like(root: Path, parts: int, per_part: int, defective: set[tuple[int, int]]) -> Path:
    """kosNN/PartK.jpg + kosNN/PartK_label.bmp, every mask present, most of them empty."""
    for p in range(1, parts + 1):
        for k in range(per_part):
            folder = root / f"kos{p:02d}"
            _save(folder / f"Part{k}.jpg", np.full((12, 8), 60 + k, np.uint8))
            mask = np.zeros((12, 8), np.uint8)
            if (p, k) in defective:
                mask[2:6, 3:5] = 255
            _save(folder / f"Part{k}_label.bmp", mask)
    return root


def test_one_folder_per_part_imports_recursively_with_unique_names(tmp_path: Path) -> None:
    src = kolektor_like(tmp_path / "src", parts=3, per_part=4, defective={(1, 0), (3, 2)})
    summary = import_mask_folder(
        src, tmp_path / "out", {"defect": "."}, mask_suffix="_label.bmp", recursive=True
    )
    assert summary["per_class"] == {"defect": 2} and summary["defect_free"] == 10
    names = sorted(p.name for p in (tmp_path / "out").glob("*/images/*"))
    assert len(names) == 12 and "defect__kos01_Part0.jpg" in names
    (mask,) = (tmp_path / "out").glob("*/masks/defect__kos03_Part2.png")
    assert int(read_index_mask(mask, 1).sum()) == 8
    with pytest.raises(FormatError, match="no usable images"):
        import_mask_folder(src, tmp_path / "flat", {"defect": "."}, mask_suffix="_label.bmp")


def test_recursive_names_that_collide_are_an_error_naming_both(tmp_path: Path) -> None:
    src = kolektor_like(tmp_path / "src", parts=1, per_part=1, defective={(1, 0)})
    _save(src / "kos01_Part0.jpg", np.full((12, 8), 9, np.uint8))
    _save(src / "kos01_Part0_label.bmp", np.zeros((12, 8), np.uint8))
    with pytest.raises(FormatError, match=r"kos01/Part0\.jpg: output name defect__kos01_Part0 "):
        import_mask_folder(
            src, tmp_path / "out", {"defect": "."}, mask_suffix="_label.bmp", recursive=True
        )


def test_hundreds_of_clean_images_give_one_summary_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = kolektor_like(tmp_path / "src", parts=25, per_part=8, defective={(2, 3)})
    with caplog.at_level(logging.INFO, logger="defects"):
        summary = import_mask_folder(
            src, tmp_path / "out", {"defect": "."}, mask_suffix="_label.bmp", recursive=True
        )
    assert summary["empty_masks"] == 199 and summary["per_class"] == {"defect": 1}
    (line,) = warnings_of(caplog)
    assert line.startswith("import_mask_folder: 199 mask(s) with no pixel >= 128")
    assert "kos01/Part0_label.bmp, " in line and line.endswith(", ...")


def test_recursive_option_on_the_command_line(tmp_path: Path) -> None:
    src = kolektor_like(tmp_path / "src", parts=2, per_part=2, defective={(1, 1), (2, 0)})
    main(
        [
            "import_masks", str(src), str(tmp_path / "out"), "--classes", "defect=.",
            "--mask_suffix", "_label.bmp", "--recursive",
        ]
    )  # fmt: skip
    assert len(list((tmp_path / "out").glob("*/images/defect__kos0*_Part*.jpg"))) == 4


def test_mask_rle_as_in_cvat_xml_docs() -> None:
    """The <mask> example of CVAT's XML format page: a 13x15 disc at (707, 888), its run
    lengths alternating background and foreground row by row over the patch."""
    rle = "3, 5, 7, 7, 5, 9, 3, 11, 2, 11, 2, 12, 1, 12, 1, 26, 1, 12, 1, 12, 2, 11, 3, 9, 5, 7, "
    rle += "7, 5, 3"
    attrs = {"rle": rle, "left": "707", "top": "888", "width": "13", "height": "15"}
    assert shape_corners(ET.Element("mask", attrs)) == (707, 888, 720, 903)
    assert shape_corners(ET.Element("mask", attrs | {"rle": "195"})) is None  # nothing painted
