"""The one inference thread of a stream: newest frame -> model -> overlay -> JPEG -> viewers.

However many people watch, each frame is inferred, drawn and JPEG-encoded once here and the
bytes are shared (see broadcast.py): the model's load does not grow with the audience. A
frame the model fails on is counted and skipped, so one bad frame does not end the stream.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import cv2
import numpy as np

from defects.kinds.base import Predictor
from defects.results import Result
from defects.stream.broadcast import Broadcaster
from defects.stream.slot import LatestSlot
from defects.stream.stats import StreamStats

__all__ = ["InferenceLoop", "encode_jpeg", "apply_confidence"]

log = logging.getLogger("defects")


def apply_confidence(result: Result, confidence: float | None) -> Result:
    """The result cut at `confidence` (a box's score, a segmenter's gate); None: as it is."""
    return result if confidence is None else result.above(confidence)


def encode_jpeg(rgb: np.ndarray, quality: int = 80) -> bytes:
    ok, buffer = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    )
    if not ok:
        raise ValueError(f"cannot encode a {rgb.shape} frame as JPEG")
    return buffer.tobytes()


class InferenceLoop:
    """The thread between the slot and the broadcaster; `start()`, `stop()`."""

    def __init__(
        self,
        predictor: Predictor,
        slot: LatestSlot,
        broadcaster: Broadcaster,
        stats: StreamStats,
        confidence: float | None = None,
        jpeg_quality: int = 80,
        lock: AbstractContextManager[Any] | None = None,
    ) -> None:
        self.predictor = predictor
        self.slot = slot
        self.broadcaster = broadcaster
        self.stats = stats
        self.confidence = confidence
        self.jpeg_quality = jpeg_quality
        # Shared with the upload endpoints: parallel forward passes only compete for cores.
        self.lock = lock if lock is not None else nullcontext()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="defects-stream-inference", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def request_stop(self) -> None:
        self._stop.set()

    def stop(self, timeout: float = 10.0) -> None:
        """End after the frame in hand (one forward pass at most)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            frame = self.slot.take(timeout=0.25)
            if frame is None:
                continue
            try:
                started = time.monotonic()
                with self.lock:
                    result = self.predictor.predict(frame.image)
                self.stats.inference_done(time.monotonic() - started)
                result = apply_confidence(result, self.confidence)
                jpeg = encode_jpeg(result.overlay(frame.image), self.jpeg_quality)
            except Exception as exc:  # noqa: BLE001 - any model failure is one lost frame
                self.stats.inference_failed(f"frame {frame.index}: {exc!r}")
                if self.stats.errors == 1 or self.stats.errors % 100 == 0:  # no log flood
                    log.warning(
                        "stream: frame %d skipped (%d so far): %r",
                        frame.index,
                        self.stats.errors,
                        exc,
                    )
                continue
            self.broadcaster.publish(jpeg, frame.captured)
            self.stats.frame_published(frame.captured, result.counts())
