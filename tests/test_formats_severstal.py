"""Severstal RLE encoding/decoding and the Kaggle CSV reader/writer (both header layouts)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from defects.formats import (
    FormatError,
    SeverstalRecord,
    SkipReport,
    read_severstal_csv,
    rle_decode,
    rle_encode,
    write_severstal_csv,
)

SHAPES = [(1, 1), (1, 7), (3, 5), (5, 3), (16, 16), (31, 64), (256, 1600)]


def _random_mask(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Mix of sparse, dense, all-empty, all-full and blobby masks, so runs hit every edge case."""
    kind = rng.integers(5)
    if kind == 0:
        return rng.random(shape) < rng.uniform(0.0, 1.0)
    if kind == 1:
        return np.zeros(shape, dtype=bool)
    if kind == 2:
        return np.ones(shape, dtype=bool)
    return _blobs(rng, shape, int(rng.integers(1, 6)))


def _blobs(rng: np.random.Generator, shape: tuple[int, int], count: int) -> np.ndarray:
    h, w = shape
    mask = np.zeros(shape, dtype=bool)
    for _ in range(count):
        y0, x0 = int(rng.integers(h)), int(rng.integers(w))
        mask[y0 : y0 + int(rng.integers(1, h + 1)), x0 : x0 + int(rng.integers(1, w + 1))] = True
    return mask


# --- rle_encode / rle_decode ---------------------------------------------------------------


def test_round_trip_random_masks() -> None:
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        trials = 10 if shape == (256, 1600) else 60
        for _ in range(trials):
            mask = _random_mask(rng, shape)
            rle = rle_encode(mask)
            decoded = rle_decode(rle, shape)
            assert decoded.dtype == bool and decoded.shape == shape
            assert decoded.flags.c_contiguous
            np.testing.assert_array_equal(decoded, mask)
            # Canonical form: what we decode from our own output re-encodes to the same text.
            assert rle_encode(decoded) == rle


def test_encoded_runs_are_canonical() -> None:
    """Runs from the encoder are sorted, positive, separated by a gap, and within the image."""
    rng = np.random.default_rng(1)
    for shape in SHAPES[:-1]:
        for _ in range(40):
            mask = rng.random(shape) < 0.5
            values = np.array(rle_encode(mask).split(), dtype=np.int64)
            starts, lengths = values[0::2], values[1::2]
            assert np.all(starts >= 1) and np.all(lengths >= 1)
            assert np.all(starts[1:] > starts[:-1] + lengths[:-1])  # never touching
            assert lengths.sum() == mask.sum()
            if starts.size:
                assert starts[-1] + lengths[-1] - 1 <= mask.size


def test_empty_and_full() -> None:
    for shape in SHAPES:
        assert rle_encode(np.zeros(shape, dtype=bool)) == ""
        assert rle_encode(np.ones(shape, dtype=bool)) == f"1 {shape[0] * shape[1]}"
        assert not rle_decode("", shape).any()
        assert rle_decode(f"1 {shape[0] * shape[1]}", shape).all()


@pytest.mark.parametrize("blank", ["", "   ", "\t\n", None, float("nan"), "nan"])
def test_blank_rle_is_empty_mask(blank: object) -> None:
    mask = rle_decode(blank, (3, 5))  # type: ignore[arg-type]
    assert mask.shape == (3, 5) and not mask.any()


def test_hand_computed_examples() -> None:
    bar = np.zeros((3, 3), dtype=bool)
    bar[:, 1] = True  # column 1 holds pixels 4, 5, 6
    assert rle_encode(bar) == "4 3"
    np.testing.assert_array_equal(rle_decode("4 3", (3, 3)), bar)

    mask = np.array([[1, 0, 1], [1, 0, 0]], dtype=np.uint8)  # column-major: 1 1 0 0 1 0
    assert rle_encode(mask) == "1 2 5 1"
    assert rle_encode(mask.astype(np.int64)) == "1 2 5 1"
    np.testing.assert_array_equal(rle_decode("1 2 5 1", (2, 3)), mask.astype(bool))


