"""Cleaning a box-labelled dataset: every rule on hand-made cases, then the planted dataset."""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image

from defects.data.synthetic import PIPE_CLASSES, generate_pipe_dataset
from defects.formats.errors import FormatError
from defects.formats.mask_folder import read_index_mask, write_index_mask
from defects.formats.yolo import (
    NumberedBox,
    read_class_names,
    read_yolo_labels,
    write_class_names,
)
from defects.pipe import clean as C

W, H = 200, 100


def box(cx: float, cy: float, w: float, h: float, class_id: int = 0, line: int = 1) -> NumberedBox:
    return NumberedBox(class_id, cx, cy, w, h, line)


def px(x1: float, y1: float, x2: float, y2: float, class_id: int = 0, line: int = 1):
    """A NumberedBox from pixel corners in the W x H test image."""
    return box((x1 + x2) / 2 / W, (y1 + y2) / 2 / H, (x2 - x1) / W, (y2 - y1) / H, class_id, line)


# --------------------------------------------------------------------------- pHash


def _picture(seed: int, size: int = 96) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (6, 6)).astype(np.float32)
    big = np.array(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC))
    return Image.fromarray(np.clip(big, 0, 255).astype(np.uint8)).convert("RGB")


def test_phash_threshold_separates_near_copies_from_other_pictures() -> None:
    """The default threshold (4 of 64 bits) sits between crews' copies and other pictures."""
    image = _picture(1)
    arr = np.asarray(image).astype(np.int16)
    brighter = Image.fromarray(np.clip(arr + 15, 0, 255).astype(np.uint8))
    smaller = image.resize((86, 86), Image.Resampling.BILINEAR)
    phash = imagehash.phash
    assert phash(image) - phash(image.copy()) == 0
    assert phash(image) - phash(brighter) <= 2
    assert phash(image) - phash(smaller) <= C.CleanConfig().phash_threshold
    assert phash(image) - phash(_picture(2)) > 12


# --------------------------------------------------------------------------- box rules


def test_degenerate_boxes() -> None:
    flat = px(10, 10, 10.4, 40, line=1)
    fine = px(10, 10, 14, 40, line=2)
    assert [b.line for b, _ in C.degenerate_boxes([flat, fine], W, H, 1.0)] == [1]
    assert [b.line for b, _ in C.degenerate_boxes([flat, fine], W, H, 0.1)] == []


def test_outside_boxes() -> None:
    centre_out = box(1.2, 0.5, 0.1, 0.1, line=1)
    mostly_out = px(172, 82, 228, 118, line=2)  # centre on the corner: a quarter inside
    mostly_in = px(150, 10, 210, 40, line=3)  # 50 of 60 inside: kept, then clipped
    inside = px(10, 10, 40, 40, line=4)
    flags = C.outside_boxes([centre_out, mostly_out, mostly_in, inside], W, H, 0.5)
    assert [(b.line, why) for b, why in flags] == [
        (1, "centre (1.2, 0.5) is outside the image"),
        (2, "only 25% of the box is inside the image"),
    ]
    kept, removed, clipped = C.clean_boxes([mostly_in, inside], W, H, C.CleanConfig())
    assert not removed and [b.line for b in clipped] == [3]
    x1, _, x2, _ = kept[0].to_xyxy(W, H)
    assert x1 == pytest.approx(150) and x2 == pytest.approx(200)
    assert kept[1] == inside  # a box already inside is left exactly as it was


def test_size_boxes() -> None:
    tiny = px(10, 10, 13, 13, line=1)  # 9 px^2
    ok = px(10, 10, 15, 15, line=2)  # 25 px^2
    huge = px(0, 0, 199, 99, line=3)  # 98.5 % of the frame
    flags = C.size_boxes([tiny, ok, huge], W, H, min_area_px=16, max_area_fraction=0.9)
    assert [b.line for b, _ in flags] == [1, 3]
    assert "min_area_px" in flags[0][1] and "covers" in flags[1][1]


