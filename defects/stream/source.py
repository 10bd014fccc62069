"""The reader thread: frames from a file, a camera or a URL into the slot, whatever happens.

One thread per stream owns the cv2.VideoCapture (captures are not thread-safe). A file is
paced by its frame rate, so it plays like the camera it stands in for; at its end it starts
over or the stream ends. A source that cannot be opened, stops delivering, or whose
connection drops is reopened with exponential back-off, and its state is readable at any
time for the page. A frame that is not an image (None, wrong dtype or shape, empty) is
counted and skipped: no frame a source delivers ends the thread.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import cv2
import numpy as np

from defects.stream.config import SourceSpec, StreamConfig
from defects.stream.slot import Frame, LatestSlot
from defects.stream.stats import StreamStats

__all__ = ["Capture", "FrameSource", "SourceStatus", "check_frame", "open_capture"]

log = logging.getLogger("defects")

State = Literal["connecting", "live", "reconnecting", "ended", "failed", "stopped"]
DEFAULT_FPS = 25.0


class Capture(Protocol):
    """What the reader uses of cv2.VideoCapture (tests hand in fakes)."""

    def isOpened(self) -> bool: ...  # noqa: N802 - OpenCV's name

    def read(self) -> tuple[bool, Any]: ...

    def get(self, prop: int) -> float: ...

    def release(self) -> None: ...


Opener = Callable[[SourceSpec, StreamConfig], Capture]


def open_capture(spec: SourceSpec, config: StreamConfig) -> Capture:
    """A cv2.VideoCapture of the source; URLs through FFmpeg with open and read timeouts, so
    a peer that hangs counts as lost after seconds instead of blocking the reader forever."""
    if spec.kind == "url":
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            int(config.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(config.read_timeout_s * 1000),
        ]
        return cv2.VideoCapture(str(spec.target), cv2.CAP_FFMPEG, params)
    return cv2.VideoCapture(spec.target)


def check_frame(frame: Any) -> np.ndarray | None:
    """RGB uint8 HxWx3 of a frame as OpenCV returns it (BGR, BGRA or grey); None if garbage."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.size == 0:
        return None
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.ndim != 3 or min(frame.shape[:2]) < 1:
        return None
    channels = frame.shape[2]
    if channels == 3:
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    if channels == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    if channels == 1:
        return cv2.cvtColor(frame[:, :, 0], cv2.COLOR_GRAY2RGB)
    return None


@dataclass(frozen=True)
class SourceStatus:
    """Where the source stands; `text` is what the page shows."""

    state: State
    attempt: int = 0
    next_in_s: float | None = None
    reason: str | None = None

    @property
    def text(self) -> str:
        if self.state == "reconnecting":
            when = "now" if not self.next_in_s else f"next in {self.next_in_s:.1f} s"
            return f"reconnecting (attempt {self.attempt}, {when})"
        if self.state == "failed":
            return f"failed: {self.reason}"
        return self.state

    def record(self) -> dict[str, Any]:
        return {
            "status": self.text,
            "state": self.state,
            "attempt": self.attempt,
            "next_in_s": self.next_in_s,
            "reason": self.reason,
        }


