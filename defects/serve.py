"""A small Flask page and JSON API around a loaded bundle: `python -m defects serve --model ...`.

GET /            upload form (plain inline HTML: no external assets, works offline)
POST /predict    HTML page: overlay as an inline PNG, class areas, gate probability
POST /api/predict  JSON; segmentation: {image, gate, shape, classes: {name: {area, rle}}}
GET /health      {"status": "ok", "task": ...}

Uploads come in the multipart field `image` and are decoded strictly with PIL (`load()`), so a
truncated or foreign file is a 400 naming the upload instead of a 500 from inside the model.
Detection bundles are served too: boxes in the JSON, drawn boxes on the page.
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
from PIL import Image, UnidentifiedImageError
from werkzeug.exceptions import BadRequest, HTTPException

from defects.formats.severstal import rle_encode
from defects.plots import COLORS, overlay_masks
from defects.predict import (
    DetectionPredictor,
    Detections,
    SegmentationPredictor,
    SegmentationResult,
)

__all__ = ["create_app", "detection_records", "segmentation_record"]

_STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1700px}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}"
    "img{max-width:100%;border:1px solid #ccc}.swatch{display:inline-block;width:1em;height:1em;"
    "vertical-align:middle;margin-right:6px}.error{color:#b00020}"
)


def detection_records(det: Detections) -> list[dict[str, Any]]:
    """Detections as JSON-ready rows; shared by `defects predict` and /api/predict."""
    return [
        {"label": label, "score": round(float(s), 4), "box": [round(float(v), 1) for v in box]}
        for label, s, box in zip(det.labels, det.scores, det.boxes, strict=True)
    ]


def segmentation_record(name: str, result: SegmentationResult) -> dict[str, Any]:
    """JSON for one image: only present classes, each with its area and Severstal RLE.

    `shape` is included because an RLE cannot be decoded without the image size.
    """
    return {
        "image": name,
        "gate": round(result.gate, 4),
        "shape": list(result.masks.shape[1:]),
        "classes": {
            cls: {"area": int(mask.sum()), "rle": rle_encode(mask)}
            for cls, mask in zip(result.class_names, result.masks, strict=True)
            if mask.any()
        },
    }


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


def _draw_boxes(image: np.ndarray, det: Detections) -> np.ndarray:
    """RGB copy of `image` with each box drawn in its class colour (the same as in plots)."""
    import cv2
    from matplotlib.colors import to_rgb

    rgb = np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image.copy()
    rgb = np.ascontiguousarray(rgb)
    for box, class_id, label, score in zip(
        det.boxes, det.class_ids, det.labels, det.scores, strict=True
    ):
        color = tuple(int(255 * c) for c in to_rgb(COLORS[int(class_id) % len(COLORS)]))
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        cv2.rectangle(rgb, (x1, y1), (x2, y2), color, 2)
        cv2.putText(
            rgb,
            f"{label} {score:.2f}",
            (x1, max(y1 - 4, 12)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            color,
            1,
            cv2.LINE_AA,
        )
    return rgb


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
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # decode everything now: a truncated file must fail here
            array = np.array(image.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
    ) as exc:
        raise BadRequest(f"upload '{name}' is not a readable image ({exc})") from None
    return name, array


def create_app(
    predictor: SegmentationPredictor | DetectionPredictor,
    max_upload_mb: int = 32,
    task: str | None = None,
) -> Flask:
    """The app around one loaded predictor; `task` defaults to the predictor's kind.

    Inference is serialised by a lock: the dev server is threaded, and parallel forward
    passes on a CPU only compete for the same cores.
    """
    segmentation = isinstance(predictor, SegmentationPredictor)
    task = (
        task
        or getattr(predictor, "task", None)
        or ("segmentation" if segmentation else "detection")
    )
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = int(max_upload_mb) * 1024 * 1024
    lock = threading.Lock()

    def run(image: np.ndarray) -> Any:
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
        return jsonify({"status": "ok", "task": task})

    @app.post("/api/predict")
    def api_predict() -> Response:
        name, image = _read_upload(predictor.channels)
        result = run(image)
        if segmentation:
            return jsonify(segmentation_record(name, result))
        return jsonify({"image": name, "detections": detection_records(result)})

    @app.post("/predict")
    def predict_page() -> str:
        name, image = _read_upload(predictor.channels)
        result = run(image)
        if segmentation:
            picture = overlay_masks(image, result.masks)
            rows = "".join(
                f"<tr><td>{_swatch(k)}{html.escape(cls)}</td><td>{area}</td></tr>"
                for k, (cls, area) in enumerate(result.areas().items())
            )
            verdict = ", ".join(result.present) or "no defect"
            summary = (
                f"<p>Gate probability {result.gate:.3f} (threshold "
                f"{predictor.thresholds.gate:.2f}). Found: {html.escape(verdict)}.</p>"
                f"<table><tr><th>class</th><th>area (pixels)</th></tr>{rows}</table>"
            )
        else:
            picture = _draw_boxes(image, result)
            rows = "".join(
                f"<tr><td>{_swatch(int(c))}{html.escape(r['label'])}</td><td>{r['score']:.3f}</td>"
                f"<td>{r['box']}</td></tr>"
                for c, r in zip(result.class_ids, detection_records(result), strict=True)
            )
            summary = (
                f"<p>{len(result)} detection(s).</p><table><tr><th>class</th><th>score</th>"
                f"<th>box (x1, y1, x2, y2)</th></tr>{rows}</table>"
            )
        body = (
            f"{summary}<p><img alt='prediction overlay' src='{_png_data_uri(picture)}'></p>"
            "<p><a href='/'>another image</a></p>"
        )
        return _page(name, body)

    return app
