"""Synthetic weld radiograph dataset: layout, determinism, labels, class mix and preview."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from defects.data.synthetic import (
    WELD_CLASSES,
    generate_weld_dataset,
    render_weld_radiograph,
    save_preview,
)
from defects.data.synthetic import weld as weld_module
from defects.formats.yolo import read_class_names, read_yolo_labels

SMALL = {"width": 192, "height": 128}
SPLITS = ("train", "valid", "test")


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("weld") / "ds"
    summary = generate_weld_dataset(
        root, n_train=12, n_valid=4, n_test=4, defect_free_fraction=0.25, seed=3, **SMALL
    )
    return root, summary


def test_layout_counts_and_summary(dataset: tuple[Path, dict]) -> None:
    root, summary = dataset
    assert summary["images"] == {"train": 12, "valid": 4, "test": 4}
    assert summary["seed"] == 3
    assert read_class_names(root / "data.yaml") == list(WELD_CLASSES)
    box_count = 0
    for split in SPLITS:
        images = sorted((root / split / "images").iterdir())
        labels = sorted((root / split / "labels").iterdir())
        assert [p.name for p in images] == [f"{i:05d}.png" for i in range(len(images))]
        assert [p.stem for p in labels] == [p.stem for p in images]
        assert all(p.suffix == ".txt" for p in labels)
        assert len(images) == summary["images"][split]
        for path in images:
            with Image.open(path) as im:
                assert im.format == "PNG" and im.mode == "L"
                assert im.size == (SMALL["width"], SMALL["height"])
        box_count += sum(len(read_yolo_labels(p, len(WELD_CLASSES))) for p in labels)
    assert sum(summary["boxes"].values()) == box_count
    # No temp or backup siblings left next to the dataset.
    assert [p.name for p in root.parent.iterdir()] == ["ds"]


def test_defect_free_images_have_empty_label_files(dataset: tuple[Path, dict]) -> None:
    root, summary = dataset
    empty = 0
    for split, n in summary["images"].items():
        labels = list((root / split / "labels").glob("*.txt"))
        split_empty = sum(p.stat().st_size == 0 for p in labels)
        assert split_empty == round(0.25 * n)  # exact seeded subset per split
        empty += split_empty
    assert summary["defect_free"] == empty


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_defect_free_fraction_extremes(tmp_path: Path, fraction: float) -> None:
    summary = generate_weld_dataset(
        tmp_path / "ds", n_train=5, n_valid=0, n_test=0, defect_free_fraction=fraction, **SMALL
    )
    sizes = [p.stat().st_size for p in (tmp_path / "ds" / "train" / "labels").iterdir()]
    if fraction == 0.0:
        assert summary["defect_free"] == 0 and all(s > 0 for s in sizes)
    else:
        assert summary["defect_free"] == 5 and all(s == 0 for s in sizes)
        assert sum(summary["boxes"].values()) == 0


def test_boxes_valid_and_not_overlapping(dataset: tuple[Path, dict]) -> None:
    root, _ = dataset
    width, height = SMALL["width"], SMALL["height"]
    for label in root.glob("*/labels/*.txt"):
        boxes = read_yolo_labels(label, len(WELD_CLASSES))  # strict: raises on any bad line
        assert len(boxes) <= 3
        pixel = []
        for b in boxes:
            assert 0 <= b.class_id < len(WELD_CLASSES)
            assert b.w > 0 and b.h > 0
            assert b.cx - b.w / 2 >= -1e-6 and b.cx + b.w / 2 <= 1 + 1e-6
            assert b.cy - b.h / 2 >= -1e-6 and b.cy + b.h / 2 <= 1 + 1e-6
            x1, y1, x2, y2 = b.to_xyxy(width, height)
            assert x2 - x1 >= 8 - 1e-3 and y2 - y1 >= 8 - 1e-3
            pixel.append((x1, y1, x2, y2))
        for i, a in enumerate(pixel):
            for c in pixel[i + 1 :]:
                overlap_w = min(a[2], c[2]) - max(a[0], c[0])
                overlap_h = min(a[3], c[3]) - max(a[1], c[1])
                assert overlap_w <= 0 or overlap_h <= 0, f"{label}: {a} overlaps {c}"


def test_deterministic_same_seed_identical_bytes(tmp_path: Path) -> None:
    kwargs = {"n_train": 3, "n_valid": 2, "n_test": 2, **SMALL}
    generate_weld_dataset(tmp_path / "a", seed=11, **kwargs)
    generate_weld_dataset(tmp_path / "b", seed=11, **kwargs)
    generate_weld_dataset(tmp_path / "c", seed=12, **kwargs)
    a, b, c = (_files(tmp_path / name) for name in "abc")
    assert a == b
    assert a.keys() == c.keys() and a != c
    # Splits draw from their own streams: a bigger train split leaves valid/test unchanged.
    generate_weld_dataset(tmp_path / "d", seed=11, **{**kwargs, "n_train": 5})
    d = _files(tmp_path / "d")
    assert {k: v for k, v in d.items() if not k.startswith("train")} == {
        k: v for k, v in a.items() if not k.startswith("train")
    }


def test_class_weights_pick_only_weighted_classes(tmp_path: Path) -> None:
    summary = generate_weld_dataset(
        tmp_path / "ds", n_train=6, n_valid=0, n_test=0, class_weights=[1, 0, 0, 0], **SMALL
    )
    assert summary["boxes"]["porosity"] > 0
    assert all(v == 0 for k, v in summary["boxes"].items() if k != "porosity")
    ids = {
        b.class_id for p in (tmp_path / "ds").glob("*/labels/*.txt") for b in read_yolo_labels(p)
    }
    assert ids == {0}


def test_class_subset_reorders_ids(tmp_path: Path) -> None:
    names = ["slag_inclusion", "crack"]
    summary = generate_weld_dataset(
        tmp_path / "ds", n_train=6, n_valid=0, n_test=0, class_names=names, seed=1, **SMALL
    )
    assert set(summary["boxes"]) == set(names)
    assert read_class_names(tmp_path / "ds" / "data.yaml") == names
    ids = {
        b.class_id for p in (tmp_path / "ds").glob("*/labels/*.txt") for b in read_yolo_labels(p)
    }
    assert ids <= {0, 1}


@pytest.mark.parametrize("kind", WELD_CLASSES)
def test_render_single_defect_is_dark_and_boxed(kind: str) -> None:
    rng = np.random.default_rng(0)
    image, boxes = render_weld_radiograph(rng, 384, 256, [kind])
    assert image.dtype == np.uint8 and image.shape == (256, 384)
    assert [b.class_id for b in boxes] == [WELD_CLASSES.index(kind)]
    x1, y1, x2, y2 = (int(round(v)) for v in boxes[0].to_xyxy(384, 256))
    inside = image[y1:y2, x1:x2].astype(float)
    ring = np.concatenate(
        [image[max(y1 - 3, 0) : y1, x1:x2].ravel(), image[y2 : y2 + 3, x1:x2].ravel()]
    )
    # Defects are darker than the metal around them by far more than the film grain (~4-6 levels).
    assert np.median(ring) - np.percentile(inside, 5) > 20


def test_render_defect_free_and_unknown_kind() -> None:
    image, boxes = render_weld_radiograph(np.random.default_rng(1), 256, 160, [])
    assert boxes == [] and image.shape == (160, 256)
    # Seam brighter than the plate (thicker metal), defect-free image is not flat.
    assert image[70:90].mean() > image[:20].mean() + 20
    with pytest.raises(ValueError, match="unknown weld defect"):
        render_weld_radiograph(np.random.default_rng(1), 256, 160, ["scratch"])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"class_names": ["porosity", "dent"]},
        {"class_weights": [1, 1]},
        {"class_weights": [0, 0, 0, 0]},
        {"class_weights": [1, -1, 1, 1]},
        {"defect_free_fraction": 1.5},
        {"max_defects": 0},
        {"n_train": -1},
        {"width": 64},
    ],
)
def test_invalid_arguments_raise_before_writing(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        generate_weld_dataset(
            tmp_path / "ds", **{"n_train": 2, "n_valid": 0, "n_test": 0, **kwargs}
        )
    assert not (tmp_path / "ds").exists()


def test_crash_leaves_no_partial_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = weld_module.render_weld_radiograph

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(weld_module, "render_weld_radiograph", flaky)
    with pytest.raises(RuntimeError, match="boom"):
        generate_weld_dataset(tmp_path / "ds", n_train=4, n_valid=0, n_test=0, **SMALL)
    assert list(tmp_path.iterdir()) == []


def test_save_preview_writes_png(dataset: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = dataset
    out = save_preview(root, tmp_path / "plots" / "weld_preview.png", n=6)
    assert out == tmp_path / "plots" / "weld_preview.png"
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 400 and im.size[1] > 150
    # Asking for more images than exist just shows them all.
    save_preview(root, tmp_path / "valid.png", n=50, split="valid")
    assert (tmp_path / "valid.png").stat().st_size > 0
