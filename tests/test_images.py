"""The one image decoder: same pixels from every input kind, every failure names the file."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from defects.data.images import (
    IMAGE_SUFFIXES,
    decode_image,
    list_images,
    open_image,
    read_image,
)
from defects.formats.errors import FormatError
from defects.formats.layout import IMAGE_SUFFIXES as LAYOUT_SUFFIXES


def picture(mode: str) -> Image.Image:
    """A small image with distinct values in every channel (and some transparency)."""
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, size=(7, 9, 4), dtype=np.uint8)
    image = Image.fromarray(rgba)  # RGBA
    if mode == "P":
        return image.convert("RGB").quantize(16)
    return image.convert(mode)


def saved(tmp_path: Path, image: Image.Image, name: str = "pic.png") -> Path:
    path = tmp_path / name
    image.save(path)
    return path


def check_fresh(array: np.ndarray, channels: int) -> None:
    assert array.dtype == np.uint8
    assert array.ndim == (2 if channels == 1 else 3)
    assert array.flags.writeable and array.flags.c_contiguous and array.flags.owndata


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P"])
def test_same_pixels_from_every_source_kind(tmp_path: Path, mode: str, channels: int) -> None:
    path = saved(tmp_path, picture(mode))
    from_path = decode_image(path, channels)
    check_fresh(from_path, channels)
    with Image.open(path) as pil:
        from_pil = decode_image(pil, channels)
        # The array a caller would hold for this picture (a palette image as its colours).
        array = np.asarray(pil.convert("RGB") if mode == "P" else pil)
    variants = {
        "str": decode_image(str(path), channels),
        "bytes": decode_image(path.read_bytes(), channels),
        "bytearray": decode_image(bytearray(path.read_bytes()), channels),
        "pil": from_pil,
        "array": decode_image(array, channels),
        "read_image": read_image(path, channels),
    }
    for kind, pixels in variants.items():
        check_fresh(pixels, channels)
        np.testing.assert_array_equal(pixels, from_path, err_msg=kind)
    assert from_path.shape[:2] == (7, 9)


def test_array_is_copied_and_hxwx1_accepted() -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = decode_image(grey)
    np.testing.assert_array_equal(out, grey)
    assert not np.shares_memory(out, grey)
    np.testing.assert_array_equal(decode_image(grey[:, :, None]), grey)
    np.testing.assert_array_equal(decode_image(grey[:, ::2]), grey[:, ::2])  # non-contiguous
    rgb = decode_image(grey, channels=3)
    assert rgb.shape == (3, 4, 3) and all((rgb[..., c] == grey).all() for c in range(3))


def test_jpeg_path_bytes_and_pil_agree(tmp_path: Path) -> None:
    path = saved(tmp_path, picture("RGB"), "pic.jpg")
    expected = decode_image(path, 3)
    np.testing.assert_array_equal(decode_image(path.read_bytes(), 3), expected)
    with Image.open(path) as pil:
        np.testing.assert_array_equal(decode_image(pil, 3), expected)


@pytest.mark.parametrize("dtype", [np.float32, np.uint16, np.int64, np.bool_])
def test_non_uint8_array_is_refused(dtype: type) -> None:
    with pytest.raises(FormatError, match="must be uint8") as info:
        decode_image(np.zeros((4, 4), dtype=dtype), name="frame_7")
    assert isinstance(info.value, ValueError)
    assert info.value.path == "frame_7"


@pytest.mark.parametrize("shape", [(4,), (4, 4, 2), (4, 4, 5), (1, 4, 4, 3), (0, 4)])
def test_bad_array_shape_is_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(FormatError, match="shape|empty"):
        decode_image(np.zeros(shape, dtype=np.uint8))


def test_truncated_png_fails_naming_the_file(tmp_path: Path) -> None:
    good = saved(tmp_path, picture("RGB")).read_bytes()
    path = tmp_path / "cut.png"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(FormatError, match=r"cut\.png: cannot decode image .*truncated") as info:
        decode_image(path)
    assert info.value.path == str(path)
    with pytest.raises(FormatError, match=r"^cut\.png: cannot decode"):
        decode_image(path.read_bytes(), name="cut.png")
    # A PIL image opened (header only) but not decoded yet.
    with Image.open(path) as lazy, pytest.raises(FormatError, match=r"cut\.png: cannot decode"):
        decode_image(lazy)


def test_empty_file_and_empty_bytes(tmp_path: Path) -> None:
    path = tmp_path / "zero.png"
    path.write_bytes(b"")
    with pytest.raises(FormatError, match=r"zero\.png: empty file \(0 bytes\)"):
        decode_image(path)
    with pytest.raises(FormatError, match=r"^upload: empty"):
        decode_image(b"")


def test_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("just some text, not a PNG\n")
    with pytest.raises(FormatError, match=r"notes\.png: cannot decode image \(not a recognised"):
        decode_image(path)
    with pytest.raises(FormatError, match=r"^scan\.tif: cannot decode image \(not a recognised"):
        decode_image(b"\x00garbage" * 10, name="scan.tif")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match=r"absent\.png: image file not found"):
        decode_image(tmp_path / "absent.png")
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(FormatError, match=r"folder\.png: cannot decode"):
        decode_image(tmp_path / "folder.png")


def test_decompression_bomb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = saved(tmp_path, Image.new("L", (40, 30)), "huge.png")  # 1200 pixels
    data = path.read_bytes()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # PIL raises above twice this limit
    with pytest.raises(FormatError, match=r"huge\.png: refused as a possible decompression bomb"):
        decode_image(path)
    with pytest.raises(FormatError, match=r"^upload: refused as a possible decompression bomb"):
        decode_image(data)
    with pytest.raises(FormatError, match="decompression bomb"):
        read_image(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # over the limit, under twice it
    with pytest.warns(Image.DecompressionBombWarning):
        assert decode_image(path).shape == (30, 40)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        decode_image(np.zeros((2, 2), np.uint8), channels=4)
    with pytest.raises(TypeError, match="image source"):
        decode_image(12)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="file path"):
        read_image(b"\x89PNG")  # type: ignore[arg-type]


def test_open_image_keeps_the_stored_mode(tmp_path: Path) -> None:
    path = saved(tmp_path, picture("P"))
    with open_image(path) as image:
        assert image.mode == "P"
        index = np.array(image)
    assert index.dtype == np.uint8 and index.max() < 16
    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((3, 3), 1000, dtype=np.uint16)).save(deep)
    with open_image(deep.read_bytes(), name="deep.png") as image:
        assert image.mode.startswith("I") and int(np.array(image).max()) == 1000


def test_list_images(tmp_path: Path) -> None:
    assert IMAGE_SUFFIXES == LAYOUT_SUFFIXES
    for name in ("b.png", "a.JPG", "c.webp", "d.tiff", "e.bmp", "f.jpeg", "g.tif"):
        (tmp_path / name).write_bytes(b"x")
    for name in ("notes.txt", "._b.png", ".hidden.png", "labels.xml"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "dir.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == [
        "a.JPG",
        "b.png",
        "c.webp",
        "d.tiff",
        "e.bmp",
        "f.jpeg",
        "g.tif",
    ]


@pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WebP")
def test_webp_decodes(tmp_path: Path) -> None:
    path = tmp_path / "pic.webp"
    picture("RGB").save(path, lossless=True)
    np.testing.assert_array_equal(decode_image(path, 3), np.asarray(picture("RGB")))
    assert list_images(tmp_path) == [path]


def test_pil_source_is_left_open(tmp_path: Path) -> None:
    path = saved(tmp_path, picture("RGB"))
    with Image.open(path) as pil:
        decode_image(pil)
        assert pil.size == (9, 7)
        np.asarray(pil)  # still usable: the decoder does not close what it was handed
    buffer = io.BytesIO()
    picture("L").save(buffer, format="PNG")
    assert decode_image(buffer.getvalue()).shape == (7, 9)
