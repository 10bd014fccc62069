"""`python -m defects export --model BUNDLE --format onnx`: the graphs and what a predictor needs.

The export folder holds the kind's ONNX graph(s) and `export.json`: the kind, and the bundle
without its weights (class names, thresholds, input settings), so `defects.load(folder)`
builds the same predictor interface on ONNX Runtime. Written whole or not at all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from defects.bundle import check_plain, load_bundle
from defects.formats.io import atomic_directory
from defects.kinds import get_kind
from defects.kinds.base import EXPORT_FORMAT, EXPORT_MANIFEST, bundle_meta
from defects.settings import load_settings

FORMATS = ("onnx",)


def export_bundle(
    bundle: str | Path | dict[str, Any], output: str | Path | None = None, format: str = "onnx"
) -> Path:
    """Export a bundle (path or loaded dict) to `output` (default: <outputs root>/onnx/<bundle's
    folder name>, the root a machine setting, DEFECTS_OUTPUT_DIR; never inside the bundle's
    folder, which DVC may own)."""
    if format not in FORMATS:
        raise ValueError(f"--format: '{format}' is not one of {', '.join(FORMATS)}")
    if isinstance(bundle, dict):
        if output is None:
            raise ValueError("--output: needed when exporting a bundle that is not a file")
        loaded = bundle
    else:
        loaded = load_bundle(bundle)
        folder = Path(bundle).resolve().parent.name
        output = output or load_settings().output_path("onnx", folder)
    kind = get_kind(loaded["model"]["kind"])
    out = Path(output)
    with atomic_directory(out) as tmp:
        info = kind.export_graphs(loaded, tmp)
        manifest = {
            "format": EXPORT_FORMAT,
            "version": 1,
            "kind": kind.name,
            "runtime": format,
            "bundle": bundle_meta(loaded),
            **info,
        }
        check_plain(manifest, "export manifest")
        (tmp / EXPORT_MANIFEST).write_text(json.dumps(manifest, indent=2))
    return out
