"""Severstal steel-defect CSV files: run-length encoded masks, one row per (image, class).

Pixels are numbered column-major (top to bottom, then left to right), starting at 1, and a mask
is written as `start length start length ...`. Both Kaggle layouts are read: the current
`ImageId,ClassId,EncodedPixels` and the original `ImageId_ClassId,EncodedPixels`
(`0002cc93b.jpg_1`). An empty EncodedPixels cell means no defect of that class, so an image that
only has empty rows is a defect-free image, not an error.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from defects.formats.errors import FormatError, SkipReport, handle
from defects.formats.io import atomic_write_text

__all__ = [
    "SeverstalRecord",
    "rle_encode",
    "rle_decode",
    "read_severstal_csv",
    "write_severstal_csv",
]

SEVERSTAL_SHAPE = (256, 1600)
_NEW_HEADER = ("ImageId", "ClassId", "EncodedPixels")
_OLD_HEADER = ("ImageId_ClassId", "EncodedPixels")


@dataclass
class SeverstalRecord:
    """One CSV row: the RLE stays text so records are cheap to hold for a whole dataset."""

    image_id: str
    class_id: int
    rle: str


def _check_shape(shape: tuple[int, int]) -> tuple[int, int]:
    """Shapes come from configs; a wrong one must fail loudly, not decode into garbage."""
    ok = len(shape) == 2 and all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in shape
    )
    if not ok:
        raise ValueError(f"shape must be two positive integers (H, W), got {shape!r}")
    return int(shape[0]), int(shape[1])


def rle_encode(mask: np.ndarray) -> str:
    """Kaggle RLE of a 2-D bool or 0/1 mask; "" for an empty mask.

    Vectorized: pad the column-major flattening with zeros, then the +1/-1 steps of np.diff are
    exactly the run starts and ends, so a 256x1600 mask costs no Python-level pixel loop.
    """
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {arr.shape}")
    if arr.dtype != np.bool_:
        # A 0/255 PNG or a probability map would otherwise be encoded as something else.
        if np.any((arr != 0) & (arr != 1)):
            raise ValueError("mask values must be 0/1 or bool; threshold it first")
        arr = arr != 0
    flat = np.concatenate(([False], arr.ravel(order="F"), [False])).astype(np.int8)
    steps = np.diff(flat)
    starts = np.flatnonzero(steps == 1)  # 0-based pixel index of each run start
    ends = np.flatnonzero(steps == -1)  # 0-based exclusive end
    if starts.size == 0:
        return ""
    pairs = np.empty(2 * starts.size, dtype=np.int64)
    pairs[0::2] = starts + 1
    pairs[1::2] = ends - starts
    return " ".join(pairs.astype(str).tolist())


def _is_blank(rle: object) -> bool:
    """None, NaN (what pandas gives for an empty cell) and blank text all mean an empty mask."""
    if rle is None:
        return True
    if isinstance(rle, float):
        if math.isnan(rle):
            return True
        raise ValueError(f"RLE must be a string, got float {rle!r}")
    if not isinstance(rle, str):
        raise ValueError(f"RLE must be a string, got {type(rle).__name__}")
    text = rle.strip()
    return not text or text.lower() == "nan"  # "nan": a NaN that went through str()


def _parse_rle(rle: str | float | None, n_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Validated 1-based (starts, lengths); ValueError naming the first offending run.

    Shared by rle_decode and the CSV reader, which validates every row without painting masks.
    """
    if _is_blank(rle):
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    assert isinstance(rle, str)
    tokens = rle.split()
    if len(tokens) % 2:
        raise ValueError(f"odd number of values ({len(tokens)}); expected start/length pairs")
    try:
        values = np.array(tokens, dtype=np.int64)
    except (ValueError, OverflowError):
        for index, token in enumerate(tokens):
            try:
                number = int(token)
            except ValueError:
                raise ValueError(f"value {index + 1} is not an integer: {token!r}") from None
            if abs(number) >= 2**63:
                raise ValueError(f"value {index + 1} is out of range: {token!r}") from None
        raise  # not reached: some token must have failed above
    starts, lengths = values[0::2], values[1::2]

    def first(bad: np.ndarray) -> int:
        return int(np.flatnonzero(bad)[0])

    if np.any(starts < 1):
        i = first(starts < 1)
        raise ValueError(f"run {i + 1}: start {starts[i]} < 1 (pixels are numbered from 1)")
    if np.any(lengths < 1):
        i = first(lengths < 1)
        raise ValueError(f"run {i + 1}: length {lengths[i]} < 1")
    past = lengths > n_pixels - (starts - 1)  # not `starts + lengths`: that can wrap int64
    if np.any(past):
        i = first(past)
        end = int(starts[i]) + int(lengths[i]) - 1
        raise ValueError(
            f"run {i + 1}: pixels {starts[i]}..{end} go past the image end ({n_pixels} pixels)"
        )
    last = starts + lengths - 1
    if starts.size > 1:
        unsorted = starts[1:] < starts[:-1]
        if np.any(unsorted):
            i = first(unsorted)
            raise ValueError(
                f"runs not sorted by start: run {i + 2} starts at {starts[i + 1]}, "
                f"before run {i + 1} at {starts[i]}"
            )
        overlap = starts[1:] <= last[:-1]
        if np.any(overlap):
            i = first(overlap)
            raise ValueError(
                f"run {i + 2} (start {starts[i + 1]}) overlaps run {i + 1} "
                f"(pixels {starts[i]}..{last[i]})"
            )
    return starts, lengths


