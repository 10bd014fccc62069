"""Live figures of a stream: rates, latency percentiles, frame counts, detections, viewers.

Every window is bounded (a deque with maxlen), so a stream that runs for weeks holds the same
memory as one that runs for a minute; counters are plain integers under one lock, updated by
the reader, the inference thread and the viewers.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["RateMeter", "StreamStats"]


class RateMeter:
    """Events per second over the last `window_s` seconds (at most `maxlen` events kept)."""

    def __init__(self, window_s: float = 5.0, maxlen: int = 2048) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque(maxlen=maxlen)

    def tick(self, now: float | None = None) -> None:
        self._times.append(time.monotonic() if now is None else now)

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        recent = [t for t in self._times if now - t <= self.window_s]
        if len(recent) < 2:
            return 0.0
        # n events span n - 1 intervals; an idle tail since the last event lowers the rate.
        span = max(now - recent[0], recent[-1] - recent[0])
        return (len(recent) - 1) / span if span > 0 else 0.0


def _percentiles_ms(values: Iterable[float]) -> dict[str, float | None]:
    data = np.fromiter(values, dtype=np.float64)
    if data.size == 0:
        return {"p50": None, "p95": None}
    p50, p95 = np.percentile(data, [50, 95]) * 1000.0
    return {"p50": round(float(p50), 2), "p95": round(float(p95), 2)}


class StreamStats:
    """Counters and bounded windows; `snapshot()` is the JSON of /api/stats (less the source)."""

    def __init__(self, latency_window: int = 300, rate_window_s: float = 5.0) -> None:
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.frames_read = 0
        self.garbage = 0
        self.losses = 0
        self.inferred = 0
        self.published = 0
        self.errors = 0
        self.last_error: str | None = None
        self.viewers = 0
        self.viewers_total = 0
        self._read_rate = RateMeter(rate_window_s)
        self._model_rate = RateMeter(rate_window_s)
        self._published_rate = RateMeter(rate_window_s)
        self._latency: deque[float] = deque(maxlen=latency_window)
        self._model_time: deque[float] = deque(maxlen=latency_window)
        self.class_totals: Counter[str] = Counter()
        self.last_counts: dict[str, int] = {}

    # ------------------------------------------------------------------ reader
    def frame_read(self) -> None:
        with self._lock:
            self.frames_read += 1
            self._read_rate.tick()

    def garbage_frame(self, count: int = 1) -> None:
        with self._lock:
            self.garbage += count

    def source_lost(self) -> None:
        """The source was live and stopped: counted once per loss, not per retry."""
        with self._lock:
            self.losses += 1

    # ------------------------------------------------------------------ inference
    def inference_done(self, seconds: float) -> None:
        with self._lock:
            self.inferred += 1
            self._model_rate.tick()
            self._model_time.append(seconds)

    def frame_published(self, captured: float, counts: dict[str, int]) -> None:
        now = time.monotonic()
        with self._lock:
            self.published += 1
            self._published_rate.tick(now)
            self._latency.append(now - captured)
            self.class_totals.update(counts)
            self.last_counts = dict(counts)

    def inference_failed(self, message: str) -> None:
        with self._lock:
            self.errors += 1
            self.last_error = message

    # ------------------------------------------------------------------ viewers
    def viewer_joined(self) -> None:
        with self._lock:
            self.viewers += 1
            self.viewers_total += 1

    def viewer_left(self) -> None:
        with self._lock:
            self.viewers -= 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "uptime_s": round(time.monotonic() - self.started, 1),
                "fps": {
                    "read": round(self._read_rate.rate(), 2),
                    "model": round(self._model_rate.rate(), 2),
                    "published": round(self._published_rate.rate(), 2),
                },
                "latency_ms": _percentiles_ms(self._latency),
                "model_ms": _percentiles_ms(self._model_time),
                "frames": {
                    "read": self.frames_read,
                    "garbage": self.garbage,
                    "inferred": self.inferred,
                    "published": self.published,
                    "errors": self.errors,
                },
                "source_losses": self.losses,
                "last_error": self.last_error,
                "detections": {
                    "last_frame": dict(self.last_counts),
                    "total": dict(self.class_totals),
                },
                "viewers": self.viewers,
                "viewers_total": self.viewers_total,
            }
