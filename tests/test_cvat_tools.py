"""The CVAT labelling toolkit: video frames and chunks, CVAT XML <-> YOLO both ways, CVAT's
YOLO 1.1 export, video tracks, pre-labelling with a bundle, and their command lines."""

from __future__ import annotations

import csv
import random
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from defects.cli import main
from defects.formats.cvat import (
    cvat_to_yolo,
    cvat_video_to_yolo,
    import_cvat_yolo_export,
    read_cvat_images_xml,
    read_cvat_video_xml,
    read_cvat_yolo_export,
    write_cvat_images_xml,
    yolo_to_cvat,
)
from defects.formats.errors import FormatError
from defects.formats.yolo import (
    YoloBox,
    parse_yolo_line,
    read_class_names,
    read_yolo_labels,
    write_class_names,
    write_yolo_labels,
)
from defects.video import read_video_info, write_video
from defects.video.chunks import cut_chunks, extract_frames

NAMES = ["crack", "porosity", "slag"]
SIZES = {"a.png": (64, 48), "b.png": (101, 77), "c.png": (37, 53), "d.png": (640, 480)}


# --------------------------------------------------------------------------- helpers


def save_image(path: Path, width: int, height: int, value: int = 40) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width), value, np.uint8)).save(path)
    return path


def random_boxes(rng: random.Random, width: int, height: int, n: int) -> list[YoloBox]:
    boxes = []
    for _ in range(n):
        x1, y1 = rng.uniform(0, width - 5), rng.uniform(0, height - 5)
        x2, y2 = rng.uniform(x1 + 2, width), rng.uniform(y1 + 2, height)
        boxes.append(YoloBox.from_xyxy(rng.randrange(3), x1, y1, x2, y2, width, height))
    boxes.append(YoloBox.from_xyxy(0, 0, 0, width, height, width, height))  # edge to edge
    return [parse_yolo_line(b.to_line()) for b in boxes]  # as a label file holds them


@pytest.fixture
def yolo_split(tmp_path: Path) -> Path:
    """data.yaml + train/{images,labels}: boxes, an empty label file, an image without one."""
    root = tmp_path / "ds"
    write_class_names(root / "data.yaml", NAMES)
    rng = random.Random(0)
    for i, (name, (w, h)) in enumerate(SIZES.items()):
        save_image(root / "train" / "images" / name, w, h)
        label = root / "train" / "labels" / f"{Path(name).stem}.txt"
        if name == "c.png":
            continue  # no label file: defect-free
        boxes = [] if name == "b.png" else random_boxes(rng, w, h, 3 + i)
        write_yolo_labels(label, boxes)
    return root / "train"


def xml_boxes(path: Path) -> dict[str, list[dict[str, str]]]:
    root = ET.parse(path).getroot()
    return {
        img.get("name"): [dict(b.attrib) for b in img.iter("box")] for img in root.iter("image")
    }


CVAT_IMAGES = """<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta><task><name>t</name><labels>
    <label><name>crack</name></label><label><name>porosity</name></label>
    <label><name>slag</name></label>
  </labels></task></meta>
  <image id="0" name="a.png" width="64" height="48">
    <box label="porosity" occluded="0" xtl="0.00" ytl="0.00" xbr="64.00" ybr="48.00" z_order="0"/>
    <box label="crack" occluded="1" xtl="3.17" ytl="5.93" xbr="20.41" ybr="47.99" z_order="0"/>
  </image>
  <image id="1" name="b.png" width="101" height="77"/>
  <image id="2" name="d.png" width="640" height="480">
    <box label="slag" occluded="0" xtl="100.01" ytl="200.99" xbr="639.37" ybr="333.33" z_order="0"/>
    <polygon label="slag" points="1,1;5,5;1,5" occluded="0" z_order="0"/>
  </image>
</annotations>
"""


# --------------------------------------------------------------------------- CVAT for images


