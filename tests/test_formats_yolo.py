"""YOLO label/data.yaml reading and writing, plus the atomic write helpers they rely on."""

from __future__ import annotations

import csv
import logging
import pickle
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from defects.formats import (
    CLIP_TOLERANCE,
    FormatError,
    SkipReport,
    YoloBox,
    atomic_directory,
    atomic_write_text,
    atomic_write_with,
    handle,
    parse_yolo_line,
    read_class_names,
    read_yolo_labels,
    write_class_names,
    write_yolo_labels,
)
from defects.formats.yolo import NumberedBox, read_numbered_labels

GOOD = "1 0.5 0.5 0.2 0.2"

BAD_LINES = {
    "four_fields": "1 0.5 0.5 0.2",
    "six_fields": "1 0.5 0.5 0.2 0.2 0.9",
    "non_numeric": "1 0.5 abc 0.2 0.2",
    "non_numeric_class": "dog 0.5 0.5 0.2 0.2",
    "nan": "1 nan 0.5 0.2 0.2",
    "inf": "1 0.5 inf 0.2 0.2",
    "class_ge_nc": "3 0.5 0.5 0.2 0.2",
    "negative_class": "-1 0.5 0.5 0.2 0.2",
    "float_class": "1.5 0.5 0.5 0.2 0.2",
    "negative_width": "1 0.5 0.5 -0.2 0.2",
    "zero_height": "1 0.5 0.5 0.2 0",
    "coord_gt_1": "1 1.2 0.5 0.2 0.2",
    "spills_out": "1 0.95 0.5 0.2 0.2",
}


def test_round_trip(tmp_path: Path) -> None:
    boxes = [YoloBox(0, 0.5, 0.25, 0.1, 0.2), YoloBox(2, 0.05, 0.95, 0.1, 0.1)]
    path = tmp_path / "labels" / "img.txt"
    write_yolo_labels(path, boxes)
    assert path.read_text() == "0 0.500000 0.250000 0.100000 0.200000\n" + (
        "2 0.050000 0.950000 0.100000 0.100000\n"
    )
    assert read_yolo_labels(path, num_classes=3) == boxes


def test_to_line_format() -> None:
    assert YoloBox(3, 0.5, 0.25, 0.1, 0.2).to_line() == "3 0.500000 0.250000 0.100000 0.200000"


def test_write_empty_list_gives_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    write_yolo_labels(path, [])
    assert path.read_bytes() == b""
    assert read_yolo_labels(path) == []


def test_write_refuses_box_reader_would_reject(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="outside"):
        write_yolo_labels(tmp_path / "x.txt", [YoloBox(0, 0.95, 0.5, 0.2, 0.2)])
    assert not (tmp_path / "x.txt").exists()


def _bad_file(tmp_path: Path, name: str) -> Path:
    """A label file with the bad line `name` on line 3, between good lines and a blank one."""
    path = tmp_path / f"{name}.txt"
    path.write_text(f"{GOOD}\n\n{BAD_LINES[name]}\n{GOOD}\n")
    return path


@pytest.mark.parametrize("reader", [read_yolo_labels, read_numbered_labels])
@pytest.mark.parametrize("name", sorted(BAD_LINES))
def test_bad_line_strict_names_file_and_line(
    tmp_path: Path, name: str, reader: Callable[..., list]
) -> None:
    path = _bad_file(tmp_path, name)
    with pytest.raises(FormatError) as info:
        reader(path, num_classes=3)
    err = info.value
    assert f"{name}.txt" in str(err)
    assert ":3:" in str(err)
    assert err.line == 3
    assert err.path == str(path)
    assert err.reason and err.reason in str(err)


@pytest.mark.parametrize("name", sorted(BAD_LINES))
def test_parse_yolo_line_rejects(name: str) -> None:
    with pytest.raises(ValueError):
        parse_yolo_line(BAD_LINES[name], num_classes=3)


def test_non_strict_skips_and_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lines = [GOOD]
    for bad in BAD_LINES.values():
        lines += [bad, GOOD]
    path = tmp_path / "mixed.txt"
    path.write_text("\n".join(lines) + "\n")
    report = SkipReport()
    with caplog.at_level(logging.WARNING, logger="defects"):
        boxes = read_yolo_labels(path, num_classes=3, strict=False, report=report)
    assert len(boxes) == len(BAD_LINES) + 1
    assert all(b == YoloBox(1, 0.5, 0.5, 0.2, 0.2) for b in boxes)
    assert report.count == len(BAD_LINES)
    assert [e.line for e in report.items] == list(range(2, 2 * len(BAD_LINES) + 1, 2))
    assert len(caplog.records) == len(BAD_LINES)
    summary = report.summary(limit=2)
    assert summary.startswith(f"{len(BAD_LINES)} items skipped:")
    assert "mixed.txt:2:" in summary
    assert f"... and {len(BAD_LINES) - 2} more" in summary


