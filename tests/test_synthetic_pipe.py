"""Synthetic sewer-pipe dataset: layout, labels derived from masks, planted cases, preview."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import imagehash
import numpy as np
import pytest
from PIL import Image

from defects.data.synthetic import (
    PIPE_CLASSES,
    boxes_from_index_mask,
    generate_pipe_dataset,
    render_pipe_frame,
    save_pipe_preview,
)
from defects.data.synthetic import pipe as pipe_module
from defects.formats.mask_folder import read_index_mask
from defects.formats.yolo import read_class_names

SIZE = {"width": 192, "height": 192}
SPLITS = ("train", "valid", "test")
RARE = ("misalignment", "rupture")
COMMON = [c for c in PIPE_CLASSES if c not in RARE]
KW = dict(
    n_train=28,
    n_valid=4,
    n_test=4,
    rare_fraction=0.1,
    n_duplicates=5,
    n_false_boxes=6,
    fine_per_class=2,
    seed=3,
    **SIZE,
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    root = tmp_path_factory.mktemp("pipe") / "ds"
    summary = generate_pipe_dataset(root, **KW)
    planted = json.loads((root / "planted.json").read_text())
    return root, summary, planted


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text().split("\n") if line.strip()]


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_layout_and_summary(dataset: tuple[Path, dict, dict]) -> None:
    root, summary, planted = dataset
    assert read_class_names(root / "data.yaml") == list(PIPE_CLASSES)
    assert summary["originals"] == {"train": 28, "valid": 4, "test": 4}
    assert summary["images"] == {"train": 28 + 5, "valid": 4, "test": 4}
    assert summary["planted"] == {"duplicates": 4, "conflicting_labels": 1, "false_boxes": 6}
    for split in SPLITS:
        stems = {p.stem for p in (root / split / "images").iterdir()}
        assert len(stems) == summary["images"][split]
        assert {p.stem for p in (root / split / "labels").iterdir()} == stems
        assert {p.stem for p in (root / split / "true_masks").iterdir()} == stems
        for stem in sorted(stems)[:3]:
            with Image.open(root / split / "images" / f"{stem}.png") as im:
                assert im.format == "PNG" and im.mode == "RGB" and im.size == (192, 192)
    fine = (root / "fine.txt").read_text().split()
    assert len(fine) == summary["fine"] and set(fine) <= {
        p.stem for p in (root / "train" / "images").iterdir()
    }
    assert [p.name for p in root.parent.iterdir()] == ["ds"]  # no temp siblings left


def test_labels_are_the_components_of_the_true_masks(dataset: tuple[Path, dict, dict]) -> None:
    root, _, planted = dataset
    false = {(e["label"], e["line"]) for e in planted["false_boxes"]}
    # Copies carry their original's label file (checked in test_planted_duplicates).
    copies = {e["copy"][:-4] for e in planted["duplicates"] + planted["conflicting_labels"]}
    checked = 0
    for split in SPLITS:
        for label in sorted((root / split / "labels").glob("*.txt")):
            if split == "train" and label.stem in copies:
                continue
            mask = read_index_mask(root / split / "true_masks" / f"{label.stem}.png", 6)
            lines = _lines(label)
            kept = [
                line
                for n, line in enumerate(lines, 1)
                if split != "train" or (label.name, n) not in false
            ]
            assert kept == [b.to_line() for b in boxes_from_index_mask(mask)], label
            checked += len(kept)
    assert checked > 40


def test_masks_are_irregular_not_rectangles(dataset: tuple[Path, dict, dict]) -> None:
    root, _, _ = dataset
    fill: dict[int, list[float]] = {}
    for path in (root / "train" / "true_masks").glob("*.png"):
        mask = read_index_mask(path, 6)
        for value in range(1, 7):
            _, _, stats, _ = cv2.connectedComponentsWithStats((mask == value).astype(np.uint8))
            for _x, _y, w, h, area in stats[1:]:
                fill.setdefault(value - 1, []).append(area / (w * h))
    assert set(fill) >= {PIPE_CLASSES.index(c) for c in COMMON}
    for class_id, values in fill.items():  # a box-filled mask would have fill 1.0
        assert np.median(values) < 0.85, (PIPE_CLASSES[class_id], np.median(values))


def test_planted_duplicates(dataset: tuple[Path, dict, dict]) -> None:
    root, _, planted = dataset
    images, labels = root / "train" / "images", root / "train" / "labels"
    kinds = [e["kind"] for e in planted["duplicates"]]
    assert kinds == ["exact", "reencode", "brightness", "resize"]
    for e in planted["duplicates"] + planted["conflicting_labels"]:
        a, b = images / e["original"], images / e["copy"]
        assert e["original"] < e["copy"]  # the original sorts first: "keep the first" keeps it
        same_bytes = a.read_bytes() == b.read_bytes()
        assert same_bytes == (e["kind"] in ("exact", "conflict"))
        with Image.open(a) as pa, Image.open(b) as pb:  # the cleaner's hash
            assert imagehash.phash(pa) - imagehash.phash(pb) <= 2
        same_labels = _lines(labels / f"{a.stem}.txt") == _lines(labels / f"{b.stem}.txt")
        assert same_labels == (e["kind"] != "conflict")
        with Image.open(b) as im:
            assert (im.size != (192, 192)) == (e["kind"] == "resize")


def test_planted_false_boxes(dataset: tuple[Path, dict, dict]) -> None:
    root, _, planted = dataset
    entries = planted["false_boxes"]
    assert sorted(e["kind"] for e in entries) == sorted(pipe_module.FALSE_BOX_KINDS)
    assert len({e["label"] for e in entries}) == len(entries)  # one per host
    for e in entries:
        lines = _lines(root / "train" / "labels" / e["label"])
        assert lines[e["line"] - 1] == e["text"]
        cls, cx, cy, w, h = e["text"].split()
        assert PIPE_CLASSES[int(cls)] in COMMON
        if e["kind"] == "duplicate":
            assert lines.count(e["text"]) == 2 and lines.index(e["text"]) < e["line"] - 1


def test_rare_classes_and_fine_subset(dataset: tuple[Path, dict, dict]) -> None:
    root, summary, planted = dataset
    stems_with: dict[str, set[str]] = {c: set() for c in PIPE_CLASSES}
    rare_boxes = {c: 0 for c in RARE}
    for path in (root / "train" / "true_masks").glob("*.png"):
        if int(path.stem) >= 28:
            continue  # planted copies
        mask = read_index_mask(path, 6)
        for box in boxes_from_index_mask(mask):
            name = PIPE_CLASSES[box.class_id]
            stems_with[name].add(path.stem)
            rare_boxes[name] = rare_boxes.get(name, 0) + (name in RARE)
    rare_images = stems_with["misalignment"] | stems_with["rupture"]
    assert 1 <= len(rare_images) <= round(0.1 * 28)
    assert {c: rare_boxes[c] for c in RARE} == summary["rare_boxes"]["train"]
    assert planted["rare_boxes"] == summary["rare_boxes"]
    fine = set((root / "fine.txt").read_text().split())
    for c in COMMON:
        assert len(fine & stems_with[c]) >= 2, c
        assert set(planted["fine"][c]) == fine & stems_with[c]
    assert not fine & rare_images
    sources = {e["original"][:-4] for e in planted["duplicates"] + planted["conflicting_labels"]}
    hosts = {e["label"][:-4] for e in planted["false_boxes"]}
    assert not (fine & sources) and not (fine & hosts) and not (sources & hosts)


def test_deterministic_and_splits_independent(tmp_path: Path) -> None:
    kw = {**SIZE, "n_train": 3, "n_valid": 2, "n_test": 1}
    none = {"n_duplicates": 0, "n_false_boxes": 0, "fine_per_class": 0}
    generate_pipe_dataset(tmp_path / "a", seed=5, **kw, **none)
    generate_pipe_dataset(tmp_path / "b", seed=5, **kw, **none)
    generate_pipe_dataset(tmp_path / "c", seed=6, **kw, **none)
    a, b, c = (_files(tmp_path / n) for n in "abc")
    assert a == b and a.keys() == c.keys() and a != c
    generate_pipe_dataset(tmp_path / "d", seed=5, **{**kw, "n_train": 4}, **none)
    d = _files(tmp_path / "d")
    assert {k: v for k, v in d.items() if k.startswith(("valid", "test"))} == {
        k: v for k, v in a.items() if k.startswith(("valid", "test"))
    }


@pytest.mark.parametrize("kind", PIPE_CLASSES)
def test_render_each_kind(kind: str) -> None:
    image, mask = render_pipe_frame(np.random.default_rng(1), 192, 192, [kind])
    assert image.shape == (192, 192, 3) and image.dtype == np.uint8
    assert set(np.unique(mask)) == {0, PIPE_CLASSES.index(kind) + 1}
    boxes = boxes_from_index_mask(mask)
    assert boxes and all(b.class_id == PIPE_CLASSES.index(kind) for b in boxes)


def test_frame_looks_down_a_pipe() -> None:
    """Cheap proxies for the look: dark far end near the centre, lit wall at the border."""
    rng = np.random.default_rng(0)
    for _ in range(3):
        image, _ = render_pipe_frame(rng, 192, 192, [])
        grey = image.mean(axis=2)
        centre = grey[76:116, 76:116].mean()
        border = np.concatenate([grey[:, :20].ravel(), grey[:, -20:].ravel()]).mean()
        assert centre < 0.6 * border
        assert grey.std() > 15  # texture, rings and water, not a flat fill


@pytest.mark.parametrize(
    "kwargs",
    [
        {"class_names": ["deformation", "dent"]},
        {"rare_classes": ["dent"]},
        {"rare_classes": list(PIPE_CLASSES)},
        {"rare_fraction": 1.5},
        {"n_train": -1},
        {"width": 64},
        {"n_duplicates": 50},
        {"fine_per_class": 50},
    ],
)
def test_invalid_arguments_raise_before_writing(tmp_path: Path, kwargs: dict) -> None:
    base = {"n_train": 4, "n_valid": 0, "n_test": 0, "n_duplicates": 1, "n_false_boxes": 1}
    with pytest.raises(ValueError):
        generate_pipe_dataset(tmp_path / "ds", **{**SIZE, **base, "fine_per_class": 0, **kwargs})
    assert not (tmp_path / "ds").exists()


def test_preview(dataset: tuple[Path, dict, dict], tmp_path: Path) -> None:
    root, _, _ = dataset
    out = save_pipe_preview(root, tmp_path / "plots" / "pipe" / "data_samples.png", n=4)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width >= 800 and im.height >= 300