def test_aspect_boxes() -> None:
    thin = px(10, 10, 170, 12, line=1)  # 160 x 2: aspect 80
    tall = px(50, 0, 52, 40, line=2)  # 2 x 40: aspect 20
    ok = px(10, 20, 100, 30, line=3)  # aspect 9
    assert [b.line for b, _ in C.aspect_boxes([thin, tall, ok], W, H, 15)] == [1, 2]
    assert [b.line for b, _ in C.aspect_boxes([thin, tall, ok], W, H, 100)] == []


def test_duplicate_boxes() -> None:
    first = px(10, 10, 110, 60, line=1)
    jittered = px(10.5, 10, 110.5, 60.5, line=2)  # IoU ~0.985, same class: a duplicate
    other_class = px(10, 10, 110, 60, class_id=1, line=3)  # same place, other class: kept
    shifted = px(20, 10, 120, 60, line=4)  # IoU ~0.82: a neighbour, kept
    flags = C.duplicate_boxes([first, jittered, other_class, shifted], W, H, 0.95)
    assert [(b.line, why) for b, why in flags] == [(2, "same class, IoU 0.98 with line 1")]


def test_each_box_is_removed_by_its_first_rule_only() -> None:
    zero = px(10, 10, 10, 60, line=1)  # degenerate, also tiny and thin
    kept, removed, _ = C.clean_boxes([zero, px(10, 10, 60, 60, line=2)], W, H, C.CleanConfig())
    assert [(rule, b.line) for rule, b, _ in removed] == [("degenerate_box", 1)]
    assert [b.line for b in kept] == [2]


# --------------------------------------------------------------------------- image rules


def _image(rel: str, picture: Image.Image, boxes: list[NumberedBox], sha: str | None = None):
    data = picture.tobytes()
    return C.ImageRecord(
        rel.split("/")[0], Path(rel), rel, picture.width, picture.height, boxes, list(boxes),
        sha or hashlib.sha256(data).hexdigest(), imagehash.phash(picture),
    )  # fmt: skip


def test_find_duplicates_exact_near_and_distinct() -> None:
    pic = _picture(3)
    brighter = Image.fromarray(np.clip(np.asarray(pic).astype(int) + 12, 0, 255).astype(np.uint8))
    a = _image("train/images/a.png", pic, [])
    b = _image("train/images/b.png", pic, [])  # same bytes
    c = _image("train/images/c.png", brighter, [])  # near
    d = _image("train/images/d.png", _picture(4), [])  # another picture
    e = _image("test/images/a.png", brighter, [])  # leak into test: test copy dropped
    groups = C.find_duplicates([a, b, c, d, e], phash_threshold=4)
    assert len(groups) == 1 and groups[0].first is a
    assert [(m.rel, rule) for m, rule, _ in groups[0].members] == [
        ("train/images/b.png", "exact_duplicate"),
        ("train/images/c.png", "near_duplicate"),
        ("test/images/a.png", "near_duplicate"),
    ]
    assert C.find_duplicates([a, d], phash_threshold=64)[0].members[0][1] == "near_duplicate"


def test_labels_agree() -> None:
    one = [px(10, 10, 50, 50), px(100, 20, 150, 80, class_id=1)]
    moved = [px(101, 21, 151, 81, class_id=1), px(11, 10, 51, 50)]  # order does not matter
    relabelled = [px(10, 10, 50, 50, class_id=2), px(100, 20, 150, 80, class_id=1)]
    assert C.labels_agree(one, moved)
    assert not C.labels_agree(one, relabelled)
    assert not C.labels_agree(one, one[:1])
    assert not C.labels_agree(one, [px(30, 30, 70, 70), one[1]], min_iou=0.5)  # IoU 0.14


def test_rare_classes() -> None:
    names = ["a", "b", "c"]
    counts = Counter({0: 12, 1: 3})
    assert C.rare_classes(counts, names, 10) == {
        1: "3 boxes in train < min_count 10",
        2: "0 boxes in train < min_count 10",
    }
    assert C.rare_classes(counts, names, 0, drop=["a"]) == {0: "named in drop_classes"}
    with pytest.raises(ValueError, match="not classes"):
        C.rare_classes(counts, names, 0, drop=["z"])