def test_non_strict_without_report_just_warns(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text(f"{GOOD}\n1 2 3\n")
    assert read_yolo_labels(path, strict=False) == [YoloBox(1, 0.5, 0.5, 0.2, 0.2)]


def test_missing_and_empty_files_mean_no_defects(tmp_path: Path) -> None:
    assert read_yolo_labels(tmp_path / "nope.txt") == []
    (tmp_path / "empty.txt").write_text("")
    assert read_yolo_labels(tmp_path / "empty.txt") == []
    (tmp_path / "blank.txt").write_text("  \n\n\t\n")
    assert read_yolo_labels(tmp_path / "blank.txt") == []


def test_crlf_and_bom_accepted(tmp_path: Path) -> None:
    path = tmp_path / "win.txt"
    path.write_bytes(b"\xef\xbb\xbf" + f"{GOOD}\r\n{GOOD}\r\n".encode())
    assert len(read_yolo_labels(path)) == 2


def test_class_id_written_as_float_integer_is_accepted() -> None:
    assert parse_yolo_line("2.0 0.5 0.5 0.2 0.2").class_id == 2


def test_box_touching_border_within_tolerance() -> None:
    box = parse_yolo_line("0 0.9000005 0.5 0.2 0.2")
    assert box.cx == pytest.approx(0.9000005)


OVERSHOOT_LINES = [
    "0 0.5 0.5 1.0004 0.2",  # spans the whole width, written 0.04 % too wide
    "1 0.9502 0.5 0.1 0.1",  # right edge at 1.0002
    "2 0.5 0.0498 0.2 0.1",  # top edge at -0.0002
]


def test_overshoot_within_tolerance_is_clipped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "edge.txt"
    path.write_text("\n".join([GOOD, *OVERSHOOT_LINES]) + "\n")
    report = SkipReport()
    with caplog.at_level(logging.WARNING, logger="defects"):
        boxes = read_yolo_labels(path, num_classes=3, strict=True, report=report)
    assert len(boxes) == 4 and boxes[0] == parse_yolo_line(GOOD)
    assert boxes[1] == pytest.approx(YoloBox(0, 0.5, 0.5, 1.0, 0.2))
    assert boxes[2].to_xyxy(100, 100) == pytest.approx((90.02, 45, 100, 55))
    assert boxes[3].to_xyxy(100, 100) == pytest.approx((40, 0, 60, 9.98))
    for box in boxes:  # clipped boxes are valid and write back unchanged
        assert parse_yolo_line(box.to_line(), clip_tolerance=0.0)
    assert report.count == 0  # nothing skipped ...
    assert report.clipped == [(str(path), 3)] and report.clipped_count == 3  # ... but counted
    assert "3 boxes clipped to the image in 1 files" in report.summary()
    (record,) = caplog.records  # one warning for the file, not one per line
    assert "edge.txt: clipped 3 box(es)" in record.getMessage()
    assert "line(s) 2, 3, 4" in record.getMessage()
    assert read_yolo_labels(path, strict=True) == boxes  # no report: still clipped


@pytest.mark.parametrize(
    "line",
    [
        "0 0.5 0.5 1.01 0.2",  # 1 % too wide
        "0 1.01 0.5 0.01 0.1",
        "0 0.9511 0.5 0.1 0.1",  # right edge at 1.0011, just past the tolerance
        "0 0.5 -0.0011 0.1 0.1",
    ],
)
def test_overshoot_beyond_tolerance_still_fails_naming_file_and_line(
    tmp_path: Path, line: str
) -> None:
    path = tmp_path / "far.txt"
    path.write_text(f"{GOOD}\n{line}\n")
    with pytest.raises(FormatError, match=r"far\.txt:2: .*(outside)") as info:
        read_yolo_labels(path, num_classes=3)
    assert info.value.line == 2
    report = SkipReport()
    assert read_yolo_labels(path, strict=False, report=report) == [parse_yolo_line(GOOD)]
    assert report.count == 1 and report.clipped == []


def test_overshoot_clipping_to_nothing_fails() -> None:
    with pytest.raises(ValueError, match="no extent left after clipping"):
        parse_yolo_line("0 1.0004 0.5 0.0008 0.1")


def test_clip_tolerance_and_writer() -> None:
    assert CLIP_TOLERANCE == 1e-3
    assert parse_yolo_line(OVERSHOOT_LINES[1]).cx == pytest.approx(0.9501)
    with pytest.raises(ValueError, match="outside"):
        parse_yolo_line(OVERSHOOT_LINES[1], clip_tolerance=0.0)


def test_writer_refuses_overshoot_the_reader_would_clip(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="outside"):
        write_yolo_labels(tmp_path / "x.txt", [YoloBox(0, 0.9502, 0.5, 0.1, 0.1)])
    assert not (tmp_path / "x.txt").exists()


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"1 0.5 0.5 0.2 0.2 \xe9\xff\n")
    with pytest.raises(FormatError, match="latin1.txt: not UTF-8"):
        read_yolo_labels(path)
    report = SkipReport()
    assert read_yolo_labels(path, strict=False, report=report) == []
    assert report.count == 1