def test_yolo_to_cvat_to_yolo_agrees_to_cvat_precision(yolo_split: Path, tmp_path: Path) -> None:
    xml = yolo_to_cvat(yolo_split, None, None, tmp_path / "annotations.xml")
    out = tmp_path / "back"
    summary = cvat_to_yolo(xml, out / "labels", out / "data.yaml")
    assert summary["images"] == len(SIZES)
    assert read_class_names(out / "data.yaml") == NAMES
    assert (out / "labels" / "c.txt").read_text() == ""  # defect-free is explicit now
    for name, (w, h) in SIZES.items():
        stem = Path(name).stem
        before = read_yolo_labels(yolo_split / "labels" / f"{stem}.txt")
        after = read_yolo_labels(out / "labels" / f"{stem}.txt")
        assert [b.class_id for b in before] == [b.class_id for b in after]
        for b, a in zip(before, after, strict=True):
            for u, v, size in zip(b.to_xyxy(1, 1), a.to_xyxy(1, 1), (w, h, w, h), strict=True):
                assert abs(u - v) <= 0.005 / size + 1e-6


def test_cvat_to_yolo_to_cvat_gives_identical_boxes(tmp_path: Path) -> None:
    source = tmp_path / "in.xml"
    source.write_text(CVAT_IMAGES)
    split = tmp_path / "split"
    for name, (w, h) in SIZES.items():
        if name != "c.png":
            save_image(split / "images" / name, w, h)
    cvat_to_yolo(source, split / "labels", split / "data.yaml", boxes_only=True)  # no polygon
    again = yolo_to_cvat(split, None, None, tmp_path / "again.xml")
    keys = ("label", "xtl", "ytl", "xbr", "ybr")
    first, second = xml_boxes(source), xml_boxes(again)
    assert set(first) == set(second)
    for name in first:
        assert [{k: b[k] for k in keys} for b in first[name]] == [
            {k: b[k] for k in keys} for b in second[name]
        ]
    assert read_cvat_images_xml(again).class_names == NAMES


