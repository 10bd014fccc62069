"""A small Flask page and JSON API around a loaded bundle: `python -m defects serve --model ...`.

GET /            upload form (plain inline HTML: no external assets, works offline)
POST /predict    HTML page: overlay as an inline PNG, class areas, gate probability
POST /api/predict  JSON: {image, ...the result's record} (boxes, or gate + RLE masks)
GET /health      {"status": "ok", "task": ..., "stream": {...} when a source is streamed}

With a live source (`create_app(..., stream=StreamConfig(source=...))`, `defects serve
--source`), also:
GET /video_feed  the source's frames with the overlay drawn, multipart/x-mixed-replace MJPEG
GET /api/stats   JSON: fps, latency, frames read/dropped/garbage, detections, viewers, status
and the page shows the video and its figures above the upload form (see defects/stream).

Uploads come in the multipart field `image` and go through the library's one decoder, so a
truncated or foreign file is a 400 naming the upload instead of a 500 from inside the model.
Any kind is served: the page shows the result's own table and overlay, the JSON its record.
"""

from __future__ import annotations

import base64
import html
import io
import threading
from pathlib import PurePosixPath
from typing import Any

import numpy as np
from flask import Flask, Response, jsonify, request
from PIL import Image
from werkzeug.exceptions import BadRequest, HTTPException, NotFound

from defects.data.images import decode_image
from defects.formats.errors import FormatError
from defects.kinds.base import Predictor
from defects.plots import COLORS
from defects.results import Result
from defects.stream import MJPEG_MIMETYPE, LiveStream, StreamConfig

__all__ = ["STREAM_EXTENSION", "create_app"]

#: where the app keeps its LiveStream: `app.extensions[STREAM_EXTENSION].close()` stops it
STREAM_EXTENSION = "defects_stream"

_STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1700px}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}"
    "img{max-width:100%;border:1px solid #ccc}.swatch{display:inline-block;width:1em;height:1em;"
    "vertical-align:middle;margin-right:6px}.error{color:#b00020}"
    ".live{display:flex;flex-wrap:wrap;gap:1.5em;align-items:flex-start}"
    ".live img{background:#222;min-width:320px}.state{font-weight:bold;color:#1b7f3b}"
    ".state.down{color:#b00020}.figures td:nth-child(2){text-align:right;font-family:monospace}"
)

# Polls /api/stats once a second and fills the figures; reloads the video after a broken
# connection (server restarted). textContent only: nothing from the JSON is parsed as HTML.
_LIVE_SCRIPT = """
(function(){
  var feed=document.getElementById('feed');
  function put(id,text){var e=document.getElementById(id);if(e)e.textContent=text;}
  function ms(v){return v===null||v===undefined?'-':v.toFixed(1)+' ms';}
  function counts(o){var k=Object.keys(o||{}).sort();
    return k.length?k.map(function(n){return n+': '+o[n];}).join(', '):'none';}
  function poll(){
    fetch('/api/stats',{cache:'no-store'}).then(function(r){return r.json();}).then(function(s){
      var st=document.getElementById('status');st.textContent=s.status+(s.reason&&s.state!=='live'?
        ' \u2014 '+s.reason:'');st.className='state'+(s.state==='live'?'':' down');
      put('fps-model',s.fps.model.toFixed(1));put('fps-published',s.fps.published.toFixed(1));
      put('latency',ms(s.latency_ms.p50)+' / '+ms(s.latency_ms.p95));
      put('model-ms',ms(s.model_ms.p50)+' / '+ms(s.model_ms.p95));
      put('frames',s.frames.read+' / '+s.frames.dropped+' / '+s.frames.garbage);
      put('errors',String(s.frames.errors));put('viewers',String(s.viewers));
      put('last',counts(s.detections.last_frame));put('total',counts(s.detections.total));
    }).catch(function(){var st=document.getElementById('status');
      st.textContent='server unreachable';st.className='state down';});
  }
  feed.onerror=function(){setTimeout(function(){feed.src='/video_feed?t='+Date.now();},2000);};
  poll();setInterval(poll,1000);
})();
"""


def _live_section(live: LiveStream) -> str:
    """The video, its figures (filled by _LIVE_SCRIPT) and the source status."""
    rows = [
        ("fps-model", "model fps"),
        ("fps-published", "published fps"),
        ("latency", "latency p50 / p95 (capture to published)"),
        ("model-ms", "model time p50 / p95"),
        ("frames", "frames read / dropped / garbage"),
        ("errors", "frames the model failed on"),
        ("viewers", "viewers"),
        ("last", "detections in the last frame"),
        ("total", "detections since start"),
    ]
    table = "".join(
        f"<tr><th>{html.escape(label)}</th><td id='{key}'>-</td></tr>" for key, label in rows
    )
    confidence = live.config.confidence
    cut = "" if confidence is None else f", confidence &ge; {confidence:.2f}"
    return (
        f"<h2>Live: {html.escape(live.spec.display)}</h2>"
        f"<p>Source: <span id='status' class='state'>{html.escape(live.status().text)}</span>"
        f"{cut}</p><div class='live'>"
        "<img id='feed' src='/video_feed' alt='live video with the model overlay'>"
        f"<table class='figures'>{table}</table></div>"
        f"<script>{_LIVE_SCRIPT}</script><h2>Single image</h2>"
    )


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


