"""An uploaded image, taken apart safely: its name for display, its pixels within limits.

Uploads come from anyone's desktop, so nothing in them is trusted:
- the file name is only ever shown (the server writes no upload anywhere), yet a name that
  is not a bare file name is refused with 400 naming it: a directory part (`/` or `\\`:
  browsers send the file's own name only, so `../../x.png` or `C:\\x.png` is made up), `.`
  or `..`, control characters (NUL...). A longer name than MAX_NAME_CHARS is shortened, no
  name at all is shown as "upload";
- the pixel count is read from the image's header (PIL opens lazily) and an image over
  `max_pixels` is refused before it is decoded, with 413 like a body over the byte limit:
  a 20000x20000 PNG of one colour is a few hundred KB and 400 MB once decoded;
- an unreadable file is a 400 naming the upload, through the library's one decoder.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

import numpy as np
from flask import request
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge

from defects.data.images import ImageTooLarge, decode_image
from defects.formats.errors import FormatError

__all__ = ["DEFAULT_MAX_PIXELS", "MAX_NAME_CHARS", "TooManyPixels", "read_upload", "upload_name"]

#: 40 megapixels: larger than any line camera's frame the models are trained on (a 20 MP
#: sensor's photo passes), 120 MB decoded as RGB
DEFAULT_MAX_PIXELS = 40_000_000
#: the longest file name shown back; longer names keep their start and their suffix
MAX_NAME_CHARS = 255

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class TooManyPixels(RequestEntityTooLarge):
    """413 for an image over the pixel limit (the app words the byte limit's 413 itself)."""


def upload_name(filename: str | None) -> str:
    """The name an upload is shown as (bounded in length; "upload" when it has none).
    ValueError saying why when it is not a bare, printable file name (a path trick)."""
    name = (filename or "").strip()
    if not name:
        return "upload"
    if "/" in name or "\\" in name:
        raise ValueError("is a path, not a bare file name")
    if _CONTROL.search(name):
        raise ValueError("has control characters")
    if name in (".", ".."):
        raise ValueError("is not a file name")
    if len(name) > MAX_NAME_CHARS:
        suffix = PurePosixPath(name).suffix
        suffix = suffix if len(suffix) <= 16 else ""
        name = name[: MAX_NAME_CHARS - len(suffix) - 3] + "..." + suffix
    return name


def read_upload(channels: int, max_pixels: int | None) -> tuple[str, np.ndarray]:
    """(shown name, uint8 array) of the `image` field; BadRequest (400) naming it when it is
    missing, empty, undecodable or its name a path trick; TooManyPixels (413) when it has
    too many pixels."""
    upload = request.files.get("image")  # raises 413 first when the body is over the limit
    if upload is None:
        raise BadRequest("no upload: send the image as multipart/form-data field 'image'")
    try:
        name = upload_name(upload.filename)
    except ValueError as exc:
        shown = repr(upload.filename)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise BadRequest(f"upload name {shown} {exc}: send the file's own name") from None
    data = upload.read()
    if not data:
        raise BadRequest(f"upload '{name}' is empty (0 bytes)")
    try:
        array = decode_image(data, channels, name=name, max_pixels=max_pixels)
    except ImageTooLarge as exc:
        raise TooManyPixels(f"upload {exc}") from None
    except FormatError as exc:
        raise BadRequest(f"upload {exc}") from None
    return name, array