# --------------------------------------------------------------------------- datasets


def _write_dataset(root: Path, label_a: str, label_b: str) -> None:
    """Two byte-identical train images (a, b) with the given labels, and one other image."""
    write_class_names(root / "data.yaml", ["crack", "hole"])
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "labels").mkdir(parents=True)
    _picture(5, 64).save(root / "train" / "images" / "a.png")
    _picture(5, 64).save(root / "train" / "images" / "b.png")
    _picture(6, 64).save(root / "train" / "images" / "c.png")
    (root / "train" / "labels" / "a.txt").write_text(label_a)
    (root / "train" / "labels" / "b.txt").write_text(label_b)
    (root / "train" / "labels" / "c.txt").write_text("1 0.5 0.5 0.3 0.3\n" * 1)
    mask = np.zeros((64, 64), np.uint8)
    mask[20:40, 20:40] = 2
    write_index_mask(root / "train" / "true_masks" / "c.png", mask)


@pytest.mark.parametrize("policy", ["drop_all", "keep_first"])
def test_conflicting_duplicates_policy(tmp_path: Path, policy: str) -> None:
    _write_dataset(tmp_path / "src", "0 0.5 0.5 0.4 0.4\n", "1 0.5 0.5 0.4 0.4\n")
    report = C.clean_dataset(tmp_path / "src", tmp_path / "out", on_conflict=policy, min_count=0)
    dropped = {r["file"] for r in report["removals"] if r["rule"] == "conflicting_labels"}
    kept = sorted(p.name for p in (tmp_path / "out" / "train" / "images").iterdir())
    if policy == "drop_all":
        assert dropped == {"train/images/a.png", "train/images/b.png"} and kept == ["c.png"]
    else:
        assert dropped == {"train/images/b.png"} and kept == ["a.png", "c.png"]
    assert report["conflicts"][0]["images"] == ["train/images/a.png", "train/images/b.png"]


def test_agreeing_duplicates_keep_the_first_and_classes_renumber(tmp_path: Path) -> None:
    _write_dataset(tmp_path / "src", "1 0.5 0.5 0.4 0.4\n", "1 0.5 0.5 0.41 0.4\n")
    report = C.clean_dataset(tmp_path / "src", tmp_path / "out", min_count=1)
    assert [(r["rule"], r["file"]) for r in report["removals"]] == [
        ("exact_duplicate", "train/images/b.png")
    ]
    out = tmp_path / "out"
    # "crack" has no box in train: dropped, "hole" becomes class 0 (mask value 1).
    assert read_class_names(out / "data.yaml") == ["hole"]
    assert report["classes"]["mapping"] == {"hole": 0}
    assert [b.class_id for b in read_yolo_labels(out / "train" / "labels" / "c.txt", 1)] == [0]
    assert read_index_mask(out / "train" / "true_masks" / "c.png", 1).max() == 1


