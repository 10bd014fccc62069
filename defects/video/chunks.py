"""Frames and chunks cut from long inspection videos, for labelling in CVAT.

CVAT handles a long video poorly (one huge task, slow seeking), so videos are cut into
N-second chunks; the manifest keeps each chunk's frame range in the source video so labels
made on a chunk can be mapped back to the original frame numbers.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from defects.formats.errors import FormatError
from defects.formats.io import atomic_write_text, staged_directory
from defects.progress import progress
from defects.video.frames import iter_frames, read_video_info, write_video

__all__ = ["MANIFEST", "MANIFEST_FIELDS", "extract_frames", "cut_chunks", "chunk_bounds"]

MANIFEST = "manifest.csv"
MANIFEST_FIELDS = (
    "file",
    "source",
    "start_frame",
    "end_frame",
    "frames",
    "start_seconds",
    "end_seconds",
    "fps",
)
_IMAGE_EXTS = ("jpg", "jpeg", "png", "bmp", "tif", "tiff", "webp")


def extract_frames(
    video: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    every_k: int | None = None,
    every_seconds: float | None = None,
    prefix: str | None = None,
    ext: str = "jpg",
) -> list[Path]:
    """Write sampled frames as `<prefix or video stem>_<frame index:06d>.<ext>`; return them.

    The frame index is the frame's number in the video (not a running count), so a label
    file named after it can always be traced back. Frames appear in `out_dir` together, only
    once all are written (`staged_directory`); other files there are left alone.
    """
    suffix = ext.lower().lstrip(".")
    if suffix not in _IMAGE_EXTS:
        raise ValueError(f"ext: '{ext}' is not one of {', '.join(_IMAGE_EXTS)}")
    stem = prefix if prefix is not None else Path(video).stem
    frames = iter_frames(video, every_k=every_k, every_seconds=every_seconds)
    names: list[str] = []
    with staged_directory(out_dir) as tmp:
        for index, rgb in progress(frames, f"frames of {Path(video).name}", unit="frame"):
            name = f"{stem}_{index:06d}.{suffix}"
            _imwrite(tmp / name, rgb)  # the staging folder already makes the set atomic
            names.append(name)
    return [Path(out_dir) / name for name in names]


def _imwrite(path: Path, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"{path}: OpenCV could not write the image")


def chunk_bounds(index: int, seconds: float, fps: float) -> int:
    """First frame of chunk `index`: index * seconds * fps rounded half up, so chunks stay
    aligned to the clock even when seconds * fps is not a whole number of frames."""
    return math.floor(index * seconds * fps + 0.5)


def cut_chunks(
    video: str | os.PathLike[str], out_dir: str | os.PathLike[str], seconds: float
) -> list[dict]:
    """Cut `video` into `seconds`-long mp4 chunks `<stem>_chunk<NNN>.mp4` plus manifest.csv.

    Manifest rows: file, source, start_frame, end_frame (both inclusive, source numbering),
    frames, start_seconds, end_seconds (= (end_frame + 1) / fps), fps. Frames are decoded
    and re-encoded by OpenCV ('mp4v'), streaming: one frame in memory at a time. Rows of
    other source videos in an existing manifest.csv are kept. Returns this video's rows.
    """
    length = float(seconds)
    if not math.isfinite(length) or length <= 0:
        raise ValueError(f"seconds must be a positive number, got {seconds!r}")
    info = read_video_info(video)
    if not (math.isfinite(info.fps) and info.fps > 0):
        raise FormatError(video, f"video has no usable frame rate ({info.fps})")
    if length * info.fps < 1:  # shorter chunks would repeat a boundary: an empty chunk
        raise ValueError(f"seconds={length:g} is shorter than one frame at {info.fps:g} fps")
    stem, source = Path(video).stem, os.fspath(video)
    bar = progress(
        iter_frames(video), f"chunks of {Path(video).name}", info.frame_count or None, "frame"
    )
    frames = iter(bar)
    pending: list[tuple[int, np.ndarray] | None] = [next(frames, None)]
    rows: list[dict] = []
    with staged_directory(out_dir) as tmp:
        while pending[0] is not None:
            number = len(rows)
            stop = chunk_bounds(number + 1, length, info.fps)
            name = f"{stem}_chunk{number:03d}.mp4"
            taken: list[int] = []
            write_video(tmp / name, _take_until(frames, pending, stop, taken), info.fps)
            rows.append(_row(name, source, taken[0], taken[-1], info.fps))
        _write_manifest(Path(out_dir) / MANIFEST, tmp / MANIFEST, source, rows)
    return rows


def _take_until(
    frames: Iterator[tuple[int, np.ndarray]],
    pending: list[tuple[int, np.ndarray] | None],
    stop: int,
    taken: list[int],
) -> Iterator[np.ndarray]:
    """Frames before index `stop`, starting with the one in `pending[0]` (a one-frame
    look-ahead shared between chunks); records the indices into `taken`."""
    while pending[0] is not None and pending[0][0] < stop:
        index, frame = pending[0]
        taken.append(index)
        yield frame
        pending[0] = next(frames, None)


def _row(name: str, source: str, start: int, end: int, fps: float) -> dict:
    return {
        "file": name,
        "source": source,
        "start_frame": start,
        "end_frame": end,
        "frames": end - start + 1,
        "start_seconds": round(start / fps, 6),
        "end_seconds": round((end + 1) / fps, 6),
        "fps": fps,
    }


def _write_manifest(existing: Path, target: Path, source: str, rows: list[dict]) -> None:
    """manifest.csv with this video's rows replacing its earlier ones, others kept."""
    kept: list[dict] = []
    if existing.is_file():
        with open(existing, newline="", encoding="utf-8") as fh:
            kept = [r for r in csv.DictReader(fh) if r.get("source") != source]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(kept + rows)
    atomic_write_text(target, buffer.getvalue())