def rle_decode(rle: str | float | None, shape: tuple[int, int] = SEVERSTAL_SHAPE) -> np.ndarray:
    """Decode Kaggle RLE into a C-contiguous bool (H, W) mask; ValueError(reason) if malformed.

    Vectorized: +1 at each run start and -1 past each end, then a cumulative sum paints the runs.
    Runs may touch (start == previous end + 1); they may not overlap or go out of order, since
    that means the text was corrupted or built for another image size.
    """
    height, width = _check_shape(shape)
    n_pixels = height * width
    starts, lengths = _parse_rle(rle, n_pixels)
    if starts.size == 0:
        return np.zeros((height, width), dtype=bool)
    steps = np.zeros(n_pixels + 1, dtype=np.int32)
    steps[starts - 1] += 1  # starts are distinct, and so are ends, so plain indexing is safe
    steps[starts - 1 + lengths] -= 1
    flat = np.cumsum(steps[:n_pixels]) > 0
    return np.ascontiguousarray(flat.reshape((width, height)).T)


def _parse_class_id(token: str, num_classes: int) -> int:
    text = token.strip()
    try:
        class_id = int(text)
    except ValueError:
        raise ValueError(f"class id is not an integer: {token!r}") from None
    if not 1 <= class_id <= num_classes:
        raise ValueError(f"class id {class_id} out of range 1..{num_classes}")
    return class_id


def _split_row(row: list[str], old_layout: bool, num_classes: int) -> SeverstalRecord:
    """One data row as a record; ValueError(reason) for anything malformed."""
    width = len(_OLD_HEADER) if old_layout else len(_NEW_HEADER)
    if len(row) != width:
        raise ValueError(f"expected {width} columns, got {len(row)}")
    if old_layout:
        key, rle = row
        image_id, sep, class_token = key.strip().rpartition("_")
        if not sep:
            raise ValueError(f"ImageId_ClassId {key!r} has no '_CLASS' suffix")
    else:
        image_id, class_token, rle = row
    image_id = image_id.strip()
    if not image_id:
        raise ValueError("empty ImageId")
    return SeverstalRecord(image_id, _parse_class_id(class_token, num_classes), rle.strip())


