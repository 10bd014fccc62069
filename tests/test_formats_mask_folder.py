"""Index-mask files and the per-class mask-folder importer, on tiny synthetic folders."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from defects.cli import import_masks
from defects.formats.errors import FormatError
from defects.formats.mask_folder import (
    MAGNETIC_TILE_CLASSES,
    import_mask_folder,
    parse_classes,
    read_index_mask,
    write_index_mask,
)

SPLITS = ("train", "valid", "test")
CLASSES = {"blow hole": "MT_Blowhole/Imgs", "crack": "MT_Crack/Imgs", "none": "MT_Free/Imgs"}


def _image(path: Path, h: int, w: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def _binary(path: Path, h: int, w: int, on: bool = True) -> None:
    mask = np.zeros((h, w), np.uint8)
    if on:
        mask[h // 4 : h // 2, w // 4 : w // 2] = 255
    assert cv2.imwrite(str(path), mask)


def _tile_folders(root: Path, n: dict[str, int] | None = None) -> Path:
    """Magnetic-Tile-like tree: jpg images with same-stem png masks, sizes varying per image."""
    counts = n or {"MT_Blowhole": 5, "MT_Crack": 4, "MT_Free": 6}
    for folder, count in counts.items():
        for i in range(count):
            h, w = 30 + 3 * i, 40 + 5 * i
            stem = f"exp{i % 2}_num_{100 + i}"
            _image(root / folder / "Imgs" / f"{stem}.jpg", h, w, seed=i)
            _binary(root / folder / "Imgs" / f"{stem}.png", h, w, on=folder != "MT_Free")
    return root


def _snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _listing(out: Path) -> dict[str, list[str]]:
    return {
        f"{split}/{kind}": sorted(p.name for p in (out / split / kind).iterdir())
        for split in SPLITS
        for kind in ("images", "masks")
    }


# --------------------------------------------------------------------------- index masks


def test_index_mask_round_trip(tmp_path: Path) -> None:
    mask = np.zeros((30, 40), np.uint8)
    mask[2:9, 3:7] = 1
    mask[20:, 30:] = 3
    path = tmp_path / "sub" / "m.png"
    write_index_mask(path, mask)
    assert [p.name for p in path.parent.iterdir()] == ["m.png"]  # no temp file left behind
    back = read_index_mask(path, num_classes=3, shape=(30, 40))
    assert back.dtype == np.uint8 and back.shape == (30, 40)
    np.testing.assert_array_equal(back, mask)
    write_index_mask(path, mask.astype(np.int64) * 0 + (mask > 0))  # overwrite, other dtype
    np.testing.assert_array_equal(read_index_mask(path, 1), mask > 0)


def test_index_mask_accepts_grey_rgb_and_palette(tmp_path: Path) -> None:
    mask = np.array([[0, 1], [2, 0]], np.uint8)
    Image.fromarray(np.stack([mask] * 3, axis=-1)).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_index_mask(tmp_path / "rgb.png", 2), mask)
    pal = Image.fromarray(mask).convert("P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0])
    pal.save(tmp_path / "pal.png")  # palette indices are the class ids, not the colours
    np.testing.assert_array_equal(read_index_mask(tmp_path / "pal.png", 2), mask)


def test_index_mask_errors(tmp_path: Path) -> None:
    path = tmp_path / "m.png"
    write_index_mask(path, np.array([[0, 4], [1, 0]], np.uint8))
    with pytest.raises(FormatError, match=r"value 4 .*outside 0\.\.3") as err:
        read_index_mask(path, num_classes=3)
    assert err.value.path == str(path)
    with pytest.raises(FormatError, match=r"mask is 2x2 \(HxW\), expected 3x2"):
        read_index_mask(path, num_classes=4, shape=(3, 2))

    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 1] = (1, 2, 1)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    with pytest.raises(FormatError, match="differing channels"):
        read_index_mask(tmp_path / "rgb.png", 5)

    (tmp_path / "junk.png").write_bytes(b"not a png at all")
    with pytest.raises(FormatError, match="cannot decode"):
        read_index_mask(tmp_path / "junk.png", 5)
    good = (tmp_path / "m.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(FormatError, match="cannot decode"):
        read_index_mask(tmp_path / "cut.png", 5)
    with pytest.raises(FormatError, match="not found"):
        read_index_mask(tmp_path / "missing.png", 5)
    with pytest.raises(ValueError, match="2-D"):
        write_index_mask(tmp_path / "bad.png", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(ValueError, match="0..255"):
        write_index_mask(tmp_path / "bad.png", np.array([[256]], np.int32))
    assert not (tmp_path / "bad.png").exists()


# --------------------------------------------------------------------------- importer


def test_import_layout_class_ids_and_source_untouched(tmp_path: Path) -> None:
    src = _tile_folders(tmp_path / "src")
    before = _snapshot(src)
    out = tmp_path / "out"
    summary = import_mask_folder(src, out, CLASSES, seed=3)

    assert _snapshot(src) == before
    assert summary["images"] == {"train": 9, "valid": 3, "test": 3}  # 3+2+4, 1+1+1, 1+1+1
    assert summary["per_class"] == {"blow hole": 5, "crack": 4}
    assert summary["defect_free"] == 6 and summary["skipped"] == 0
    assert (out / "classes.txt").read_text() == "blow hole\ncrack\n"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp dirs

    ids = {"blow_hole": 1, "crack": 2}
    seen = set()
    for split in SPLITS:
        for image in (out / split / "images").iterdir():
            prefix, stem = image.stem.split("__")
            assert image.suffix == ".jpg"
            folder = {"blow_hole": "MT_Blowhole", "crack": "MT_Crack", "none": "MT_Free"}[prefix]
            source_image = src / folder / "Imgs" / f"{stem}.jpg"
            assert image.read_bytes() == source_image.read_bytes()
            seen.add(image.stem)
            mask_path = out / split / "masks" / f"{image.stem}.png"
            if prefix == "none":
                assert not mask_path.exists()
                continue
            h, w = cv2.imread(str(source_image)).shape[:2]
            mask = read_index_mask(mask_path, num_classes=2, shape=(h, w))
            expected = (cv2.imread(str(source_image.with_suffix(".png")), 0) >= 128) * ids[prefix]
            np.testing.assert_array_equal(mask, expected)
    assert len(seen) == 15  # stems unique although folders reuse exp*_num_* names


def test_split_deterministic_and_stratified(tmp_path: Path) -> None:
    src = _tile_folders(tmp_path / "src", {"MT_Blowhole": 7, "MT_Crack": 3, "MT_Free": 3})
    a = import_mask_folder(src, tmp_path / "a", CLASSES, seed=1)
    b = import_mask_folder(src, tmp_path / "b", CLASSES, seed=1)
    assert a == b
    assert _listing(tmp_path / "a") == _listing(tmp_path / "b")
    for prefix in ("blow_hole", "crack", "none"):  # every folder (>= 3 images) in every split
        for split in SPLITS:
            names = os.listdir(tmp_path / "a" / split / "images")
            assert any(n.startswith(f"{prefix}__") for n in names), (prefix, split)
    listings = {str(_listing(tmp_path / "a"))}
    for seed in (2, 3, 4, 5):
        import_mask_folder(src, tmp_path / "c", CLASSES, seed=seed)  # replaces the old tree
        listings.add(str(_listing(tmp_path / "c")))
    assert len(listings) > 1  # the seed matters


def test_tagged_mask_suffix_and_png_images(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(3):
        _image(src / "scratch" / f"img{i}.png", 20 + i, 25, seed=i)
        _binary(src / "scratch" / f"img{i}_mask.png", 20 + i, 25)
        _image(src / "ok" / f"good{i}.bmp", 22, 24, seed=i)  # defect-free, no masks at all
    summary = import_mask_folder(
        src, tmp_path / "out", {"scratch": "scratch", "none": "ok"}, mask_suffix="_mask.png"
    )
    assert summary["per_class"] == {"scratch": 3} and summary["defect_free"] == 3
    names = [n for s in SPLITS for n in os.listdir(tmp_path / "out" / s / "images")]
    assert sorted(names)[0] == "none__good0.bmp" and "scratch__img0.png" in names


def test_empty_class_mask_becomes_defect_free(tmp_path: Path) -> None:
    src = _tile_folders(tmp_path / "src", {"MT_Blowhole": 3, "MT_Crack": 3, "MT_Free": 1})
    _binary(src / "MT_Crack" / "Imgs" / "exp0_num_100.png", 30, 40, on=False)
    summary = import_mask_folder(src, tmp_path / "out", CLASSES)
    assert summary["per_class"]["crack"] == 2
    assert summary["empty_masks"] == 1 and summary["defect_free"] == 2


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        ("size", r"mask is 31x40 \(HxW\), expected 30x40"),
        ("undecodable", "cannot decode"),
        ("missing", r"no mask exp0_num_100\.png beside the image"),
        ("none_not_empty", r"defect-free folder has \d+ pixel"),
        ("lone_png", "ambiguous"),
        ("colour", "differing channels"),
    ],
)
def test_bad_inputs_strict_and_lenient(tmp_path: Path, damage: str, match: str) -> None:
    src = _tile_folders(tmp_path / "src", {"MT_Blowhole": 3, "MT_Crack": 3, "MT_Free": 3})
    crack = src / "MT_Crack" / "Imgs"
    bad = crack / "exp0_num_100.png"
    if damage == "size":
        _binary(bad, 31, 40)
    elif damage == "undecodable":
        bad.write_bytes(b"\x89PNG garbage")
    elif damage == "missing":
        bad.unlink()
    elif damage == "none_not_empty":
        bad = src / "MT_Free" / "Imgs" / "exp0_num_100.png"
        _binary(bad, 30, 40)
    elif damage == "lone_png":
        (crack / "exp0_num_100.jpg").unlink()
    elif damage == "colour":
        colour = np.zeros((30, 40, 3), np.uint8)
        colour[5:9, 5:9] = (0, 0, 255)
        cv2.imwrite(str(bad), colour)
    before = _snapshot(src)
    out = tmp_path / "out"

    with pytest.raises(FormatError, match=match) as err:
        import_mask_folder(src, out, CLASSES)
    assert "exp0_num_100" in err.value.path
    assert not out.exists() and os.listdir(tmp_path) == ["src"]  # nothing written, no temp dir

    summary = import_mask_folder(src, out, CLASSES, strict=False)
    assert summary["skipped"] == 1
    assert sum(summary["images"].values()) == 8
    assert _snapshot(src) == before


def test_failed_import_keeps_previous_output(tmp_path: Path) -> None:
    src = _tile_folders(tmp_path / "src", {"MT_Blowhole": 3, "MT_Crack": 3, "MT_Free": 1})
    out = tmp_path / "out"
    import_mask_folder(src, out, CLASSES)
    before = _snapshot(out)
    (src / "MT_Crack" / "Imgs" / "exp1_num_101.png").write_bytes(b"broken")
    with pytest.raises(FormatError):
        import_mask_folder(src, out, CLASSES)
    assert _snapshot(out) == before


def test_config_errors(tmp_path: Path) -> None:
    src = _tile_folders(tmp_path / "src", {"MT_Blowhole": 1, "MT_Crack": 1, "MT_Free": 1})
    with pytest.raises(FormatError, match="folder of class 'fray' not found"):
        import_mask_folder(src, tmp_path / "o", {"fray": "MT_Fray/Imgs"})
    with pytest.raises(ValueError, match="must not be, contain or lie inside"):
        import_mask_folder(src, src / "out", CLASSES)
    with pytest.raises(ValueError, match="same folder"):
        import_mask_folder(src, tmp_path / "o", {"a": "MT_Crack/Imgs", "b": "MT_Crack/Imgs/"})
    with pytest.raises(ValueError, match="same prefix"):
        import_mask_folder(src, tmp_path / "o", {"Crack": "MT_Crack/Imgs", "crack": "MT_Free"})
    with pytest.raises(ValueError, match="besides 'none'"):
        import_mask_folder(src, tmp_path / "o", {"none": "MT_Free/Imgs"})
    assert sorted(os.listdir(tmp_path)) == ["src"]


def test_parse_classes_and_cli(tmp_path: Path) -> None:
    assert parse_classes("magnetic_tile") == MAGNETIC_TILE_CLASSES
    assert list(MAGNETIC_TILE_CLASSES) == ["blowhole", "break", "crack", "fray", "uneven", "none"]
    assert parse_classes(" a = x/y , none=z ") == {"a": "x/y", "none": "z"}
    assert parse_classes(("a=x", "none=z")) == {"a": "x", "none": "z"}
    for bad in ("a", "a=x,a=y", "", "unknown_preset"):
        with pytest.raises(ValueError, match="classes"):
            parse_classes(bad)

    src = _tile_folders(tmp_path / "src", {"MT_Blowhole": 3, "MT_Crack": 3, "MT_Free": 3})
    summary = import_masks(
        str(src),
        str(tmp_path / "out"),
        "blow hole=MT_Blowhole/Imgs,crack=MT_Crack/Imgs,none=MT_Free/Imgs",
        split=(0.5, 0.25, 0.25),
    )
    assert summary["per_class"] == {"blow hole": 3, "crack": 3}
    assert summary["images"] == {"train": 3, "valid": 3, "test": 3}
