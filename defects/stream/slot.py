"""The hand-over from the reader thread to the inference thread: one slot, latest frame wins.

A queue would let a camera that is faster than the model build a backlog, so every frame
shown would be older than the last; with one slot the model always gets the newest frame and
what it could not keep up with is dropped and counted.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

__all__ = ["Frame", "LatestSlot"]


@dataclass(frozen=True)
class Frame:
    """One RGB uint8 frame, its index in the source and when it was read (time.monotonic)."""

    index: int
    image: np.ndarray
    captured: float


class LatestSlot:
    """A slot of size one between a producer and a consumer thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False
        self.dropped = 0

    def put(self, frame: Frame, wait: bool = False) -> bool:
        """Offer a frame; an unconsumed one is replaced and counted as dropped.

        `wait=True` (a file played as fast as the model allows) instead blocks until the
        consumer has taken the previous frame, so no frame is dropped. False once closed.
        """
        with self._cond:
            if wait:
                self._cond.wait_for(lambda: self._frame is None or self._closed)
            if self._closed:
                return False
            if self._frame is not None:
                self.dropped += 1
            self._frame = frame
            self._cond.notify_all()
            return True

    def wait_empty(self) -> bool:
        """Block until the consumer has taken the frame in the slot; False once closed.

        A producer that must not drop frames calls this before it reads the next one, so a
        frame's capture time is not taken while it still waits for room.
        """
        with self._cond:
            self._cond.wait_for(lambda: self._frame is None or self._closed)
            return not self._closed

    def take(self, timeout: float | None = None) -> Frame | None:
        """The newest frame, waiting up to `timeout` s for one; None on timeout or close."""
        with self._cond:
            self._cond.wait_for(lambda: self._frame is not None or self._closed, timeout)
            frame, self._frame = self._frame, None
            if frame is not None:
                self._cond.notify_all()  # a waiting `put` may go on
            return frame

    def close(self) -> None:
        """Wake both sides for good: `put` returns False and `take` None from now on."""
        with self._cond:
            self._closed = True
            self._frame = None
            self._cond.notify_all()
