"""Listing and decoding for `defects score`, as Ray Data tasks spread over the cluster.

The driver lists only the input's first level: its own files are one listing unit, each
subfolder another, listed recursively by a task of its own, so an archive of many folders is
listed in parallel. Paths already written (a resumed job) are dropped as they are listed.
A file that cannot be read or decoded becomes a row with an `error`, never a failed job.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from defects.data.images import decode_image
from defects.formats.errors import FormatError
from defects.formats.layout import is_image_name
from defects.score.storage import Location, read_bytes


def listing_units(source: Location) -> list[dict[str, Any]]:
    """The root's own files (not recursive), then each visible subfolder (recursive)."""
    found = source.fs.get_file_info(pafs.FileSelector(source.root, recursive=False))
    folders = sorted(
        info.path
        for info in found
        if info.type == pafs.FileType.Directory and not info.base_name.startswith(".")
    )
    return [{"folder": source.root, "recursive": False}] + [
        {"folder": folder, "recursive": True} for folder in folders
    ]


def list_images(folder: str, recursive: bool, source: Location) -> list[str]:
    """The image files under `folder` as keys (`source.uri`), sorted; hidden files and
    anything inside a hidden folder left out."""
    selector = pafs.FileSelector(folder, recursive=recursive)
    keys = []
    for info in source.fs.get_file_info(selector):
        if info.type != pafs.FileType.File or not is_image_name(info.base_name):
            continue
        inner = info.path[len(folder) :].strip("/").split("/")[:-1]
        if not any(part.startswith(".") for part in inner):
            keys.append(source.uri(info.path))
    return sorted(keys)


def list_unit(batch: dict[str, np.ndarray], source: Location, done: pa.Array) -> dict[str, Any]:
    """Ray Data map: listing units -> the `path` of every image not in `done`."""
    keys: list[str] = []
    for folder, recursive in zip(batch["folder"], batch["recursive"], strict=True):
        keys.extend(list_images(str(folder), bool(recursive), source))
    paths = pa.array(keys, pa.string())
    if len(done):
        paths = paths.filter(pc.invert(pc.is_in(paths, value_set=done)))
    return {"path": np.asarray(paths.to_pylist(), dtype=object)}


def empty_image(channels: int) -> np.ndarray:
    """The stand-in of an undecodable image: no pixels, the decoded images' rank."""
    return np.zeros((0, 0) if channels == 1 else (0, 0, channels), np.uint8)


def read_and_decode(batch: dict[str, np.ndarray], source: Location, channels: int) -> dict:
    """Ray Data map: `path` -> the decoded `image` (the library's one decoder, as `defects
    predict` uses), its `width` and `height`, and `error` ("", or why it failed: text, as
    a column of Nones would not stay a string column between operators)."""
    images, widths, heights, errors = [], [], [], []
    for key in batch["path"]:
        try:
            data = read_bytes(source, source.path_of(str(key)))
            image = decode_image(data, channels, name=str(key))
            error = ""
        except (FormatError, OSError) as exc:
            image, error = empty_image(channels), str(exc) or type(exc).__name__
        images.append(image)
        heights.append(-1 if error else image.shape[0])
        widths.append(-1 if error else image.shape[1])
        errors.append(error)
    column = np.empty(len(images), dtype=object)
    column[:] = images
    return {
        "path": batch["path"],
        "image": column,
        "width": np.asarray(widths, np.int64),
        "height": np.asarray(heights, np.int64),
        "error": np.asarray(errors, dtype=object),
    }