class FrameSource:
    """The reader thread of one source; `start()`, `status()`, `stop()`."""

    def __init__(
        self,
        spec: SourceSpec,
        config: StreamConfig,
        slot: LatestSlot,
        stats: StreamStats,
        opener: Opener = open_capture,
    ) -> None:
        self.spec = spec
        self.config = config
        self.slot = slot
        self.stats = stats
        self.opener = opener
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._state: State = "connecting"
        self._attempt = 0
        self._retry_at: float | None = None
        self._reason: str | None = None
        self._index = 0
        self._thread = threading.Thread(target=self._run, name="defects-stream-reader", daemon=True)

    # ------------------------------------------------------------------ control
    def start(self) -> None:
        self._thread.start()

    def request_stop(self) -> None:
        self._stop.set()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the thread to end and wait for it: at most one read timeout for a URL."""
        self._stop.set()
        if self._thread.is_alive():
            wait = timeout if timeout is not None else self.config.read_timeout_s + 2.0
            self._thread.join(wait)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def status(self) -> SourceStatus:
        with self._lock:
            next_in = None
            if self._retry_at is not None:
                next_in = round(max(0.0, self._retry_at - time.monotonic()), 1)
            return SourceStatus(self._state, self._attempt, next_in, self._reason)

    def _set(self, state: State, reason: str | None = None, retry_at: float | None = None) -> None:
        with self._lock:
            if state != self._state:
                log.info("stream source %s: %s (%s)", self.spec.display, state, reason or "-")
            self._state, self._reason, self._retry_at = state, reason, retry_at
            if state == "live":  # (back) on air: the back-off starts over at the next loss
                self._attempt = 0

    # ------------------------------------------------------------------ thread
    def _run(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # a bug, not a source problem: say so on the page
            log.exception("stream reader of %s crashed", self.spec.display)
            self._set("failed", f"reader error: {exc!r}")
        finally:
            if self._stop.is_set() and self._state not in ("ended", "failed"):
                self._set("stopped")

    def _loop(self) -> None:
        ever_delivered = False
        while not self._stop.is_set():
            capture = self._open()
            if capture is None:
                reason = "cannot open source"
                delivered = 0
                outcome = "lost"
            else:
                try:
                    delivered, outcome, reason = self._pump(capture)
                finally:
                    capture.release()
            if outcome == "stopped" or self._stop.is_set():
                return
            was_delivering, ever_delivered = bool(delivered), ever_delivered or bool(delivered)
            if outcome == "eof" and delivered:
                if not self.config.loop:
                    self._set("ended", "end of file")
                    return
                continue  # start the file over at once
            if outcome == "eof":
                reason = "no frames (empty or undecodable video)"
            if not self.spec.live and not ever_delivered:
                # A file that never gave a frame will not start to: say so instead of retrying.
                self._set("failed", f"{self.spec.display}: {reason}")
                return
            if was_delivering:
                self.stats.source_lost()
            if not self._wait_to_retry(reason):
                return

    def _wait_to_retry(self, reason: str) -> bool:
        """Back off before the next attempt; False once attempts are spent or on stop."""
        with self._lock:
            self._attempt += 1
            attempt = self._attempt
        backoff = self.config.backoff
        if backoff.exhausted(attempt):
            self._set("failed", f"{reason}; gave up after {backoff.max_attempts} attempts")
            return False
        delay = backoff.delay(attempt)
        self._set("reconnecting", reason, time.monotonic() + delay)
        return not self._stop.wait(delay)

    def _open(self) -> Capture | None:
        try:
            capture = self.opener(self.spec, self.config)
        except Exception as exc:  # an opener that raises is a source that cannot be opened
            log.warning("stream source %s: open failed: %r", self.spec.display, exc)
            return None
        if not capture.isOpened():
            capture.release()
            return None
        return capture

    def _frame_period(self, capture: Capture) -> float | None:
        """Seconds between frames when a file is played in real time; None: no pacing."""
        if self.spec.live or not self.config.realtime:
            return None
        fps = self.config.fps or float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        if not (math.isfinite(fps) and 0 < fps <= 1000):
            fps = DEFAULT_FPS
        return 1.0 / fps

    def _pump(self, capture: Capture) -> tuple[int, str, str]:
        """Read until the end, a loss or stop: (frames delivered, outcome, reason)."""
        period = self._frame_period(capture)
        wait = not self.spec.live and not self.config.realtime
        delivered = failures = 0
        started = time.monotonic()
        while not self._stop.is_set():
            if wait and not self.slot.wait_empty():
                break
            ok, raw = capture.read()
            if not ok:
                if not self.spec.live:
                    return delivered, "eof", "end of file"
                failures += 1
                if failures >= self.config.max_read_failures:
                    return delivered, "lost", "stream stopped delivering frames"
                continue
            if failures:  # reads failed between good ones: undecodable frames, not a loss
                self.stats.garbage_frame(failures)
                failures = 0
            image = check_frame(raw)
            if image is None:
                self.stats.garbage_frame()
                continue
            if delivered == 0:
                self._set("live")
            if period is not None:
                due = started + delivered * period
                lag = due - time.monotonic()
                if lag > 0:
                    if self._stop.wait(lag):
                        break
                elif lag < -period:  # fell behind (a slow decode): do not burst to catch up
                    started = time.monotonic() - delivered * period
            self._index += 1
            if not self.slot.put(Frame(self._index, image, time.monotonic()), wait=wait):
                break
            self.stats.frame_read()
            delivered += 1
        return delivered, "stopped", "stopped"