def read_severstal_csv(
    path: str | os.PathLike[str],
    num_classes: int = 4,
    shape: tuple[int, int] = SEVERSTAL_SHAPE,
    strict: bool = True,
    report: SkipReport | None = None,
) -> dict[str, dict[int, str]]:
    """image_id -> {class_id: rle} for every non-empty mask; defect-free images map to {}.

    The layout is detected from the header. Every RLE is validated against `shape` so a file
    for another image size fails here rather than as shifted masks during training. A bad row
    raises FormatError(path, reason, line) when strict (line 1 is the header); otherwise it is
    recorded in `report` and skipped. For a duplicate (image, class) row the first one wins.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    height, width = _check_shape(shape)
    csv_path = Path(path)
    try:
        data = csv_path.read_bytes()
    except FileNotFoundError:
        raise FormatError(csv_path, "file not found") from None
    try:
        text = data.decode("utf-8-sig")  # tolerate the BOM Excel adds
    except UnicodeDecodeError as exc:
        raise FormatError(
            csv_path, f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None

    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise FormatError(csv_path, f"invalid CSV: {exc}", line=reader.line_num) from None
    if header is None:
        raise FormatError(csv_path, "empty file, expected a header row")
    columns = tuple(cell.strip() for cell in header)
    if columns == _NEW_HEADER:
        old_layout = False
    elif columns == _OLD_HEADER:
        old_layout = True
    else:
        handle(
            FormatError(
                csv_path,
                f"unknown header {','.join(columns)!r}; expected {','.join(_NEW_HEADER)!r} "
                f"or {','.join(_OLD_HEADER)!r}",
                line=1,
            ),
            strict,
            report,
        )
        return {}

    result: dict[str, dict[int, str]] = {}
    first_seen: dict[tuple[str, int], int] = {}
    n_pixels = height * width
    last_line = reader.line_num
    while True:
        line = last_line + 1  # where this record starts, even if a quoted field spans lines
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            handle(FormatError(csv_path, f"invalid CSV: {exc}", line=line), strict, report)
            break  # the reader cannot resynchronise after a malformed quote
        last_line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue  # blank line
        try:
            record = _split_row(row, old_layout, num_classes)
            key = (record.image_id, record.class_id)
            if key in first_seen:
                raise ValueError(
                    f"duplicate row for image {record.image_id!r} class {record.class_id} "
                    f"(first on line {first_seen[key]})"
                )
            try:
                _parse_rle(record.rle, n_pixels)
            except ValueError as exc:
                raise ValueError(f"EncodedPixels for {shape[0]}x{shape[1]}: {exc}") from None
        except ValueError as exc:
            handle(FormatError(csv_path, str(exc), line=line), strict, report)
            continue
        first_seen[key] = line
        masks = result.setdefault(record.image_id, {})
        if record.rle:
            masks[record.class_id] = record.rle
    return result


def write_severstal_csv(
    path: str | os.PathLike[str], masks: Mapping[str, Mapping[int, np.ndarray | str]]
) -> None:
    """Write the `ImageId,ClassId,EncodedPixels` layout atomically, sorted by image then class.

    Values are masks or RLE text already encoded (so a long prediction run keeps only text).

    One row per (image, class) in `masks`; an empty mask gives an empty EncodedPixels cell. An
    image with no classes at all gets a single `image,1,` row so it is read back as a
    defect-free image instead of vanishing from the dataset.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_NEW_HEADER)
    for image_id in sorted(masks):
        if not isinstance(image_id, str) or not image_id.strip() or image_id != image_id.strip():
            raise ValueError(f"image id must be non-empty text without edge spaces: {image_id!r}")
        per_class = masks[image_id]
        if not per_class:
            writer.writerow((image_id, 1, ""))
            continue
        for class_id in sorted(per_class):
            if (
                isinstance(class_id, bool)
                or not isinstance(class_id, (int, np.integer))
                or class_id < 1
            ):
                raise ValueError(f"{image_id}: class id must be an integer >= 1, got {class_id!r}")
            try:
                value = per_class[class_id]
                rle = value if isinstance(value, str) else rle_encode(value)
            except ValueError as exc:
                raise ValueError(f"{image_id} class {class_id}: {exc}") from None
            writer.writerow((image_id, int(class_id), rle))
    atomic_write_text(path, buffer.getvalue())
