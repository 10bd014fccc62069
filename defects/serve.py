"""A small Flask page and JSON API around a loaded bundle: `python -m defects serve --model ...`.

GET /            upload form (plain inline HTML: no external assets, works offline)
POST /predict    HTML page: overlay as an inline PNG, class areas, gate probability
POST /api/predict  JSON: {image, ...the result's record} (boxes, or gate + RLE masks)
GET /health      {"status": "ok", "task": ...}

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
from werkzeug.exceptions import BadRequest, HTTPException

from defects.data.images import decode_image
from defects.formats.errors import FormatError
from defects.kinds.base import Predictor
from defects.plots import COLORS
from defects.results import Result

__all__ = ["create_app"]

_STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1700px}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}"
    "img{max-width:100%;border:1px solid #ccc}.swatch{display:inline-block;width:1em;height:1em;"
    "vertical-align:middle;margin-right:6px}.error{color:#b00020}"
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


def create_app(predictor: Predictor, max_upload_mb: int = 32, task: str | None = None) -> Flask:
    """The app around one loaded predictor of any kind; `task` defaults to the bundle's.

    Inference is serialised by a lock: the dev server is threaded, and parallel forward
    passes on a CPU only compete for the same cores.
    """
    task = task or predictor.task
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = int(max_upload_mb) * 1024 * 1024
    lock = threading.Lock()

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
        return _page("Defect inspection", form)

    @app.get("/health")
    def health() -> Response:
        return jsonify(
            {"status": "ok", "task": task, "kind": predictor.kind, "backend": predictor.backend}
        )

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