def test_written_xml_has_cvat_shape(tmp_path: Path) -> None:
    box = YoloBox(1, 0.5, 0.5, 0.25, 0.5)
    path = write_cvat_images_xml(tmp_path / "x.xml", [("frame_000001.jpg", 64, 48, [box])], NAMES)
    root = ET.parse(path).getroot()
    assert root.tag == "annotations" and root.findtext("version") == "1.1"
    assert [n.text for n in root.findall("meta/task/labels/label/name")] == NAMES
    image = root.find("image")
    assert image is not None and image.attrib == {
        "id": "0",
        "name": "frame_000001.jpg",
        "width": "64",
        "height": "48",
    }
    attrs = image.find("box").attrib  # type: ignore[union-attr]
    assert attrs["label"] == "porosity" and attrs["occluded"] == "0" and attrs["z_order"] == "0"
    assert (attrs["xtl"], attrs["ytl"], attrs["xbr"], attrs["ybr"]) == (
        "24.00",
        "12.00",
        "40.00",
        "36.00",
    )
    parsed = read_cvat_images_xml(path).images[0]
    assert parsed.boxes[0].to_yolo(64, 48) == box


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ('label="crack"', 'label="rust"', "image 'a.png' box 1: unknown label 'rust'"),
        ('xtl="3.17"', "", "image 'a.png' box 1: missing attribute 'xtl'"),
        ('ytl="5.93"', 'ytl="abc"', "box 1: 'ytl' is not a finite number: 'abc'"),
        ('xbr="20.41"', 'xbr="1.00"', "image 'a.png' box 1: empty or inverted box"),
        ('width="64" height="48"', 'width="64"', "image 'a.png': missing attribute 'height'"),
        ('<image id="1" name="b.png"', '<image id="1" name="a.png"', "'a.png' appears twice"),
    ],
)
def test_bad_cvat_xml_names_file_image_and_box(
    tmp_path: Path, old: str, new: str, needle: str
) -> None:
    assert old in CVAT_IMAGES
    text = CVAT_IMAGES.replace(old, new, 1)
    path = tmp_path / "bad.xml"
    path.write_text(text)
    with pytest.raises(FormatError, match="bad.xml") as info:
        read_cvat_images_xml(path)
    assert needle in str(info.value)
    assert info.value.line is not None
    with pytest.raises(FormatError):
        cvat_to_yolo(path, tmp_path / "labels")
    assert not (tmp_path / "labels").exists()  # nothing written from a bad file


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("<annotations><image", "malformed XML"),
        ("<annotation/>", "expected <annotations>"),
        ("<annotations><version>1.1</version></annotations>", "no class names"),
    ],
)
def test_broken_xml_files_are_format_errors(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "broken.xml"
    path.write_text(text)
    with pytest.raises(FormatError, match=needle) as info:
        read_cvat_images_xml(path)
    assert "broken.xml" in str(info.value)


# --------------------------------------------------------------------------- CVAT for video

VIDEO = """<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta><task><size>30</size><mode>interpolation</mode>
    <start_frame>0</start_frame><stop_frame>29</stop_frame>
    <labels><label><name>crack</name></label><label><name>slag</name></label></labels>
    <original_size><width>100</width><height>50</height></original_size>
  </task></meta>
  <track id="0" label="crack" source="manual">
    <box frame="0" outside="0" occluded="0" keyframe="1" xtl="0.00" ytl="0.00" xbr="10.00" ybr="10.00" z_order="0"/>
    <box frame="10" outside="0" occluded="0" keyframe="1" xtl="20.00" ytl="10.00" xbr="40.00" ybr="30.00" z_order="0"/>
    <box frame="15" outside="1" occluded="0" keyframe="1" xtl="20.00" ytl="10.00" xbr="40.00" ybr="30.00" z_order="0"/>
    <box frame="20" outside="0" occluded="0" keyframe="1" xtl="50.00" ytl="20.00" xbr="60.00" ybr="40.00" z_order="0"/>
  </track>
  <track id="1" label="slag" source="manual">
    <box frame="5" outside="0" occluded="0" keyframe="1" xtl="1.00" ytl="1.00" xbr="3.00" ybr="3.00" z_order="0"/>
    <box frame="8" outside="1" occluded="0" keyframe="1" xtl="1.00" ytl="1.00" xbr="3.00" ybr="3.00" z_order="0"/>
  </track>
</annotations>
"""  # noqa: E501


ORIGINAL_SIZE = "<original_size><width>100</width><height>50</height></original_size>"


def corners(video: Any, frame: int, track: int) -> tuple[float, ...] | None:
    boxes = [b for b in video.frames[frame] if b.track_id == track]
    assert len(boxes) <= 1
    return (boxes[0].xtl, boxes[0].ytl, boxes[0].xbr, boxes[0].ybr) if boxes else None


def test_video_tracks_interpolate_between_keyframes_and_stop_when_outside(tmp_path: Path) -> None:
    path = tmp_path / "video.xml"
    path.write_text(VIDEO)
    video = read_cvat_video_xml(path)
    assert (video.width, video.height, video.frame_count) == (100, 50, 30)
    assert video.class_names == ["crack", "slag"]
    assert corners(video, 0, 0) == (0, 0, 10, 10)
    assert corners(video, 5, 0) == pytest.approx((10, 5, 25, 20))  # halfway
    assert corners(video, 10, 0) == (20, 10, 40, 30)
    assert corners(video, 12, 0) == pytest.approx((20, 10, 40, 30))  # towards the outside box
    assert all(corners(video, f, 0) is None for f in range(15, 20))  # outside
    assert all(corners(video, f, 0) == (50, 20, 60, 40) for f in range(20, 30))  # held to end
    assert [f for f in range(30) if corners(video, f, 1)] == [5, 6, 7]
    assert all(b.label == "slag" and b.class_id == 1 for b in video.frames[6] if b.track_id == 1)


def test_video_with_every_frame_listed_reads_the_same(tmp_path: Path) -> None:
    """CVAT exports interpolated frames too (keyframe="0"); they are the same boxes."""
    sparse = tmp_path / "sparse.xml"
    sparse.write_text(VIDEO)
    video = read_cvat_video_xml(sparse)
    rows = []
    for frame in range(1, 10):
        x = corners(video, frame, 0)
        assert x is not None
        rows.append(
            f'<box frame="{frame}" outside="0" occluded="0" keyframe="0" xtl="{x[0]:.2f}" '
            f'ytl="{x[1]:.2f}" xbr="{x[2]:.2f}" ybr="{x[3]:.2f}" z_order="0"/>'
        )
    dense = tmp_path / "dense.xml"
    marker = '<box frame="10" '
    dense.write_text(VIDEO.replace(marker, "\n".join(rows) + "\n" + marker, 1))
    again = read_cvat_video_xml(dense)
    for frame in range(30):
        assert corners(again, frame, 0) == pytest.approx(corners(video, frame, 0))


def test_cvat_video_to_yolo_writes_every_frame(tmp_path: Path) -> None:
    path = tmp_path / "video.xml"
    path.write_text(VIDEO)
    summary = cvat_video_to_yolo(path, tmp_path / "labels", "line3_{:06d}", tmp_path / "d.yaml")
    files = sorted(p.name for p in (tmp_path / "labels").iterdir())
    assert files == [f"line3_{f:06d}.txt" for f in range(30)] and summary["frames"] == 30
    assert read_yolo_labels(tmp_path / "labels" / "line3_000016.txt") == []
    (box,) = read_yolo_labels(tmp_path / "labels" / "line3_000025.txt")
    assert box.to_xyxy(100, 50) == pytest.approx((50, 20, 60, 40), abs=1e-4)
    assert len(read_yolo_labels(tmp_path / "labels" / "line3_000006.txt")) == 2
    assert read_class_names(tmp_path / "d.yaml") == ["crack", "slag"]
    # and back: the frames written as CVAT for images carry the same pixel boxes
    video = read_cvat_video_xml(path)
    items = [
        (
            f"line3_{f:06d}.png",
            100,
            50,
            read_yolo_labels(tmp_path / "labels" / f"line3_{f:06d}.txt"),
        )
        for f in range(30)
    ]
    images = read_cvat_images_xml(write_cvat_images_xml(tmp_path / "i.xml", items, NAMES[:2]))
    for image, frame in zip(images.images, range(30), strict=True):
        want = sorted((b.xtl, b.ytl, b.xbr, b.ybr) for b in video.frames[frame])
        got = sorted((b.xtl, b.ytl, b.xbr, b.ybr) for b in image.boxes)
        assert len(got) == len(want)
        np.testing.assert_allclose(np.reshape(got, -1), np.reshape(want, -1), atol=0.005)


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        ((ORIGINAL_SIZE, ""), "missing <original_size>"),
        (('<box frame="10" ', '<box frame="0" '), "track 0 frame 0: two shapes on one frame"),
        (('<box frame="20" ', '<box frame="31" '), "beyond the task's last frame 29"),
        (('label="slag" source', 'label="rust" source'), "unknown label 'rust'"),
        (('outside="1"', 'outside="maybe"'), "'outside' must be 0 or 1"),
    ],
)  # fmt: skip
def test_bad_video_xml_is_a_format_error(
    tmp_path: Path, edit: tuple[str, str], needle: str
) -> None:
    path = tmp_path / "video.xml"
    path.write_text(VIDEO.replace(*edit, 1))
    with pytest.raises(FormatError, match="video.xml") as info:
        read_cvat_video_xml(path)
    assert needle in str(info.value)


