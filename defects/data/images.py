"""One image decoder for every caller: data scanning, training, importers, predict and serve.

Decoding is strict so a broken file fails with its name instead of deep in a worker, and every
input kind (path, bytes, PIL image, array) goes through the same PIL conversion, so the same
picture gives the same pixels whichever way it arrives.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from defects.formats.errors import FormatError
from defects.formats.layout import IMAGE_SUFFIXES, is_image_file

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageSource",
    "ImageTooLarge",
    "open_image",
    "decode_image",
    "read_image",
    "list_images",
]

# A file path, the encoded file's bytes, a PIL image or a uint8 array (HxW, HxWx1/3/4).
ImageSource = str | os.PathLike[str] | bytes | bytearray | memoryview | Image.Image | np.ndarray

_MODES = {1: "L", 3: "RGB"}


class ImageTooLarge(FormatError):
    """An image with more pixels than allowed, refused from its header before it is decoded
    (a 20000x20000 PNG of one colour is a few hundred KB on the wire and 400 MB decoded)."""


def _check_pixels(size: tuple[int, int], label: str, max_pixels: int | None) -> None:
    width, height = size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLarge(
            label,
            f"{width}x{height} is {width * height / 1e6:.1f} megapixels, over the limit of "
            f"{max_pixels / 1e6:g} megapixels",
        )


def _label(source: object, name: str | None) -> str:
    """What an error calls the image: the path, else `name`, else a word for the input kind."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if name:
        return name
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "upload"
    if isinstance(source, Image.Image):
        return getattr(source, "filename", "") or "image"
    return "array"


def _decode_failure(label: str, exc: BaseException) -> FormatError:
    if isinstance(exc, Image.DecompressionBombError):
        return ImageTooLarge(label, f"refused as a possible decompression bomb ({exc})")
    if isinstance(exc, UnidentifiedImageError):  # its text repeats the path or a BytesIO repr
        return FormatError(label, "cannot decode image (not a recognised image format)")
    return FormatError(label, f"cannot decode image ({exc})")


def _from_array(array: np.ndarray, label: str) -> Image.Image:
    if array.dtype != np.uint8:
        raise FormatError(label, f"image array must be uint8 (0-255), got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise FormatError(
            label, f"image array must be HxW, HxWx1, HxWx3 or HxWx4, got shape {array.shape}"
        )
    if array.size == 0:
        raise FormatError(label, f"image array is empty (shape {array.shape})")
    return Image.fromarray(np.ascontiguousarray(array))  # L, RGB or RGBA


@contextmanager
def open_image(
    source: ImageSource, name: str | None = None, max_pixels: int | None = None
) -> Iterator[Image.Image]:
    """The fully decoded PIL image of `source`, in its own mode (no conversion).

    Use this where the stored values matter (index masks, 16-bit data); `decode_image` for
    pixels to feed a model. Paths and bytes are decoded completely (`load()`), so a truncated
    file fails here. Every decode failure, an empty file and a possible decompression bomb
    (PIL's `DecompressionBombError`; the lesser `DecompressionBombWarning` stays a warning)
    raise `FormatError` naming the file: the path, else `name`, else "upload" for bytes.
    An image opened here is closed on exit; a PIL image passed in is left open.
    `max_pixels`: an image with more pixels raises `ImageTooLarge` (a FormatError), read from
    the file's header before anything is decoded.
    """
    label = _label(source, name)
    if isinstance(source, np.ndarray):
        pictured = _from_array(source, label)
        _check_pixels(pictured.size, label, max_pixels)
        yield pictured
        return
    if isinstance(source, Image.Image):
        _check_pixels(source.size, label, max_pixels)
        try:
            source.load()  # a lazily opened image may still be undecoded
        except MemoryError:
            raise
        except Exception as exc:
            raise _decode_failure(label, exc) from exc
        yield source
        return
    if isinstance(source, (str, os.PathLike)):
        try:
            empty = os.stat(source).st_size == 0
        except FileNotFoundError:
            raise FormatError(label, "image file not found") from None
        except OSError as exc:
            raise FormatError(label, f"cannot read image file ({exc})") from exc
        fp: str | os.PathLike[str] | io.BytesIO = source
    elif isinstance(source, (bytes, bytearray, memoryview)):
        empty = len(source) == 0
        fp = io.BytesIO(source)
    else:
        raise TypeError(
            f"image source must be a path, bytes, a PIL image or a numpy array, "
            f"got {type(source).__name__}"
        )
    if empty:
        raise FormatError(label, "empty file (0 bytes)" if fp is source else "empty (0 bytes)")
    image: Image.Image | None = None
    try:
        image = Image.open(fp)  # reads the header only: size and mode, no pixels yet
        _check_pixels(image.size, label, max_pixels)
        image.load()
    except MemoryError:
        raise
    except ImageTooLarge:
        if image is not None:
            image.close()
        raise
    except Exception as exc:
        # PIL's plugins raise many types for malformed data (UnidentifiedImageError/OSError,
        # SyntaxError, ValueError, EOFError, struct.error, IndexError, DecompressionBombError,
        # ...); a decode touches only this file, so any of them means the file is bad.
        if image is not None:
            image.close()
        raise _decode_failure(label, exc) from exc
    try:
        yield image
    finally:
        image.close()


def decode_image(
    source: ImageSource, channels: int = 1, name: str | None = None, max_pixels: int | None = None
) -> np.ndarray:
    """Decode `source` as uint8 HxW (channels=1) or HxWx3 (channels=3), always a fresh copy.

    `source` is a file path, the encoded bytes of a file, a PIL image or a uint8 numpy array
    (HxW, HxWx1, HxWx3 RGB or HxWx4 RGBA). All of them are converted by PIL (`convert("L")` or
    `convert("RGB")`), so the same picture gives the same pixels in any form. The result is
    C-contiguous and writable (torch refuses read-only arrays). Failures raise `FormatError`
    naming the file (see `open_image`); a non-uint8 or oddly shaped array is one too.
    `max_pixels`: see `open_image`.
    """
    if channels not in _MODES:
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    with open_image(source, name, max_pixels) as image:
        label = _label(source, name)
        try:
            converted = image.convert(_MODES[channels])
        except MemoryError:
            raise
        except Exception as exc:
            raise FormatError(
                label, f"cannot convert mode {image.mode} to {_MODES[channels]} ({exc})"
            ) from exc
    return np.array(converted, dtype=np.uint8, order="C")


def read_image(path: str | os.PathLike[str], channels: int = 1) -> np.ndarray:
    """Fully decode the image file at `path` (see `decode_image`).

    PIL is used because, unlike OpenCV, it refuses truncated files instead of returning a
    half-grey picture.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"read_image takes a file path, got {type(path).__name__}")
    return decode_image(path, channels)


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files of a folder (suffix in IMAGE_SUFFIXES, not hidden), sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if is_image_file(p))
