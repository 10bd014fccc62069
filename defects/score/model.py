"""The model `defects score` ships to its actors: the files to load, whatever machine runs them.

A bundle path, an export folder or a `models:/NAME@ALIAS` URI is resolved on the driver (the
registry fetched once, a bundle exported to ONNX once rather than by every actor), and its
files travel through Ray's object store; each actor writes them into a temporary folder and
calls `defects.predict.load`, so workers need no shared disk and no registry access.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from defects.bundle import load_bundle
from defects.kinds import get_kind
from defects.kinds.base import input_channels
from defects.predict import BACKENDS, read_manifest
from defects.registry import ORIGIN_FILE, fetch, is_registry_uri, parse_model_uri

BUNDLE_NAME = "bundle.pt"
EXPORT_ENTRY = "."


@dataclass(frozen=True)
class ModelPackage:
    """A loadable model as bytes: `files` by relative name, `entry` the one `load` takes."""

    name: str
    version: str
    kind: str
    channels: int
    class_names: list[str]
    backend: str
    entry: str
    files: dict[str, bytes]

    def materialize(self, folder: Path) -> Path:
        """Write the files under `folder`; return the path to hand to `defects.load`."""
        for name, data in self.files.items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return folder / self.entry


def folder_files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def content_version(files: dict[str, bytes]) -> str:
    """The first 12 hex digits of a SHA-256 over the files: a model outside the registry is
    versioned by what it holds."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name])
    return digest.hexdigest()[:12]


def registry_origin(path: Path) -> dict[str, Any]:
    """The registry's record of a fetched version (defects.registry: NAME/VERSION/origin.json
    beside model/, which holds the bundle or the export)."""
    model_folder = path if path.is_dir() else path.parent
    return json.loads((model_folder.parent / ORIGIN_FILE).read_text())


def package_model(model: str, backend: str = "onnx") -> ModelPackage:
    """The package of a bundle, an export folder or a registered model. An export folder
    always runs on ONNX Runtime (as with `defects predict`)."""
    if backend not in BACKENDS:
        raise ValueError(f"--backend: '{backend}' is not one of {', '.join(BACKENDS)}")
    path = fetch(model) if is_registry_uri(model) else Path(model)
    if not path.exists():
        raise FileNotFoundError(f"--model: {model} does not exist")
    if path.is_dir():
        meta = read_manifest(path)["bundle"]
        files = folder_files(path)
        version, entry, backend = content_version(files), EXPORT_ENTRY, "onnx"
    else:
        bundle = load_bundle(path)
        meta = {k: v for k, v in bundle.items() if k != "state_dict"}
        files = {BUNDLE_NAME: path.read_bytes()}
        version, entry = content_version(files), BUNDLE_NAME
        if backend == "onnx":
            files, entry = exported_files(bundle), EXPORT_ENTRY
    name = str(meta.get("name") or meta.get("task") or path.stem)
    if is_registry_uri(model):
        origin = registry_origin(path)
        name, version = parse_model_uri(model).name, str(origin["version"])
    kind = get_kind(meta["model"]["kind"]).name
    classes = [str(c) for c in meta["class_names"]]
    return ModelPackage(name, version, kind, input_channels(meta), classes, backend, entry, files)


def exported_files(bundle: dict[str, Any]) -> dict[str, bytes]:
    """The ONNX export of a loaded bundle, as files (what `load(backend="onnx")` makes)."""
    from defects.export import export_bundle

    with tempfile.TemporaryDirectory(prefix="defects-score-") as tmp:
        return folder_files(export_bundle(bundle, Path(tmp) / "onnx"))