def test_column_major_ordering() -> None:
    """A horizontal bar is one run per column; a vertical bar is a single run."""
    h, w = 4, 6
    row = np.zeros((h, w), dtype=bool)
    row[2, :] = True
    assert rle_encode(row) == " ".join(f"{c * h + 3} 1" for c in range(w))
    col = np.zeros((h, w), dtype=bool)
    col[:, 4] = True
    assert rle_encode(col) == f"{4 * h + 1} {h}"
    # Pixel k (1-based) is at row (k-1) % H, column (k-1) // H.
    for k in (1, 2, h, h + 1, h * w):
        mask = rle_decode(f"{k} 1", (h, w))
        assert list(zip(*np.nonzero(mask), strict=True)) == [((k - 1) % h, (k - 1) // h)]


def test_touching_runs_decode() -> None:
    """Adjacent runs are unusual but unambiguous; they decode as one stretch."""
    np.testing.assert_array_equal(rle_decode("1 2 3 2", (1, 5)), rle_decode("1 4", (1, 5)))


@pytest.mark.parametrize(
    ("rle", "reason"),
    [
        ("1 2 3", "odd number of values"),
        ("1 two", "not an integer: 'two'"),
        ("1 2.5", "not an integer: '2.5'"),
        ("1 99999999999999999999999", "out of range"),
        ("0 2", "start 0 < 1"),
        ("-3 2", "start -3 < 1"),
        ("1 0", "length 0 < 1"),
        ("1 -2", "length -2 < 1"),
        ("5 2 1 2", "not sorted"),
        ("1 3 3 2", "overlaps"),
        ("2 2 2 1", "overlaps"),
        ("14 3", "past the image end (15 pixels)"),
        ("16 1", "past the image end"),
    ],
)
def test_invalid_rle(rle: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        rle_decode(rle, (3, 5))


def test_last_pixel_is_valid() -> None:
    assert rle_decode("15 1", (3, 5))[2, 4]
    assert rle_decode("13 3", (3, 5))[:, 4].all()


@pytest.mark.parametrize("bad", [np.zeros(5), np.zeros((2, 2, 2)), np.full((2, 2), 255)])
def test_encode_rejects_bad_masks(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        rle_encode(bad)


@pytest.mark.parametrize("shape", [(0, 5), (3,), (2, -1), (2.5, 3), (True, 2)])
def test_decode_rejects_bad_shape(shape: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="shape"):
        rle_decode("1 1", shape)


def test_timing_sanity() -> None:
    """Prints encode+decode time for a full-size blobby mask; informational only."""
    rng = np.random.default_rng(7)
    mask = _blobs(rng, (256, 1600), 20)
    t0 = time.perf_counter()
    rle = rle_encode(mask)
    t1 = time.perf_counter()
    decoded = rle_decode(rle, (256, 1600))
    t2 = time.perf_counter()
    np.testing.assert_array_equal(decoded, mask)
    print(f"256x1600 rle_encode {1e3 * (t1 - t0):.2f} ms, rle_decode {1e3 * (t2 - t1):.2f} ms")


# --- CSV ------------------------------------------------------------------------------------

SHAPE = (4, 5)  # 20 pixels: small files, every RLE checked against this

NEW_CSV = """ImageId,ClassId,EncodedPixels
a.jpg,1,1 3 10 2
a.jpg,3,20 1
b.jpg,2,5 5
c.jpg,1,
"""

OLD_CSV = """ImageId_ClassId,EncodedPixels
a.jpg_1,1 3 10 2
a.jpg_2,
a.jpg_3,20 1
a.jpg_4,
b.jpg_1,
b.jpg_2,5 5
b.jpg_3,
b.jpg_4,
c.jpg_1,
c.jpg_2,
c.jpg_3,
c.jpg_4,
"""

EXPECTED = {"a.jpg": {1: "1 3 10 2", 3: "20 1"}, "b.jpg": {2: "5 5"}, "c.jpg": {}}


def _write(tmp_path: Path, text: str, name: str = "train.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    return path


def test_both_layouts_parse_the_same(tmp_path: Path) -> None:
    new = read_severstal_csv(_write(tmp_path, NEW_CSV, "new.csv"), shape=SHAPE)
    old = read_severstal_csv(_write(tmp_path, OLD_CSV, "old.csv"), shape=SHAPE)
    assert new == EXPECTED
    assert old == EXPECTED


def test_crlf_bom_blank_lines_and_image_ids_with_underscores(tmp_path: Path) -> None:
    text = "\ufeffImageId_ClassId,EncodedPixels\r\nimg_01.jpg_2,1 1\r\n\r\nimg_01.jpg_4,\r\n"
    assert read_severstal_csv(_write(tmp_path, text), shape=SHAPE) == {"img_01.jpg": {2: "1 1"}}


def test_default_shape_is_severstal(tmp_path: Path) -> None:
    path = _write(tmp_path, f"ImageId,ClassId,EncodedPixels\nx.jpg,4,1 {256 * 1600}\n")
    assert read_severstal_csv(path) == {"x.jpg": {4: f"1 {256 * 1600}"}}


BAD_ROWS = {
    "class_5": ("a.jpg,5,1 1", "class id 5 out of range 1..4"),
    "class_0": ("a.jpg,0,1 1", "out of range"),
    "class_text": ("a.jpg,x,1 1", "class id is not an integer"),
    "class_float": ("a.jpg,1.0,1 1", "class id is not an integer"),
    "odd_rle": ("z.jpg,1,1 2 3", "odd number of values"),
    "past_end": ("z.jpg,1,18 5", "past the image end"),
    "unsorted": ("z.jpg,1,9 1 1 1", "not sorted"),
    "too_few_columns": ("a.jpg,1", "expected 3 columns, got 2"),
    "too_many_columns": ("a.jpg,1,1 1,extra", "expected 3 columns, got 4"),
    "empty_image": (",1,1 1", "empty ImageId"),
    "duplicate": ("b.jpg,2,", "duplicate row for image 'b.jpg' class 2 (first on line 4)"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_row_strict(tmp_path: Path, case: str) -> None:
    row, reason = BAD_ROWS[case]
    path = _write(tmp_path, NEW_CSV + row + "\n")  # the bad row is line 6
    with pytest.raises(FormatError) as info:
        read_severstal_csv(path, shape=SHAPE)
    err = info.value
    assert "train.csv:6:" in str(err)
    assert reason in err.reason
    assert err.line == 6


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("a.jpg,1 1", "no '_CLASS' suffix"),
        ("a.jpg_9,1 1", "out of range"),
        ("a.jpg_1,1 1,extra", "expected 2 columns, got 3"),
    ],
)
def test_bad_row_old_layout(tmp_path: Path, row: str, reason: str) -> None:
    path = _write(tmp_path, f"ImageId_ClassId,EncodedPixels\nz.jpg_1,\n{row}\n")
    with pytest.raises(FormatError, match=r"train\.csv:3: .*" + reason):
        read_severstal_csv(path, shape=SHAPE)


def test_lenient_skips_and_counts(tmp_path: Path) -> None:
    bad = "".join(row + "\n" for row, _ in BAD_ROWS.values())
    path = _write(tmp_path, NEW_CSV + bad + "d.jpg,4,2 2\n")
    report = SkipReport()
    result = read_severstal_csv(path, shape=SHAPE, strict=False, report=report)
    assert report.count == len(BAD_ROWS)
    assert [e.line for e in report.items] == list(range(6, 6 + len(BAD_ROWS)))
    assert result == {**EXPECTED, "d.jpg": {4: "2 2"}}


def test_lenient_without_report_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _write(tmp_path, NEW_CSV + "a.jpg,7,1 1\n")
    assert read_severstal_csv(path, shape=SHAPE, strict=False) == EXPECTED
    assert "train.csv:6:" in caplog.text


def test_num_classes(tmp_path: Path) -> None:
    path = _write(tmp_path, "ImageId,ClassId,EncodedPixels\na.jpg,6,1 1\n")
    assert read_severstal_csv(path, num_classes=6, shape=SHAPE) == {"a.jpg": {6: "1 1"}}
    with pytest.raises(ValueError, match="num_classes"):
        read_severstal_csv(path, num_classes=0)


def test_rle_checked_against_shape(tmp_path: Path) -> None:
    """A file made for bigger images fails on the first run that does not fit."""
    path = _write(tmp_path, "ImageId,ClassId,EncodedPixels\na.jpg,1,1 20\na.jpg,2,21 1\n")
    with pytest.raises(FormatError, match=r"train\.csv:3: EncodedPixels for 4x5: .*past"):
        read_severstal_csv(path, shape=SHAPE)


@pytest.mark.parametrize(
    "header", ["ImageId,EncodedPixels", "ImageId,ClassId", "foo,bar,baz", "ImageId,ClassId,Rle"]
)
def test_unknown_header(tmp_path: Path, header: str) -> None:
    path = _write(tmp_path, header + "\na.jpg,1,1 1\n")
    with pytest.raises(FormatError, match=r"train\.csv:1: unknown header"):
        read_severstal_csv(path, shape=SHAPE)
    report = SkipReport()
    assert read_severstal_csv(path, shape=SHAPE, strict=False, report=report) == {}
    assert report.count == 1


def test_missing_empty_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match=r"nope\.csv: file not found"):
        read_severstal_csv(tmp_path / "nope.csv")
    with pytest.raises(FormatError, match="empty file"):
        read_severstal_csv(_write(tmp_path, "", "empty.csv"))
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"ImageId,ClassId,EncodedPixels\n\xff\xfe,1,\n")
    with pytest.raises(FormatError, match="not UTF-8"):
        read_severstal_csv(binary)


def test_write_read_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    shape = (8, 12)
    masks: dict[str, dict[int, np.ndarray]] = {}
    for i in range(30):
        classes = rng.choice([1, 2, 3, 4], size=int(rng.integers(0, 5)), replace=False)
        masks[f"img{i:03d}.jpg"] = {int(c): _random_mask(rng, shape) for c in classes}
    path = tmp_path / "out" / "masks.csv"
    write_severstal_csv(path, masks)
    back = read_severstal_csv(path, shape=shape)
    assert set(back) == set(masks)  # images with no masks at all survive as defect-free
    for image_id, per_class in masks.items():
        nonempty = {c for c, m in per_class.items() if m.any()}
        assert set(back[image_id]) == nonempty
        for class_id in nonempty:
            np.testing.assert_array_equal(
                rle_decode(back[image_id][class_id], shape), per_class[class_id]
            )


def test_write_layout_is_sorted_and_stable(tmp_path: Path) -> None:
    bar = np.zeros((3, 3), dtype=bool)
    bar[:, 1] = True
    masks = {"b.jpg": {3: bar, 1: np.zeros((3, 3), bool)}, "a.jpg": {}, "c.jpg": {np.int64(2): bar}}
    path = tmp_path / "sub.csv"
    write_severstal_csv(path, masks)
    assert path.read_text() == (
        "ImageId,ClassId,EncodedPixels\na.jpg,1,\nb.jpg,1,\nb.jpg,3,4 3\nc.jpg,2,4 3\n"
    )
    assert read_severstal_csv(path, shape=(3, 3)) == {
        "a.jpg": {},
        "b.jpg": {3: "4 3"},
        "c.jpg": {2: "4 3"},
    }


@pytest.mark.parametrize(
    "masks",
    [
        {"a.jpg": {0: np.zeros((2, 2), bool)}},
        {"a.jpg": {1: np.full((2, 2), 0.5)}},
        {"": {1: np.zeros((2, 2), bool)}},
        {" a.jpg": {1: np.zeros((2, 2), bool)}},
    ],
)
def test_write_rejects_bad_input_and_keeps_old_file(tmp_path: Path, masks: dict) -> None:
    path = _write(tmp_path, "old\n", "keep.csv")
    with pytest.raises(ValueError):
        write_severstal_csv(path, masks)
    assert path.read_text() == "old\n"


def test_record_dataclass() -> None:
    rec = SeverstalRecord("a.jpg", 2, "1 3")
    assert rec == SeverstalRecord(image_id="a.jpg", class_id=2, rle="1 3")