def test_bad_input_and_unsafe_output_are_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _write_dataset(src, "0 0.5 0.5 0.4 0.4\n", "0 0.5 0.5 0.4 zero\n")
    with pytest.raises(FormatError, match="b.txt:1: h is not a number"):
        C.clean_dataset(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (src / "train" / "labels" / "b.txt").write_text("")
    (src / "train" / "labels" / "orphan.txt").write_text("")
    with pytest.raises(FormatError, match="orphan.txt: label file without an image"):
        C.clean_dataset(src, tmp_path / "out")
    (src / "train" / "labels" / "orphan.txt").unlink()
    for out in (src, tmp_path):
        with pytest.raises(ValueError, match="would replace the source"):
            C.clean_dataset(src, out)
    with pytest.raises(ValueError, match="on_conflict"):
        C.CleanConfig(on_conflict="vote")


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (b"0 0.5 0.5 0.1\n", 1, "expected 5 fields"),
        (b"0 0.5 0.5 0.1 0.1\n\n0 0.5 x 0.1 0.1\n", 3, "cy is not a number: 'x'"),
        (b"0 0.5 0.5 0.1 nan\n", 1, "h is not finite"),
        (b"2 0.5 0.5 0.1 0.1\n", 1, r"class id 2 out of range for 2 classes \(0..1\)"),
        (b"1.5 0.5 0.5 0.1 0.1\n", 1, "class id must be an integer, got '1.5'"),
        (b"0 0.5 0.5 0.1 0.1\xff\n", None, "not UTF-8 text"),
    ],
)
def test_bad_label_syntax_is_refused_naming_file_and_line(
    tmp_path: Path, text: bytes, line: int | None, words: str
) -> None:
    src = tmp_path / "src"
    _write_dataset(src, "0 0.5 0.5 0.4 0.4\n", "")
    (src / "train" / "labels" / "b.txt").write_bytes(text)
    with pytest.raises(FormatError, match=words) as err:
        C.clean_dataset(src, tmp_path / "out")
    assert (err.value.path, err.value.line) == (str(src / "train" / "labels" / "b.txt"), line)
    assert not (tmp_path / "out").exists()


def test_bad_geometry_is_left_to_the_rules_with_its_line(tmp_path: Path) -> None:
    """Lines the strict YOLO reader would refuse are read as written and judged by the rules."""
    src = tmp_path / "src"
    _write_dataset(src, "1 0.5 0.5 0.4 0.4\n", "1 0.5 0.5 0.4 0.4\n")
    boxes = "1 0.5 0.5 0.3 0.3\n\n0 0.5 0.5 0 0.2\n1 1.5 0.5 0.1 0.1\n1 0.98 0.5 0.1 0.1\n"
    (src / "train" / "labels" / "c.txt").write_text(boxes)
    report = C.clean_dataset(src, tmp_path / "out", min_count=0)
    assert [(r["rule"], r["file"], r["line"]) for r in report["removals"]] == [
        ("degenerate_box", "train/labels/c.txt", 3),
        ("outside_image", "train/labels/c.txt", 4),
        ("exact_duplicate", "train/images/b.png", None),
    ]
    assert report["clipped"] == [{"file": "train/labels/c.txt", "line": 5}]
    kept = read_yolo_labels(tmp_path / "out" / "train" / "labels" / "c.txt", 2)
    assert [(b.class_id, round(b.cx + b.w / 2, 6)) for b in kept] == [(1, 0.65), (1, 1.0)]


def test_undecodable_image_is_refused_naming_it(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _write_dataset(src, "0 0.5 0.5 0.4 0.4\n", "0 0.5 0.5 0.4 0.4\n")
    image = src / "train" / "images" / "c.png"
    image.write_bytes(image.read_bytes()[:200])  # header intact, pixels cut off
    with pytest.raises(FormatError) as err:
        C.clean_dataset(src, tmp_path / "out")
    assert err.value.path == str(image)


# --------------------------------------------------------------------------- planted dataset


@pytest.fixture(scope="module")
def cleaned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict, dict]:
    base = tmp_path_factory.mktemp("clean")
    src = base / "raw"
    generate_pipe_dataset(
        src, n_train=28, n_valid=5, n_test=5, width=192, height=192, rare_fraction=0.1,
        n_duplicates=6, n_false_boxes=7, fine_per_class=2, seed=7,
    )  # fmt: skip
    before = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    report = C.clean_dataset(src, base / "clean", min_count=5)
    assert {p: p.read_bytes() for p in src.rglob("*") if p.is_file()} == before  # raw untouched
    return src, base / "clean", report, json.loads((src / "planted.json").read_text())


RULE_OF_KIND = {
    "exact": "exact_duplicate",
    "reencode": "near_duplicate",
    "brightness": "near_duplicate",
    "resize": "near_duplicate",
    "degenerate": "degenerate_box",
    "outside": "outside_image",
    "tiny": "implausible_size",
    "huge": "implausible_size",
    "aspect": "implausible_aspect",
    "duplicate": "duplicate_box",
}


