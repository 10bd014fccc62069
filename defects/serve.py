"""A small Flask page and JSON API around a loaded bundle: `python -m defects serve --model ...`.

GET /            upload form (templates/index.html, static/defects.css: no external assets,
                 works offline)
POST /predict    HTML page: overlay as an inline PNG, class areas, gate probability
POST /api/predict  JSON: {image, ...the result's record} (boxes, or gate + RLE masks)
GET /health      {"status": "ok", "task", "dataset", "kind", "backend", "stream": {...} when
                 a source is streamed}
GET /metrics     Prometheus text format: requests, latency, upload findings, model info and,
                 with a source, the stream's figures (defects/serve_metrics.py)

With a live source (`create_app(..., stream=StreamConfig(source=...))`, `defects serve
--source`), also:
GET /video_feed  the source's frames with the overlay drawn, multipart/x-mixed-replace MJPEG
GET /api/stats   JSON: fps, latency, frames read/dropped/garbage, detections, viewers, status
and the page shows the video and its figures above the upload form (static/live.js polls
/api/stats; see defects/stream).

Uploads come in the multipart field `image` and go through the library's one decoder, so a
truncated or foreign file is a 400 naming the upload instead of a 500 from inside the model;
an image over `max_pixels` is a 413 decided from its header (defects/serve_uploads.py). At
most `upload_slots` uploads are read, decoded and inferred at once (the others wait up to
UPLOAD_WAIT_S, then get 503 with Retry-After): a burst of large uploads holds that many
decoded images in memory, not one per server thread.
Any kind is served: the page shows the result's own table and overlay, the JSON its record.
How the app is run (waitress or Flask's development server) is defects/server.py's job.
"""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from flask import Flask, Response, g, jsonify, render_template, request
from PIL import Image
from werkzeug.exceptions import HTTPException, NotFound, ServiceUnavailable

from defects.kinds.base import Predictor
from defects.plots import COLORS
from defects.results import Result
from defects.serve_metrics import CONTENT_TYPE, ServeMetrics
from defects.serve_uploads import DEFAULT_MAX_PIXELS, TooManyPixels, read_upload
from defects.stream import MJPEG_MIMETYPE, LiveStream, StreamConfig

__all__ = ["METRICS_EXTENSION", "STREAM_EXTENSION", "create_app", "dataset_name"]

#: where the app keeps its LiveStream: `app.extensions[STREAM_EXTENSION].close()` stops it
STREAM_EXTENSION = "defects_stream"
#: where the app keeps its ServeMetrics (its own Prometheus registry)
METRICS_EXTENSION = "defects_metrics"

#: how long a viewer over `max_viewers` waits for a slot before its 503: a viewer that left
#: frees its slot only when the server next writes to it (the next frame, at most the
#: stream's keep-alive later), so a page reload or a burst of reconnects would otherwise be
#: refused while the old connections are still being noticed
VIEWER_WAIT_S = 3.0
#: uploads read, decoded and inferred at once: inference is serialised anyway, so more only
#: holds more decoded images in memory
UPLOAD_SLOTS = 2
#: how long an upload waits for one of the UPLOAD_SLOTS before its 503 with Retry-After
UPLOAD_WAIT_S = 30.0

#: the live figures of the page: element id (filled by static/live.js) and label
LIVE_FIGURES = (
    ("fps-model", "model fps"),
    ("fps-published", "published fps"),
    ("latency", "latency p50 / p95 (capture to published)"),
    ("model-ms", "model time p50 / p95"),
    ("frames", "frames read / dropped / garbage"),
    ("errors", "frames the model failed on"),
    ("viewers", "viewers"),
    ("last", "detections in the last frame"),
    ("total", "detections since start"),
)


def dataset_name(predictor: Predictor) -> str:
    """The dataset the model was trained on: the bundle's `name` (e.g. neu_det for the weld
    task on NEU-DET), else its task."""
    meta = getattr(predictor, "meta", None) or {}
    return str(meta.get("name") or predictor.task)