# --------------------------------------------------------------------------- YOLO 1.1 export


def make_yolo_export(folder: Path, with_images: bool = True) -> dict[str, list[YoloBox]]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "obj.names").write_text("crack\nporosity\n")
    (folder / "obj.data").write_text(
        "classes = 2\ntrain = data/train.txt\nnames = data/obj.names\nbackup = backup/\n"
    )
    data = folder / "obj_train_data"
    labels = {
        "frame_000000": [YoloBox(0, 0.5, 0.5, 0.2, 0.4), YoloBox(1, 0.1, 0.1, 0.1, 0.1)],
        "frame_000001": [],
        "frame_000002": [YoloBox(1, 0.75, 0.25, 0.5, 0.5)],
    }
    for stem, boxes in labels.items():
        write_yolo_labels(data / f"{stem}.txt", boxes)
        if with_images:
            save_image(data / f"{stem}.png", 40, 30)
    (folder / "train.txt").write_text("".join(f"data/obj_train_data/{s}.png\n" for s in labels))
    return labels


def test_cvat_yolo_export_reads_and_imports_into_our_layout(tmp_path: Path) -> None:
    labels = make_yolo_export(tmp_path / "export")
    export = read_cvat_yolo_export(tmp_path / "export")
    assert export.class_names == ["crack", "porosity"]
    assert [f.name for f in export.frames] == [f"{s}.png" for s in labels]
    assert all(f.subset == "train" and f.image is not None for f in export.frames)
    summary = import_cvat_yolo_export(tmp_path / "export", tmp_path / "ds")
    assert summary["frames"] == 3 and summary["images"] == 3
    assert read_class_names(tmp_path / "ds" / "data.yaml") == ["crack", "porosity"]
    for stem, boxes in labels.items():
        assert read_yolo_labels(tmp_path / "ds" / "labels" / f"{stem}.txt") == boxes
        original = tmp_path / "export" / "obj_train_data" / f"{stem}.png"
        assert (tmp_path / "ds" / "images" / f"{stem}.png").read_bytes() == original.read_bytes()
    # and on to CVAT for images and back, still the same boxes
    xml = yolo_to_cvat(tmp_path / "ds", None, None, tmp_path / "a.xml")
    cvat_to_yolo(xml, tmp_path / "again")
    for stem, boxes in labels.items():
        again = read_yolo_labels(tmp_path / "again" / f"{stem}.txt")
        assert len(again) == len(boxes)
        np.testing.assert_allclose(
            np.reshape([b.to_xyxy(40, 30) for b in again], -1),
            np.reshape([b.to_xyxy(40, 30) for b in boxes], -1),
            atol=0.005,
        )


