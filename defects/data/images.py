"""Decode images strictly, so a broken file fails with its name instead of deep in a worker."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from defects.formats.errors import FormatError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def read_image(path: str | Path, channels: int = 1) -> np.ndarray:
    """Fully decode an image as uint8 HxW (channels=1) or HxWx3 (channels=3).

    PIL is used because, unlike OpenCV, it refuses truncated files instead of returning a
    half-grey picture.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            converted = image.convert("L" if channels == 1 else "RGB")
    except FileNotFoundError:
        raise FormatError(path, "image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        reason = (
            "empty file (0 bytes)" if path.stat().st_size == 0 else f"cannot decode image ({exc})"
        )
        raise FormatError(path, reason) from exc
    return np.array(converted, dtype=np.uint8)  # a writable copy: torch refuses read-only arrays


def list_images(folder: str | Path) -> list[Path]:
    """Images of a folder in a stable order (sorted by name)."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
