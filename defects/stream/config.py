"""What a live stream is configured by: the source, its end-of-file rule, pacing, back-off.

Kept apart from the threads so the CLI, the app and the tests build the same configuration,
and a bad `--source` is refused when the app is created instead of inside a reader thread.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

__all__ = ["Backoff", "SourceSpec", "StreamConfig", "parse_source"]

SourceKind = Literal["file", "camera", "url"]


@dataclass(frozen=True)
class Backoff:
    """Delays between reconnection attempts: `initial_s * factor**(attempt - 1)`, capped.

    Capped so a camera that comes back after an hour is picked up within `max_s`;
    `max_attempts` (None = forever) turns a source that never returns into "failed".
    """

    initial_s: float = 0.5
    factor: float = 2.0
    max_s: float = 10.0
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        if not (self.initial_s > 0 and self.factor >= 1 and self.max_s >= self.initial_s):
            raise ValueError(
                f"back-off needs initial_s > 0, factor >= 1, max_s >= initial_s, got {self}"
            )
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1 or None, got {self.max_attempts}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt number `attempt` (1-based)."""
        return min(self.max_s, self.initial_s * self.factor ** max(attempt - 1, 0))

    def exhausted(self, attempt: int) -> bool:
        return self.max_attempts is not None and attempt > self.max_attempts


@dataclass(frozen=True)
class SourceSpec:
    """A parsed source: a video file, a camera index or a network URL (HTTP MJPEG, RTSP...)."""

    kind: SourceKind
    target: str | int

    @property
    def live(self) -> bool:
        """Cameras and URLs deliver frames at their own pace and have no "end of file"."""
        return self.kind != "file"

    @property
    def display(self) -> str:
        """The source as shown on the page and in /api/stats: URL credentials removed."""
        if self.kind == "camera":
            return f"camera {self.target}"
        if self.kind == "url":
            parts = urlsplit(str(self.target))
            if parts.username or parts.password:
                host = parts.hostname or ""
                netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
                return urlunsplit(parts._replace(netloc=netloc))
        return str(self.target)


def parse_source(value: str | int | os.PathLike[str]) -> SourceSpec:
    """`0` / `"0"` -> camera 0, `"rtsp://..."` -> URL, anything else -> an existing video file.

    A file that is not there is a FileNotFoundError now: retrying a typo forever would only
    show "reconnecting" on the page.
    """
    if isinstance(value, bool):
        raise ValueError(f"--source: expected a video file, camera index or URL, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"--source: camera index must be >= 0, got {value}")
        return SourceSpec("camera", value)
    text = os.fspath(value).strip()
    if not text:
        raise ValueError("--source: empty")
    if text.isdigit():
        return SourceSpec("camera", int(text))
    if "://" in text:
        return SourceSpec("url", text)
    path = Path(text)
    if not path.exists():
        raise FileNotFoundError(f"--source: {path} does not exist")
    if not path.is_file():
        raise FileNotFoundError(f"--source: {path} is not a file")
    return SourceSpec("file", str(path))


@dataclass(frozen=True)
class StreamConfig:
    """Everything `defects serve --source ...` streams by.

    - `loop`: a file starts over at its end (True) or the stream ends ("ended").
    - `realtime`: a file is played at its own frame rate (`fps` overrides it; 25 when the
      container has none), and frames the model cannot keep up with are dropped, as with a
      camera. False: every frame of a file is inferred as fast as the model allows.
    - `confidence`: detections scoring below it are not drawn or counted (None: the bundle's).
    - `open_timeout_s` / `read_timeout_s`: how long a URL may hang before it counts as lost.
    - `max_read_failures`: consecutive failed reads of a camera or URL that mean "lost"; fewer
      are undecodable frames (a corrupt JPEG part) and are counted as garbage.
    - `keepalive_s`: an idle viewer is re-sent the latest frame this often, so the page keeps
      its picture and a closed browser tab is noticed even while the source is down.
    """

    source: str | int
    loop: bool = True
    realtime: bool = True
    fps: float | None = None
    confidence: float | None = None
    jpeg_quality: int = 80
    backoff: Backoff = field(default_factory=Backoff)
    open_timeout_s: float = 5.0
    read_timeout_s: float = 5.0
    max_read_failures: int = 5
    keepalive_s: float = 1.0
    latency_window: int = 300
    rate_window_s: float = 5.0

    def __post_init__(self) -> None:
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps must be a positive number, got {self.fps!r}")
        if self.confidence is not None and not 0.0 <= float(self.confidence) <= 1.0:
            raise ValueError(f"--confidence must be within [0, 1], got {self.confidence!r}")
        if not 1 <= int(self.jpeg_quality) <= 100:
            raise ValueError(f"jpeg_quality must be within [1, 100], got {self.jpeg_quality}")
        if self.max_read_failures < 1 or self.latency_window < 1:
            raise ValueError("max_read_failures and latency_window must be >= 1")
        if self.keepalive_s <= 0 or self.rate_window_s <= 0:
            raise ValueError("keepalive_s and rate_window_s must be > 0")
