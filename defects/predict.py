"""Predictors rebuilt from a bundle or an ONNX export, and `defects predict` over a folder.

No Lightning, no Hydra: `defects.load` reads the bundle (or export manifest), asks the
registry for its kind and gets that kind's predictor, eager or ONNX Runtime.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from defects.bundle import load_bundle
from defects.formats.errors import FormatError
from defects.kinds import get_kind
from defects.kinds.base import EXPORT_FORMAT, EXPORT_MANIFEST, Predictor
from defects.runtime import offline_environment
from defects.settings import load_settings

log = logging.getLogger("defects")

BACKENDS = ("eager", "onnx")


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest `defects export` wrote into `folder`, checked."""
    path = folder / EXPORT_MANIFEST
    if not path.is_file():
        raise FormatError(folder, f"not a defects export ({EXPORT_MANIFEST} missing)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FormatError(path, f"unreadable export manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        raise FormatError(path, f"not a {EXPORT_FORMAT} manifest")
    for key in ("kind", "bundle"):
        if key not in manifest:
            raise FormatError(path, f"manifest lacks '{key}'")
    return manifest


def stored_kind(path: str | Path) -> str:
    """The model kind a bundle or an export folder holds, without building anything."""
    path = Path(path)
    if path.is_dir():
        return get_kind(read_manifest(path)["kind"]).name
    return get_kind(load_bundle(path)["model"]["kind"]).name


def load(
    path: str | Path, device: str | None = None, backend: str = "eager", threads: int = 0
) -> Predictor:
    """The predictor of a bundle (`backend="eager"` or `"onnx"`), of an export folder, or of a
    registered model: `models:/NAME@ALIAS` or `models:/NAME/VERSION` (defects.registry).

    `device`: the machine's setting (DEFECTS_DEVICE, defects.settings) when not given, else
    cpu. An ONNX predictor of a bundle is exported to a temporary folder first (nothing is written
    next to the bundle); ONNX Runtime reads the graphs when the sessions are made.
    """
    offline_environment()
    if backend not in BACKENDS:
        raise ValueError(f"backend: '{backend}' is not one of {', '.join(BACKENDS)}")
    from defects.registry import fetch, is_registry_uri

    if is_registry_uri(path):
        path = fetch(str(path))
    path = Path(path)
    if path.is_dir():
        manifest = read_manifest(path)
        kind = get_kind(manifest["kind"])
        manifest["bundle"]["model"]["kind"] = kind.name  # an alias of an older version
        return kind.onnx_predictor(path, manifest, threads)
    bundle = load_bundle(path)
    kind = get_kind(bundle["model"]["kind"])
    bundle["model"]["kind"] = kind.name
    if backend == "eager":
        return kind.predictor(bundle, device or load_settings().inference_device())
    from defects.export import export_bundle

    with tempfile.TemporaryDirectory(prefix="defects-onnx-") as tmp:
        folder = export_bundle(bundle, Path(tmp) / "onnx")
        return kind.onnx_predictor(folder, read_manifest(folder), threads)


def predict_images(
    predictor: Predictor, images: list[Path], out_dir: Path, overlays: bool = True
) -> Path:
    """Run `predictor` over `images` and write the kind's outputs; return the main report.

    Each image is decoded once and the array feeds both the model and the overlay.
    """
    from defects.progress import progress

    writer = get_kind(predictor.kind).writer(predictor, out_dir, overlays)
    results = progress(predictor.predict_many(images), "predict", len(images))
    for path, (image, result) in zip(images, results, strict=True):
        writer.add(path, image, result)
    return writer.close()
