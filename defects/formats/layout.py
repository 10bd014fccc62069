"""Dataset layout constants, defined once: split names and which files count as images.

Pure Python (no numpy, Pillow or torch) so every reader, importer and generator can share it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["SPLITS", "IMAGE_SUFFIXES", "is_image_file", "is_image_name"]

# Split folders of every prepared dataset, in this order.
SPLITS: tuple[str, ...] = ("train", "valid", "test")

# Lower-case suffixes of the image files readers pick up (compare with `suffix.lower()`).
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """True for a regular, non-hidden file with an image suffix (case-insensitive).

    Hidden files are left out: macOS `._name.png` resource forks and the temp siblings of the
    atomic writers look like images by name but are not.
    """
    return is_image_name(path) and Path(path).is_file()


def is_image_name(path: str | os.PathLike[str]) -> bool:
    """The name test of `is_image_file` alone, for listings that are not local files (S3)."""
    p = Path(path)
    return not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