def test_cvat_yolo_export_without_images_gives_labels(tmp_path: Path) -> None:
    labels = make_yolo_export(tmp_path / "export", with_images=False)
    export = read_cvat_yolo_export(tmp_path / "export")
    assert all(f.image is None for f in export.frames)
    assert {Path(f.name).stem: f.boxes for f in export.frames} == labels
    import_cvat_yolo_export(tmp_path / "export", tmp_path / "ds")
    assert not (tmp_path / "ds" / "images").exists()
    assert len(list((tmp_path / "ds" / "labels").glob("*.txt"))) == 3


@pytest.mark.parametrize(
    ("file", "text", "needle"),
    [
        ("obj.data", "classes = 3\n", "classes = 3 but obj.names has 2"),
        ("obj.names", "crack\n\nporosity\n", "obj.names:2: empty class name"),
        ("obj_train_data/frame_000002.txt", "5 0.5 0.5 0.1 0.1\n", "out of range"),
    ],
)
def test_bad_cvat_yolo_export_names_the_file(
    tmp_path: Path, file: str, text: str, needle: str
) -> None:
    make_yolo_export(tmp_path / "export")
    (tmp_path / "export" / file).write_text(text)
    with pytest.raises(FormatError, match=needle):
        read_cvat_yolo_export(tmp_path / "export")
    with pytest.raises(FormatError, match="not a CVAT YOLO 1.1 export"):
        read_cvat_yolo_export(tmp_path)