def test_report_lists_exactly_the_planted_cases(cleaned: tuple[Path, Path, dict, dict]) -> None:
    src, _, report, planted = cleaned
    found = {
        (r["rule"], r["file"], r["line"]) for r in report["removals"] if r["rule"] != "rare_class"
    }
    expected = {
        (RULE_OF_KIND[e["kind"]], f"train/images/{e['copy']}", None) for e in planted["duplicates"]
    }
    for e in planted["conflicting_labels"]:
        for name in (e["original"], e["copy"]):
            expected.add(("conflicting_labels", f"train/images/{name}", None))
    for e in planted["false_boxes"]:
        expected.add((RULE_OF_KIND[e["kind"]], f"train/labels/{e['label']}", e["line"]))
    assert found == expected
    assert len(found) == len(report["removals"]) - report["counts"]["by_rule"]["rare_class"]
    # Rare classes: every one of their box lines, in every split, and nothing else.
    rare_ids = {PIPE_CLASSES.index(c) for c in ("misalignment", "rupture")}
    rare_lines = set()
    dropped_images = {f for _, f, line in expected if line is None}
    for label in sorted(src.glob("*/labels/*.txt")):
        rel = f"{label.parent.parent.name}/labels/{label.name}"
        if rel.replace("/labels/", "/images/")[:-4] + ".png" in dropped_images:
            continue
        for n, text in enumerate(label.read_text().split("\n"), 1):
            if text.strip() and int(text.split()[0]) in rare_ids:
                rare_lines.add((rel, n))
    assert {(r["file"], r["line"]) for r in report["removals"] if r["rule"] == "rare_class"} == (
        rare_lines
    )
    assert [d["name"] for d in report["classes"]["dropped"]] == ["misalignment", "rupture"]


def test_cleaned_copy(cleaned: tuple[Path, Path, dict, dict]) -> None:
    src, out, report, _ = cleaned
    names = read_class_names(out / "data.yaml")
    assert names == ["deformation", "disconnection", "deposits", "obstacle"]
    assert report["counts"]["images_out"] == len(list(out.glob("*/images/*.png")))
    for label in out.glob("*/labels/*.txt"):
        read_yolo_labels(label, len(names))  # strict reader: every kept box is valid
    for mask in out.glob("*/true_masks/*.png"):
        assert read_index_mask(mask, len(names)).max() <= len(names)
    kept_train = {p.stem for p in (out / "train" / "images").iterdir()}
    fine = (out / "fine.txt").read_text().split()
    assert set(fine) <= kept_train and fine == [
        s for s in (src / "fine.txt").read_text().split() if s in kept_train
    ]
    assert not (out / "planted.json").exists()  # the answer key stays with the raw data
    with open(out / "report.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["rule"], r["file"]) for r in rows] == [
        (r["rule"], r["file"]) for r in report["removals"]
    ]
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["removals"] == report["removals"]
    assert on_disk["config"]["phash_threshold"] == 4


def test_drop_classes_named_in_config(tmp_path: Path) -> None:
    _write_dataset(tmp_path / "src", "0 0.5 0.5 0.4 0.4\n", "0 0.5 0.5 0.4 0.4\n")
    report = C.clean_dataset(tmp_path / "src", tmp_path / "out", min_count=0, drop_classes="hole")
    assert read_class_names(tmp_path / "out" / "data.yaml") == ["crack"]
    assert report["classes"]["dropped"] == [
        {"name": "hole", "boxes_in_train": 1, "reason": "named in drop_classes"}
    ]
    assert [(r["rule"], r["file"], r["line"]) for r in report["removals"]] == [
        ("exact_duplicate", "train/images/b.png", None),
        ("rare_class", "train/labels/c.txt", 1),
    ]
    assert read_index_mask(tmp_path / "out" / "train" / "true_masks" / "c.png", 1).max() == 0
