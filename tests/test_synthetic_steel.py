"""Synthetic steel strip dataset: layout, determinism, Severstal CSV masks, class mix, preview."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from defects.data.synthetic import (
    STEEL_CLASSES,
    generate_steel_dataset,
    render_steel_strip,
    save_steel_preview,
)
from defects.formats.severstal import read_severstal_csv, rle_decode

SMALL = {"width": 400, "height": 64}
SHAPE = (SMALL["height"], SMALL["width"])
SPLITS = ("train", "valid", "test")


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _table(root: Path, split: str) -> dict[str, dict[int, str]]:
    return read_severstal_csv(root / split / "train.csv", shape=SHAPE)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("steel") / "ds"
    summary = generate_steel_dataset(root, n_train=12, n_valid=4, n_test=4, seed=5, **SMALL)
    return root, summary


def test_layout_and_summary(dataset: tuple[Path, dict]) -> None:
    root, summary = dataset
    assert summary["images"] == {"train": 12, "valid": 4, "test": 4}
    assert summary["seed"] == 5
    assert set(summary["defects"]) == set(STEEL_CLASSES)
    assert sorted(p.name for p in root.iterdir()) == sorted(SPLITS)
    for split in SPLITS:
        assert sorted(p.name for p in (root / split).iterdir()) == ["images", "train.csv"]
        images = sorted((root / split / "images").iterdir())
        assert [p.name for p in images] == [f"{i:05d}.png" for i in range(len(images))]
        assert len(images) == summary["images"][split]
        for path in images:
            with Image.open(path) as im:
                assert im.format == "PNG" and im.mode == "L"
                assert im.size == (SMALL["width"], SMALL["height"])
        header = (root / split / "train.csv").read_text().splitlines()[0]
        assert header == "ImageId,ClassId,EncodedPixels"
        # Every image is listed, defect-free ones included.
        assert sorted(_table(root, split)) == [p.name for p in images]
    assert [p.name for p in root.parent.iterdir()] == ["ds"]  # no temp siblings left


def test_masks_decode_to_defect_pixels(dataset: tuple[Path, dict]) -> None:
    root, summary = dataset
    per_class = dict.fromkeys(STEEL_CLASSES, 0)
    free = 0
    for split in SPLITS:
        for image_id, masks in _table(root, split).items():
            free += not masks
            union = np.zeros(SHAPE, dtype=np.int32)
            for class_id, rle in masks.items():
                mask = rle_decode(rle, SHAPE)
                assert mask.any() and not mask.all()
                union += mask
                per_class[STEEL_CLASSES[class_id - 1]] += 1
            assert union.max() <= 1, f"{image_id}: classes overlap"
    assert per_class == summary["defects"]
    assert free == summary["defect_free"]


def test_deterministic(dataset: tuple[Path, dict], tmp_path: Path) -> None:
    root, summary = dataset
    again = generate_steel_dataset(
        tmp_path / "again", n_train=12, n_valid=4, n_test=4, seed=5, **SMALL
    )
    assert again == summary
    assert _files(tmp_path / "again") == _files(root)
    other = generate_steel_dataset(tmp_path / "other", n_train=2, n_valid=0, n_test=0, **SMALL)
    assert other["images"]["train"] == 2
    assert (
        _files(tmp_path / "other")["train/images/00000.png"]
        != _files(root)["train/images/00000.png"]
    )


@pytest.mark.parametrize("fraction", [0.0, 0.25, 1.0])
def test_defect_free_fraction(tmp_path: Path, fraction: float) -> None:
    summary = generate_steel_dataset(
        tmp_path / "ds", n_train=8, n_valid=0, n_test=0, defect_free_fraction=fraction, **SMALL
    )
    assert summary["defect_free"] == round(8 * fraction)
    table = _table(tmp_path / "ds", "train")
    assert sum(not masks for masks in table.values()) == round(8 * fraction)


def test_class_weights_select_classes(tmp_path: Path) -> None:
    summary = generate_steel_dataset(
        tmp_path / "ds",
        n_train=6,
        n_valid=0,
        n_test=0,
        class_weights=(0, 0, 1, 0),
        defect_free_fraction=0.0,
        **SMALL,
    )
    assert summary["defects"] == {"pits": 0, "inclusion": 0, "scratches": 6, "patches": 0}
    table = _table(tmp_path / "ds", "train")
    assert all(set(masks) == {3} for masks in table.values())


def test_render_every_class() -> None:
    for class_id in range(1, 5):
        rng = np.random.default_rng(class_id)
        img, masks = render_steel_strip(rng, SMALL["width"], SMALL["height"], [class_id])
        assert img.dtype == np.uint8 and img.shape == SHAPE
        assert list(masks) == [class_id]
        mask = masks[class_id]
        assert mask.dtype == np.bool_ and mask.any()
        # Same seed without the defect: same surface, so the change concentrates in the mask.
        clean, _ = render_steel_strip(np.random.default_rng(class_id), *SMALL.values(), [])
        diff = np.abs(img.astype(np.int16) - clean.astype(np.int16))
        assert diff[mask].mean() > 1.5 * diff[~mask].mean()


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="class id"):
        render_steel_strip(np.random.default_rng(0), 400, 64, [5])
    with pytest.raises(ValueError, match="at least"):
        render_steel_strip(np.random.default_rng(0), 64, 16, [])
    with pytest.raises(ValueError, match="class_weights"):
        generate_steel_dataset(tmp_path / "x", class_weights=(1, 1), **SMALL)
    with pytest.raises(ValueError, match="defect_free_fraction"):
        generate_steel_dataset(tmp_path / "x", defect_free_fraction=1.5, **SMALL)
    assert not (tmp_path / "x").exists()


def test_preview(dataset: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = dataset
    out = save_steel_preview(root, tmp_path / "plots" / "steel.png", n=3)
    assert out == tmp_path / "plots" / "steel.png"
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 100
    with pytest.raises(FileNotFoundError):
        save_steel_preview(tmp_path / "missing", tmp_path / "p.png")