# --------------------------------------------------------------------------- video chunks


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s at 10 fps, 64x48; frame i has brightness 8 * i, so frames can be told apart."""
    frames = [np.full((48, 64, 3), 8 * i, np.uint8) for i in range(30)]
    return write_video(tmp_path_factory.mktemp("video") / "line3.mp4", frames, 10)


def read_manifest(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize(
    ("seconds", "ranges"),
    [(1.0, [(0, 9), (10, 19), (20, 29)]), (1.3, [(0, 12), (13, 25), (26, 29)]), (5, [(0, 29)])],
)
def test_chunks_cover_the_video_exactly(
    video: Path, tmp_path: Path, seconds: float, ranges: Sequence[tuple[int, int]]
) -> None:
    rows = cut_chunks(video, tmp_path / "chunks", seconds)
    assert [(r["start_frame"], r["end_frame"]) for r in rows] == list(ranges)
    manifest = read_manifest(tmp_path / "chunks" / "manifest.csv")
    assert [(int(r["start_frame"]), int(r["end_frame"])) for r in manifest] == list(ranges)
    assert float(manifest[-1]["end_seconds"]) == pytest.approx(3.0)
    assert float(manifest[0]["start_seconds"]) == 0.0 and float(manifest[0]["fps"]) == 10
    for row in manifest:
        info = read_video_info(tmp_path / "chunks" / row["file"])
        assert info.frame_count == int(row["frames"]) and info.fps == pytest.approx(10)
        assert row["source"] == str(video)


def test_chunks_of_another_video_keep_the_manifest_rows(video: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.mp4"
    other.write_bytes(video.read_bytes())
    cut_chunks(video, tmp_path / "chunks", 1)
    cut_chunks(other, tmp_path / "chunks", 2)
    sources = [r["source"] for r in read_manifest(tmp_path / "chunks" / "manifest.csv")]
    assert sources == [str(video)] * 3 + [str(other)] * 2


def test_extract_frames_names_frames_by_their_index(video: Path, tmp_path: Path) -> None:
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "keep.txt").write_text("user file")
    written = extract_frames(video, tmp_path / "frames", every_k=10)
    assert [p.name for p in written] == ["line3_000000.jpg", "line3_000010.jpg", "line3_000020.jpg"]
    assert (tmp_path / "frames" / "keep.txt").read_text() == "user file"
    pixels = np.asarray(Image.open(written[1]))
    assert pixels.shape == (48, 64, 3) and abs(float(pixels.mean()) - 80) < 6
    seconds = extract_frames(video, tmp_path / "s", every_seconds=1.5, prefix="x", ext="png")
    assert [p.name for p in seconds] == ["x_000000.png", "x_000015.png"]


# --------------------------------------------------------------------------- pre-labelling


def make_box_bundle(path: Path) -> Path:
    """A bundle of a tiny registered box kind: it 'detects' the bright region of an image
    (score 0.9) plus a faint whole-image box (score 0.1) the confidence cut must drop."""
    import torch
    from torch import nn

    from defects.bundle import save_bundle
    from defects.kinds import register
    from defects.kinds.base import bundle_meta
    from defects.kinds.detection import BoxKind, DetectionPredictor

    class Bright(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.level = nn.Parameter(torch.tensor(0.5))

        def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
            outs = []
            for image in images:
                ys, xs = torch.nonzero(image[0] > self.level, as_tuple=True)
                h, w = image.shape[1:]
                boxes = [[0.0, 0.0, float(w), float(h)]]
                scores, labels = [0.1], [1]
                if len(xs):
                    boxes.insert(0, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
                    scores.insert(0, 0.9)
                    labels.insert(0, 2)
                outs.append(
                    {
                        "boxes": torch.tensor(boxes, dtype=torch.float32),
                        "scores": torch.tensor(scores),
                        "labels": torch.tensor(labels),
                    }
                )
            return outs

    class BrightKind(BoxKind):
        name = "toy_bright_boxes"

        def bundle_from_module(self, module: Any, cfg: Any) -> dict[str, Any]:
            raise NotImplementedError

        def build_network(self, kwargs: dict[str, Any]) -> nn.Module:
            return Bright()

        def predictor(self, bundle: dict[str, Any], device: str = "cpu") -> DetectionPredictor:
            return DetectionPredictor(bundle_meta(bundle), self.network(bundle))

        def export_graphs(self, bundle: dict[str, Any], folder: Path) -> dict[str, Any]:
            raise NotImplementedError

        def onnx_predictor(self, folder: Path, manifest: dict[str, Any], threads: int = 0):
            raise NotImplementedError

    register(BrightKind())
    return save_bundle(
        path,
        task="weld",
        model={"kind": "toy_bright_boxes", "kwargs": {}},
        state_dict=Bright().state_dict(),
        class_names=NAMES,
        thresholds={"score": 0.5},
        input={"channels": 1},
    )


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three frames: a bright patch at a known place on two, nothing on the third."""
    folder = tmp_path_factory.mktemp("frames")
    for name, patch in (("f_000000.png", (10, 5, 30, 20)), ("f_000001.png", (0, 30, 64, 48))):
        pixels = np.full((48, 64), 20, np.uint8)
        x1, y1, x2, y2 = patch
        pixels[y1:y2, x1:x2] = 250
        Image.fromarray(pixels).save(folder / name)
    save_image(folder / "f_000002.png", 64, 48, value=20)
    return folder


