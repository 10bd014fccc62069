"""A live stream: one reader thread, one inference thread, a broadcaster, its figures.

`LiveStream(predictor, StreamConfig(source=...))` starts both threads; `mjpeg()` is one
viewer's multipart/x-mixed-replace body; `snapshot()` the figures of /api/stats; `close()`
(or leaving a `with` block) stops the threads and ends every viewer's response.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any

from defects.kinds.base import Predictor
from defects.stream.broadcast import Broadcaster, Published
from defects.stream.config import SourceSpec, StreamConfig, parse_source
from defects.stream.inference import InferenceLoop
from defects.stream.slot import LatestSlot
from defects.stream.source import FrameSource, Opener, SourceStatus, open_capture
from defects.stream.stats import StreamStats

__all__ = ["BOUNDARY", "LiveStream", "MJPEG_MIMETYPE", "mjpeg_part"]

BOUNDARY = "frame"
MJPEG_MIMETYPE = f"multipart/x-mixed-replace; boundary={BOUNDARY}"


def mjpeg_part(jpeg: bytes) -> bytes:
    """One part of a multipart/x-mixed-replace body: what browsers and FFmpeg both read."""
    head = (
        f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
    ).encode("ascii")
    return head + jpeg + b"\r\n"


class LiveStream:
    """The threads and shared state of one source; thread-safe for any number of viewers."""

    def __init__(
        self,
        predictor: Predictor,
        config: StreamConfig,
        lock: AbstractContextManager[Any] | None = None,
        opener: Opener = open_capture,
        start: bool = True,
    ) -> None:
        self.config = config
        self.spec: SourceSpec = parse_source(config.source)
        self.stats = StreamStats(config.latency_window, config.rate_window_s)
        self.slot = LatestSlot()
        self.broadcaster = Broadcaster()
        self.source = FrameSource(self.spec, config, self.slot, self.stats, opener)
        self.inference = InferenceLoop(
            predictor,
            self.slot,
            self.broadcaster,
            self.stats,
            config.confidence,
            config.jpeg_quality,
            lock,
        )
        self._started = False
        self._closed = False
        self._start_lock = threading.Lock()
        if start:
            self.start()

    # ------------------------------------------------------------------ lifetime
    def start(self) -> None:
        with self._start_lock:
            if self._started or self._closed:
                return
            self._started = True
            self.inference.start()
            self.source.start()

    def close(self) -> None:
        """Stop reading and inferring, end every viewer's response; safe to call twice."""
        with self._start_lock:
            if self._closed:
                return
            self._closed = True
        self.source.request_stop()  # both threads get the stop before either is waited for
        self.inference.request_stop()
        self.broadcaster.close()
        self.slot.close()
        self.inference.stop()
        self.source.stop()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def alive(self) -> bool:
        """True while the reader or the inference thread is still running."""
        return self.source.alive or self.inference.alive

    def __enter__(self) -> LiveStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ viewers
    def status(self) -> SourceStatus:
        return self.source.status()

    def latest(self) -> Published | None:
        return self.broadcaster.latest()

    def mjpeg(self) -> Iterator[bytes]:
        """One viewer: the newest frame each time there is a newer one, never a backlog.

        With no new frame for `keepalive_s` (source lost, file ended) the latest frame is sent
        again, so the picture stays and a viewer that left is noticed (the write fails and
        the server closes this generator). Ends when the stream is closed.
        """
        self.stats.viewer_joined()
        try:
            last = 0
            while not self.broadcaster.closed:
                item = self.broadcaster.wait_newer(last, self.config.keepalive_s)
                if item is None:
                    item = self.broadcaster.latest()
                    if item is None or self.broadcaster.closed:
                        continue
                last = item.seq
                yield mjpeg_part(item.jpeg)
        finally:
            self.stats.viewer_left()

    def snapshot(self) -> dict[str, Any]:
        """The JSON of /api/stats: the stream's figures, the source and its status."""
        latest = self.broadcaster.latest()
        figures = self.stats.snapshot()
        figures["frames"]["dropped"] = self.slot.dropped
        return {
            "source": self.spec.display,
            "source_kind": self.spec.kind,
            **self.status().record(),
            "confidence": self.config.confidence,
            "seq": latest.seq if latest is not None else 0,
            **figures,
        }
