"""Model bundles: everything needed to rebuild a trained model, with no pickled objects.

A bundle is a `torch.save`d dict of tensors and plain values, so it loads with
`weights_only=True` and without Lightning, Hydra or the training config.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from defects.formats.errors import FormatError
from defects.formats.io import atomic_write_bytes, remove_stale_temps

BUNDLE_FORMAT = "defects-bundle"
BUNDLE_VERSION = 1
REQUIRED_KEYS = ("task", "model", "class_names", "thresholds", "input", "state_dict")


PLAIN = (str, int, float, bool, type(None), torch.Tensor)


def check_plain(value: Any, where: str = "bundle") -> None:
    """Refuse anything `torch.load(weights_only=True)` would refuse (e.g. an OmegaConf list),
    at save time, naming the key, instead of a bundle that cannot be read back."""
    if isinstance(value, dict):
        for key, item in value.items():
            check_plain(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_plain(item, f"{where}[{index}]")
    elif not isinstance(value, PLAIN):
        raise TypeError(f"{where}: {type(value).__name__} is not a plain value")


def save_bundle(
    path: str | Path,
    *,
    task: str,
    model: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    class_names: list[str],
    thresholds: dict[str, Any],
    input: dict[str, Any],
    metrics: dict[str, float] | None = None,
    name: str | None = None,
    output: dict[str, Any] | None = None,
    tuning: list[dict[str, Any]] | None = None,
) -> Path:
    """Write a bundle atomically. `model` = {"kind": registered kind, "kwargs": plain values};
    `name` is the run/dataset name (e.g. neu_det for the weld task on NEU-DET); `output`,
    optional, how a kind post-processes its outputs (gated: ``exclusive``); `tuning`,
    optional, the curves the thresholds were chosen from (`ModelKind.tune_with_curves`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bundle = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "task": task,
        "name": name or task,
        "model": model,
        "class_names": list(class_names),
        "thresholds": dict(thresholds),
        "input": dict(input),
        "metrics": dict(metrics or {}),
        **({"output": dict(output)} if output else {}),
        **({"tuning": list(tuning)} if tuning else {}),
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
    }
    check_plain({k: v for k, v in bundle.items() if k != "state_dict"})
    buffer = io.BytesIO()
    torch.save(bundle, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    remove_stale_temps(path)  # what a run killed while writing a bundle here left
    return path


def load_bundle(path: str | Path) -> dict[str, Any]:
    """Read and check a bundle; errors name the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model bundle not found")
    try:
        bundle = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a foreign or damaged file
        raise FormatError(path, f"not a readable model bundle ({exc})") from exc
    if not isinstance(bundle, dict) or bundle.get("format") != BUNDLE_FORMAT:
        raise FormatError(
            path, "not a defects model bundle (a Lightning .ckpt? use defects.evaluate)"
        )
    missing = [key for key in REQUIRED_KEYS if key not in bundle]
    if missing:
        raise FormatError(path, f"bundle lacks keys {missing}")
    if bundle["version"] > BUNDLE_VERSION:
        raise FormatError(path, f"bundle version {bundle['version']} is newer than this library")
    return bundle