def _png_data_uri(rgb: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _swatch(class_id: int) -> str:
    return f"<span class='swatch' style='background:{COLORS[class_id % len(COLORS)]}'></span>"


def _read_upload(channels: int) -> tuple[str, np.ndarray]:
    """(file name, uint8 array) of the `image` upload; BadRequest naming it when unusable."""
    upload = request.files.get("image")  # raises 413 first when the body is over the limit
    if upload is None:
        raise BadRequest("no upload: send the image as multipart/form-data field 'image'")
    name = PurePosixPath((upload.filename or "").replace("\\", "/")).name or "upload"
    data = upload.read()
    if not data:
        raise BadRequest(f"upload '{name}' is empty (0 bytes)")
    try:
        array = decode_image(data, channels, name=name)
    except FormatError as exc:
        raise BadRequest(f"upload {exc}") from None
    return name, array


def create_app(
    predictor: Predictor,
    max_upload_mb: int = 32,
    task: str | None = None,
    stream: StreamConfig | None = None,
) -> Flask:
    """The app around one loaded predictor of any kind; `task` defaults to the bundle's.

    Inference is serialised by a lock: the dev server is threaded, and parallel forward
    passes on a CPU only compete for the same cores. With `stream`, the source's reader and
    inference threads start now (frames flow before the first viewer: the figures count
    defects whether or not anyone watches); stop them with
    `app.extensions[STREAM_EXTENSION].close()`.
    """
    task = task or predictor.task
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = int(max_upload_mb) * 1024 * 1024
    lock = threading.Lock()
    live = LiveStream(predictor, stream, lock=lock) if stream is not None else None
    app.extensions[STREAM_EXTENSION] = live

    def run(image: np.ndarray) -> Result:
        with lock:
            return predictor.predict(image)

    @app.errorhandler(HTTPException)
    def error(exc: HTTPException) -> tuple[Any, int]:
        message = exc.description or exc.name
        if exc.code == 413:
            message = f"upload too large: the limit is {max_upload_mb} MB"
        if request.path.startswith("/api/") or request.path == "/health":
            return jsonify({"error": message}), exc.code or 500
        body = f"<p class='error'>{html.escape(message)}</p><p><a href='/'>back</a></p>"
        return _page(f"Error {exc.code}", body), exc.code or 500

    @app.get("/")
    def index() -> str:
        names = ", ".join(html.escape(n) for n in predictor.class_names)
        form = (
            f"<p>Task: {html.escape(task)}. Classes: {names}.</p>"
            "<form method='post' action='/predict' enctype='multipart/form-data'>"
            "<input type='file' name='image' accept='image/*' required> "
            "<button type='submit'>Predict</button></form>"
            "<p>JSON: <code>curl -F image=@strip.png http://HOST/api/predict</code></p>"
        )
        return _page("Defect inspection", (_live_section(live) if live else "") + form)

    @app.get("/health")
    def health() -> Response:
        body: dict[str, Any] = {
            "status": "ok",
            "task": task,
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

    def require_stream() -> LiveStream:
        if live is None:
            raise NotFound("no live source: start the server with --source VIDEO|CAMERA|URL")
        return live

    @app.get("/video_feed")
    def video_feed() -> Response:
        response = Response(require_stream().mjpeg(), mimetype=MJPEG_MIMETYPE)
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/api/stats")
    def api_stats() -> Response:
        return jsonify(require_stream().snapshot())

    @app.post("/api/predict")
    def api_predict() -> Response:
        name, image = _read_upload(predictor.channels)
        return jsonify({"image": name, **run(image).record()})

    @app.post("/predict")
    def predict_page() -> str:
        name, image = _read_upload(predictor.channels)
        result = run(image)
        headers, rows = result.table()
        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        body_rows = "".join(
            "<tr>"
            + "".join(
                f"<td>{_swatch(class_id) if i == 0 else ''}{html.escape(str(cell))}</td>"
                for i, cell in enumerate(cells)
            )
            + "</tr>"
            for class_id, cells in rows
        )
        body = (
            f"<p>{html.escape(result.headline())}</p><table><tr>{head}</tr>{body_rows}</table>"
            f"<p><img alt='prediction overlay' src='{_png_data_uri(result.overlay(image))}'></p>"
            "<p><a href='/'>another image</a></p>"
        )
        return _page(name, body)

    return app