def test_prelabel_writes_yolo_labels_and_cvat_xml(frames: Path, tmp_path: Path) -> None:
    from defects.prelabel import prelabel

    bundle = make_box_bundle(tmp_path / "bundle.pt")
    summary = prelabel(bundle, frames, tmp_path / "out", confidence=0.25)
    out = tmp_path / "out"
    assert summary["images"] == 3 and summary["boxes"] == 2
    assert read_class_names(out / "data.yaml") == NAMES
    (box,) = read_yolo_labels(out / "labels" / "f_000000.txt")
    assert box.class_id == 1 and box.to_xyxy(64, 48) == pytest.approx((10, 5, 30, 20), abs=1e-4)
    assert read_yolo_labels(out / "labels" / "f_000002.txt") == []
    cvat = read_cvat_images_xml(out / "annotations.xml")
    assert [i.name for i in cvat.images] == ["f_000000.png", "f_000001.png", "f_000002.png"]
    assert [(b.label, b.xtl, b.ytl, b.xbr, b.ybr) for b in cvat.images[1].boxes] == [
        ("porosity", 0, 30, 64, 48)
    ]
    low = prelabel(bundle, frames, tmp_path / "low", confidence=0.05)
    assert low["boxes"] == 5  # the faint boxes pass a lower cut


# --------------------------------------------------------------------------- command line


def test_commands_run_through_the_cli(
    video: Path, frames: Path, yolo_split: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    main(["extract_frames", str(video), str(tmp_path / "frames"), "--every_k", "15"])
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == [
        "line3_000000.jpg",
        "line3_000015.jpg",
    ]
    main(["cut_chunks", str(video), str(tmp_path / "chunks"), "--seconds", "1.5"])
    assert len(read_manifest(tmp_path / "chunks" / "manifest.csv")) == 2
    xml = tmp_path / "a.xml"
    main(["yolo_to_cvat", str(yolo_split), str(xml)])
    main(
        [
            "cvat_to_yolo",
            str(xml),
            str(tmp_path / "labels"),
            "--data_yaml",
            str(tmp_path / "d.yaml"),
        ]
    )
    assert len(list((tmp_path / "labels").glob("*.txt"))) == len(SIZES)
    (tmp_path / "v.xml").write_text(VIDEO)
    main(["cvat_video_to_yolo", str(tmp_path / "v.xml"), str(tmp_path / "vl")])
    assert len(list((tmp_path / "vl").glob("frame_*.txt"))) == 30
    make_yolo_export(tmp_path / "export")
    main(["import_cvat_yolo", str(tmp_path / "export"), str(tmp_path / "imported")])
    assert read_class_names(tmp_path / "imported" / "data.yaml") == ["crack", "porosity"]
    bundle = make_box_bundle(tmp_path / "bundle.pt")
    main(["prelabel", str(bundle), str(frames), str(tmp_path / "pre"), "--confidence", "0.5"])
    assert (tmp_path / "pre" / "annotations.xml").is_file()
    capsys.readouterr()


def test_a_bad_xml_on_the_command_line_is_one_line_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "bad.xml"
    path.write_text(CVAT_IMAGES.replace('label="crack"', 'label="rust"'))
    with pytest.raises(SystemExit) as info:
        main(["cvat_to_yolo", str(path), str(tmp_path / "labels")])
    message = str(info.value)
    assert message.startswith("defects: ") and "bad.xml" in message and "rust" in message
    assert "\n" not in message and not (tmp_path / "labels").exists()