def test_from_xyxy_round_trip() -> None:
    box = YoloBox.from_xyxy(4, 10, 20, 110, 70, width=200, height=100)
    assert box == YoloBox(4, 0.3, 0.45, 0.5, 0.5)
    assert box.to_xyxy(200, 100) == pytest.approx((10, 20, 110, 70))
    again = parse_yolo_line(box.to_line())
    assert again.to_xyxy(200, 100) == pytest.approx((10, 20, 110, 70), abs=1e-3)


def test_from_xyxy_clips_and_rejects_empty() -> None:
    box = YoloBox.from_xyxy(0, -5, -5, 50, 250, width=100, height=200)
    assert box.to_xyxy(100, 200) == pytest.approx((0, 0, 50, 200))
    parse_yolo_line(box.to_line())  # clipped box is valid in the file format
    with pytest.raises(ValueError, match="zero area"):
        YoloBox.from_xyxy(0, 120, 10, 150, 20, width=100, height=100)
    with pytest.raises(ValueError, match="zero area"):
        YoloBox.from_xyxy(0, 50, 10, 40, 20, width=100, height=100)  # inverted
    with pytest.raises(ValueError):
        YoloBox.from_xyxy(-1, 0, 0, 10, 10, width=100, height=100)


def test_format_error_str_and_pickle() -> None:
    err = FormatError("a/b.txt", "bad thing", line=7)
    assert str(err) == "a/b.txt:7: bad thing"
    assert str(FormatError(Path("a/b.txt"), "bad thing")) == "a/b.txt: bad thing"
    assert isinstance(err, ValueError)
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.path, copy.reason, copy.line, str(copy)) == (err.path, "bad thing", 7, str(err))


def test_handle() -> None:
    err = FormatError("x", "y")
    with pytest.raises(FormatError):
        handle(err, strict=True, report=SkipReport())
    report = SkipReport()
    handle(err, strict=False, report=report)
    handle(err, strict=False, report=None)
    assert report.items == [err]


GEOMETRY_ONLY = {"negative_width", "zero_height", "coord_gt_1", "spills_out"}


@pytest.mark.parametrize("name", sorted(BAD_LINES))
def test_numbered_reader_can_leave_geometry_to_the_caller(tmp_path: Path, name: str) -> None:
    """check_geometry=False: syntax errors still raise; bad geometry comes back as written."""
    path = _bad_file(tmp_path, name)
    if name not in GEOMETRY_ONLY:
        with pytest.raises(ValueError) as plain:
            parse_yolo_line(BAD_LINES[name], num_classes=3)
        with pytest.raises(FormatError, match=re.escape(str(plain.value))) as err:
            read_numbered_labels(path, num_classes=3, check_geometry=False)
        assert err.value.line == 3
        return
    boxes = read_numbered_labels(path, num_classes=3, check_geometry=False)
    assert [b.line for b in boxes] == [1, 3, 4]
    as_written = [float(t) for t in BAD_LINES[name].split()]
    assert [boxes[1].class_id, boxes[1].cx, boxes[1].cy, boxes[1].w, boxes[1].h] == as_written


