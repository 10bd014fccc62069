"""Read frames from, and write frames to, video files with OpenCV (RGB uint8 everywhere).

Frames are cut from videos for labelling and training, so a file that cannot be opened or
decodes to nothing must fail with its name instead of giving an empty dataset.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from defects.formats.errors import FormatError
from defects.formats.io import atomic_write_with

__all__ = ["VideoInfo", "read_video_info", "iter_frames", "write_video"]

# A frame whose time lies this close below a sampling instant still counts as reaching it
# (frame times are i / fps in floating point).
_TIME_EPS = 1e-6


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video; ``frame_count`` may be an estimate for some codecs."""

    fps: float
    frame_count: int
    width: int
    height: int


def _open(path: str | os.PathLike[str]) -> cv2.VideoCapture:
    """An opened capture, or FormatError naming the file (missing, not a file, not a video)."""
    source = Path(path)
    if not source.exists():
        raise FormatError(source, "video file not found")
    if not source.is_file():
        raise FormatError(source, "not a regular file")
    if source.stat().st_size == 0:
        raise FormatError(source, "empty file (0 bytes)")
    capture = cv2.VideoCapture(str(source))
    if not capture.isOpened():
        capture.release()
        raise FormatError(source, "cannot open video (unknown container or codec)")
    return capture


def read_video_info(path: str | os.PathLike[str]) -> VideoInfo:
    """Frame rate, frame count and size of a video, without decoding it."""
    capture = _open(path)
    try:
        info = VideoInfo(
            fps=float(capture.get(cv2.CAP_PROP_FPS)),
            frame_count=max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0),
            width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )
    finally:
        capture.release()
    if info.width <= 0 or info.height <= 0:
        raise FormatError(path, f"video has no frame size ({info.width}x{info.height})")
    return info


def _check_step(
    every_k: int | None, every_seconds: float | None
) -> tuple[int | None, float | None]:
    """Exactly one sampling rule; plain ``iter_frames(path)`` means every frame."""
    if every_k is not None and every_seconds is not None:
        raise ValueError("give either every_k or every_seconds, not both")
    if every_seconds is None:
        k = 1 if every_k is None else every_k
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"every_k must be an integer >= 1, got {every_k!r}")
        return k, None
    seconds = float(every_seconds)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"every_seconds must be a positive number, got {every_seconds!r}")
    return None, seconds


def iter_frames(
    path: str | os.PathLike[str],
    every_k: int | None = None,
    every_seconds: float | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(frame_index, rgb)`` for every ``every_k``-th frame or one frame per period.

    ``every_k=k`` keeps frames 0, k, 2k, ...; ``every_seconds=s`` keeps the first frame at or
    after each instant 0, s, 2s, ... (frame i is at time i / fps), so no more than one frame per
    period even when s is shorter than a frame. Frames are C-contiguous uint8 HxWx3 RGB.
    The file is opened and its first frame decoded before this returns, so a missing,
    unreadable or frameless video raises FormatError naming it right here, not mid-loop.
    """
    k, seconds = _check_step(every_k, every_seconds)
    capture = _open(path)
    try:
        fps = float(capture.get(cv2.CAP_PROP_FPS))
        if seconds is not None and not (math.isfinite(fps) and fps > 0):
            raise FormatError(path, f"video has no usable frame rate ({fps}) for every_seconds")
        ok, first = capture.read()
        if not ok or first is None:
            raise FormatError(path, "video yields no frames (empty or undecodable)")
    except BaseException:
        capture.release()
        raise
    return _frames(capture, first, k, seconds, fps)


def _frames(
    capture: cv2.VideoCapture, first: np.ndarray, k: int | None, seconds: float | None, fps: float
) -> Iterator[tuple[int, np.ndarray]]:
    """The sampling loop; skipped frames are only grabbed (no colour conversion, no copy)."""
    try:
        yield 0, cv2.cvtColor(first, cv2.COLOR_BGR2RGB)
        next_time = 0.0 if seconds is None else seconds
        index = 0
        while True:
            index += 1
            wanted = index % k == 0 if k is not None else index / fps >= next_time - _TIME_EPS
            if not wanted:
                if not capture.grab():
                    return
                continue
            ok, frame = capture.read()
            if not ok or frame is None:
                return
            if seconds is not None:
                # The next instant strictly after this frame's time.
                next_time = (math.floor(index / fps / seconds + _TIME_EPS) + 1) * seconds
            yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


def write_video(path: str | os.PathLike[str], frames: Iterable[np.ndarray], fps: float) -> Path:
    """Write RGB uint8 frames (all the same HxWx3 size) as an 'mp4v' .mp4 file, atomically.

    The video is encoded under a hidden temp name ending in .mp4 (OpenCV picks the container
    from the suffix) next to ``path`` and renamed in only when complete, so an interrupted run
    never leaves a truncated video a reader would take for a short one. Returns ``path``.
    """
    target = Path(path)
    if target.suffix.lower() != ".mp4":
        raise ValueError(f"{target}: write_video writes .mp4 files only")
    rate = float(fps)
    if not math.isfinite(rate) or rate <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")

    def encode(tmp: Path) -> None:
        writer: cv2.VideoWriter | None = None
        size: tuple[int, ...] = ()
        count = 0
        try:
            for frame in frames:
                array = np.asarray(frame)
                if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
                    raise ValueError(
                        f"{target}: frame {count} must be uint8 HxWx3 RGB, "
                        f"got {array.dtype} {array.shape}"
                    )
                if writer is None:
                    size = array.shape
                    height, width = size[:2]
                    fourcc = cv2.VideoWriter_fourcc(*"mp4v")
                    writer = cv2.VideoWriter(str(tmp), fourcc, rate, (width, height))
                    if not writer.isOpened():
                        raise OSError(
                            f"{target}: OpenCV cannot open an 'mp4v' video writer "
                            f"({width}x{height} at {rate:g} fps); is its FFmpeg backend missing?"
                        )
                elif array.shape != size:
                    raise ValueError(
                        f"{target}: frame {count} is {array.shape}, the first frame was {size}"
                    )
                writer.write(cv2.cvtColor(array, cv2.COLOR_RGB2BGR))
                count += 1
        finally:
            if writer is not None:
                writer.release()
        if count == 0:
            raise ValueError(f"{target}: no frames to write")

    return atomic_write_with(target, encode)