def _png_data_uri(rgb: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class _HeldSlot:
    """A viewer's MJPEG body that gives its slot back once, when the server closes it (also
    when the body was never iterated: a client that left before the first frame)."""

    def __init__(self, parts: Iterator[bytes], release: Callable[[], None]) -> None:
        self._parts = parts
        self._release: Callable[[], None] | None = release

    def __iter__(self) -> _HeldSlot:
        return self

    def __next__(self) -> bytes:
        return next(self._parts)

    def close(self) -> None:
        try:
            close = getattr(self._parts, "close", None)
            if close is not None:
                close()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


def create_app(
    predictor: Predictor,
    max_upload_mb: int = 32,
    task: str | None = None,
    stream: StreamConfig | None = None,
    max_viewers: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    upload_slots: int = UPLOAD_SLOTS,
) -> Flask:
    """The app around one loaded predictor of any kind; `task` defaults to the bundle's.

    Inference is serialised by a lock: the server is threaded, and parallel forward
    passes on a CPU only compete for the same cores. With `stream`, the source's reader and
    inference threads start now (frames flow before the first viewer: the figures count
    defects whether or not anyone watches); stop them with
    `app.extensions[STREAM_EXTENSION].close()`. `max_viewers`: at most this many
    /video_feed responses at once; one more waits up to VIEWER_WAIT_S for a slot, then gets
    503 (a viewer holds one of waitress' threads for as long as it watches;
    defects/server.py sizes it); None: no limit. `max_pixels`: larger images are refused
    (413) before decoding; None: PIL's decompression-bomb limit only. `upload_slots`: uploads
    processed at once (see UPLOAD_WAIT_S).
    """
    task = task or predictor.task
    dataset = dataset_name(predictor)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = int(max_upload_mb) * 1024 * 1024
    lock = threading.Lock()
    live = LiveStream(predictor, stream, lock=lock) if stream is not None else None
    app.extensions[STREAM_EXTENSION] = live
    metrics = ServeMetrics(
        task=task,
        dataset=dataset,
        kind=predictor.kind,
        backend=predictor.backend,
        class_names=predictor.class_names,
        live=live,
    )
    app.extensions[METRICS_EXTENSION] = metrics
    if max_viewers is not None and max_viewers < 1:
        raise ValueError(f"max_viewers must be at least 1, got {max_viewers}")
    viewer_slots = threading.BoundedSemaphore(max_viewers) if max_viewers else None
    if upload_slots < 1:
        raise ValueError(f"upload_slots must be at least 1, got {upload_slots}")
    uploads = threading.BoundedSemaphore(upload_slots)

    def run(image: np.ndarray) -> Result:
        with lock:
            result = predictor.predict(image)
        metrics.uploaded(result.counts())
        return result

    def with_upload(answer: Callable[[str, np.ndarray], Any]) -> Any:
        """`answer(name, image)` for the request's upload, holding one of the upload slots."""
        if not uploads.acquire(timeout=UPLOAD_WAIT_S):
            raise ServiceUnavailable(
                f"{upload_slots} uploads are being processed and more wait: try again shortly",
                retry_after=5,
            )
        try:
            return answer(*read_upload(predictor.channels, max_pixels))
        finally:
            uploads.release()

    @app.before_request
    def started() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def answered(response: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule is not None else "(unmatched)"
        seconds = time.perf_counter() - g.get("started", time.perf_counter())
        metrics.request_done(rule, request.method, response.status_code, seconds)
        return response

    @app.errorhandler(HTTPException)
    def error(exc: HTTPException) -> tuple[Any, int, list[tuple[str, str]]]:
        message = exc.description or exc.name
        if exc.code == 413 and not isinstance(exc, TooManyPixels):
            message = f"upload too large: the limit is {max_upload_mb} MB"
        headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
        if request.path.startswith("/api/") or request.path == "/health":
            return jsonify({"error": message}), exc.code or 500, headers
        page = render_template("error.html", title=f"Error {exc.code}", message=message)
        return page, exc.code or 500, headers

    @app.get("/")
    def index() -> str:
        section = None
        if live is not None:
            section = {
                "source": live.spec.display,
                "status": live.status().text,
                "confidence": live.config.confidence,
                "figures": LIVE_FIGURES,
            }
        return render_template(
            "index.html",
            title="Defect inspection",
            task=task,
            dataset=dataset,
            class_names=predictor.class_names,
            live=section,
        )

    @app.get("/health")
    def health() -> Response:
        body: dict[str, Any] = {
            "status": "ok",
            "task": task,
            "dataset": dataset,
            "kind": predictor.kind,
            "backend": predictor.backend,
        }
        if live is not None:
            status = live.status()
            body["stream"] = {
                "source": live.spec.display,
                "status": status.text,
                "state": status.state,
                "viewers": live.stats.viewers,
            }
        return jsonify(body)

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(metrics.exposition(), content_type=CONTENT_TYPE)

    def require_stream() -> LiveStream:
        if live is None:
            raise NotFound("no live source: start the server with --source VIDEO|CAMERA|URL")
        return live

    @app.get("/video_feed")
    def video_feed() -> Response:
        source = require_stream()
        if viewer_slots is None:
            body: Any = source.mjpeg()
        elif viewer_slots.acquire(timeout=VIEWER_WAIT_S):
            body = _HeldSlot(source.mjpeg(), viewer_slots.release)
        else:
            raise ServiceUnavailable(
                f"all {max_viewers} viewer slots are taken: each viewer holds one of the "
                "server's threads; start it with more --threads",
                retry_after=5,
            )
        response = Response(body, mimetype=MJPEG_MIMETYPE)
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/api/stats")
    def api_stats() -> Response:
        return jsonify(require_stream().snapshot())

    @app.post("/api/predict")
    def api_predict() -> Response:
        return with_upload(lambda name, image: jsonify({"image": name, **run(image).record()}))

    @app.post("/predict")
    def predict_page() -> str:
        return with_upload(result_page)

    def result_page(name: str, image: np.ndarray) -> str:
        result = run(image)
        headers, rows = result.table()
        return render_template(
            "result.html",
            title=name,
            headline=result.headline(),
            headers=headers,
            rows=[(COLORS[class_id % len(COLORS)], cells) for class_id, cells in rows],
            overlay=_png_data_uri(result.overlay(image)),
        )

    return app