def test_numbered_boxes_are_the_plain_boxes_with_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "mixed.txt"
    path.write_text(f"{GOOD}\n1 2 3\n\n{OVERSHOOT_LINES[1]}\n")
    report = SkipReport()
    boxes = read_numbered_labels(path, num_classes=3, strict=False, report=report)
    plain = read_yolo_labels(path, num_classes=3, strict=False)
    assert [b.line for b in boxes] == [1, 4]
    assert [YoloBox(b.class_id, b.cx, b.cy, b.w, b.h) for b in boxes] == plain  # clipped too
    assert [e.line for e in report.items] == [2] and report.clipped == [(str(path), 1)]
    assert isinstance(boxes[0], YoloBox) and boxes[0] != plain[0]  # the line is part of it
    assert boxes[0].to_line() == plain[0].to_line() and replace(boxes[1], class_id=0).line == 4
    raw = SkipReport()
    unjudged = read_numbered_labels(path, 3, strict=False, report=raw, check_geometry=False)
    assert unjudged[1] == NumberedBox(1, 0.9502, 0.5, 0.1, 0.1, line=4)  # not clipped
    assert raw.clipped == [] and [e.line for e in raw.items] == [2]


def test_class_names_round_trip(tmp_path: Path) -> None:
    names = ["crazing", "rolled-in_scale", "no", "010", "with space", "ünïcode"]
    path = tmp_path / "data.yaml"
    write_class_names(path, names)
    assert "nc: 6" in path.read_text(encoding="utf-8")
    assert read_class_names(path) == names


def test_class_names_dict_form(tmp_path: Path) -> None:
    path = tmp_path / "data.yaml"
    path.write_text("path: .\ntrain: train/images\nnames:\n  1: scratch\n  0: crack\n")
    assert read_class_names(path) == ["crack", "scratch"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("names: [a, b\n", "invalid YAML"),
        ("- a\n- b\n", "mapping"),
        ("nc: 2\n", "missing key 'names'"),
        ("names: 3\n", "list or a mapping"),
        ("names: []\n", "empty"),
        ("names: [a, no]\n", "names[1]"),
        ("names: [a, a]\n", "duplicates"),
        ("names: {0: a, 2: b}\n", "0..1"),
        ("names: [a, b]\nnc: 3\n", "'nc'"),
    ],
)
def test_class_names_malformed(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "data.yaml"
    path.write_text(text)
    with pytest.raises(FormatError, match="data.yaml") as info:
        read_class_names(path)
    assert needle in str(info.value)


def test_class_names_yaml_error_has_line(tmp_path: Path) -> None:
    path = tmp_path / "data.yaml"
    path.write_text("nc: 2\nnames: [a, b\ntrain: x\n")
    with pytest.raises(FormatError) as info:
        read_class_names(path)
    assert info.value.line is not None


def test_atomic_write_text_replaces(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    atomic_write_text(path, "one\n")
    atomic_write_text(path, "two\r\n")
    assert path.read_bytes() == b"two\r\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_atomic_directory_success_replaces_old(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_directory(target) as tmp:
        assert tmp != target and tmp.parent == tmp_path
        (tmp / "new.txt").write_text("new")
        assert (target / "old.txt").exists()  # old stays visible while building
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_directory_failure_keeps_old(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(target) as tmp:
        (tmp / "new.txt").write_text("new")
        raise RuntimeError("boom")
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]
    assert (target / "old.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_directory_failure_without_old(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_directory(target):
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_directory_refuses_file(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.write_text("x")
    with pytest.raises(NotADirectoryError), atomic_directory(target):
        pass
    assert target.read_text() == "x"


def test_atomic_write_with_path_writer(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "curve.csv"
    seen: list[Path] = []

    def write_csv(tmp: Path) -> None:
        seen.append(tmp)
        assert not target.exists()  # nothing visible until the writer is done
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["recall", "precision"])
            writer.writerow([0.5, 0.9])

    assert atomic_write_with(target, write_csv) == target
    assert target.read_bytes() == b"recall,precision\r\n0.5,0.9\r\n"
    assert seen[0].parent == target.parent and seen[0].suffix == ".csv"  # format by suffix
    assert seen[0].name.startswith(".")
    assert sorted(p.name for p in target.parent.iterdir()) == ["curve.csv"]


def test_atomic_write_with_failure_keeps_old(tmp_path: Path) -> None:
    target = tmp_path / "model.pt"
    target.write_bytes(b"old")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write_with(target, half_then_fail)
    with pytest.raises(OSError, match="left no file"):
        atomic_write_with(target, lambda tmp: None)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
