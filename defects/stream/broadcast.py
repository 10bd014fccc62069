"""The latest encoded frame, shared by every viewer: published once, read by many.

The inference thread encodes each frame once and stores it here with a sequence number;
each viewer waits for a number newer than the last one it sent. A slow viewer therefore
skips to the newest frame instead of falling behind, and memory holds one frame, whatever
the number of viewers.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

__all__ = ["Broadcaster", "Published"]


@dataclass(frozen=True)
class Published:
    """An encoded frame: sequence number (1, 2, ...), JPEG bytes, capture and publish times."""

    seq: int
    jpeg: bytes
    captured: float
    published: float


class Broadcaster:
    """One writer, any number of readers, a Condition variable between them."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._latest: Published | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def publish(self, jpeg: bytes, captured: float) -> Published:
        with self._cond:
            seq = 1 if self._latest is None else self._latest.seq + 1
            self._latest = Published(seq, jpeg, captured, time.monotonic())
            self._cond.notify_all()
            return self._latest

    def latest(self) -> Published | None:
        with self._cond:
            return self._latest

    def wait_newer(self, after_seq: int, timeout: float | None = None) -> Published | None:
        """The latest frame once its number exceeds `after_seq`; None on timeout or close."""
        with self._cond:
            self._cond.wait_for(
                lambda: self._closed or (self._latest is not None and self._latest.seq > after_seq),
                timeout,
            )
            if self._closed or self._latest is None or self._latest.seq <= after_seq:
                return None
            return self._latest

    def close(self) -> None:
        """Release every waiting viewer (their responses end)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
