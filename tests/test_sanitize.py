"""Safe file names: transliteration, collisions, labels following images, nothing lost."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pytest

from defects.cli import main
from defects.formats.sanitize import (
    RENAMES_CSV,
    apply_sanitize,
    plan_sanitize,
    sanitize_name,
)


def tree(root: Path) -> dict[str, str]:
    """Every file under `root` (relative posix path) with a digest of its bytes."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def make(root: Path, *names: str) -> Path:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"content of {name}", encoding="utf-8")
    return root


def plan_names(root: Path) -> dict[str, str]:
    return {old.as_posix(): new.as_posix() for old, new in plan_sanitize(root)}


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("Дефект 1.jpg", "defekt_1.jpg"),
        ("Щука Ёж Объект.PNG", "shchuka_ezh_obekt.png"),
        ("Scan (copy) #2.JPG", "scan_copy_2.jpg"),
        ("Café  crème.jpeg", "cafe_creme.jpeg"),
        ("__weird--name__.txt", "weird-name.txt"),
        ("img.001.tif", "img_001.tif"),
        ("Зображення ї є ґ.bmp", "zobrazhennya_yi_ye_g.bmp"),
        ("漢字.png", "file.png"),
        ("README", "readme"),
    ],
)
def test_sanitize_name(name: str, safe: str) -> None:
    assert sanitize_name(name) == safe
    assert sanitize_name(safe) == safe  # idempotent


def test_collisions_get_numbered_deterministically(tmp_path: Path) -> None:
    make(tmp_path, "A b.jpg", "a_b.jpg", "X y.png", "x  Y.png", "Photo.JPG", "photo.jpg")
    assert plan_names(tmp_path) == {
        "A b.jpg": "a_b_1.jpg",  # a_b.jpg is safe already and keeps its name
        "Photo.JPG": "photo_1.jpg",  # photo.jpg exists (case-insensitively the same name)
        "X y.png": "x_y.png",
        "x  Y.png": "x_y_1.png",  # both map to x_y.png: name order decides
    }


def test_labels_follow_their_images(tmp_path: Path) -> None:
    make(
        tmp_path,
        "train/images/Дефект 1.jpg",
        "train/labels/Дефект 1.txt",
        "train/labels/defekt_1.txt",  # an unrelated safe label: the pair must avoid it
        "train/images/Ok.PNG",
        "train/labels/Ok.txt",
        "train/labels/Orphan Label.txt",
        "obj_train_data/Кадр 7.jpg",
        "obj_train_data/Кадр 7.txt",  # CVAT YOLO export: label next to its image
    )
    assert plan_names(tmp_path) == {
        "obj_train_data/Кадр 7.jpg": "obj_train_data/kadr_7.jpg",
        "obj_train_data/Кадр 7.txt": "obj_train_data/kadr_7.txt",
        "train/images/Ok.PNG": "train/images/ok.png",
        "train/labels/Ok.txt": "train/labels/ok.txt",
        "train/images/Дефект 1.jpg": "train/images/defekt_1_1.jpg",
        "train/labels/Дефект 1.txt": "train/labels/defekt_1_1.txt",
        "train/labels/Orphan Label.txt": "train/labels/orphan_label.txt",
    }


def test_apply_renames_loses_nothing_and_is_idempotent(tmp_path: Path) -> None:
    make(
        tmp_path,
        "images/Дефект 1.jpg",
        "labels/Дефект 1.txt",
        "images/A b.jpg",
        "images/a_b.jpg",
        "labels/a_b.txt",
        "images/.hidden.jpg",
    )
    before = tree(tmp_path)
    plan = plan_sanitize(tmp_path)
    log = apply_sanitize(tmp_path, plan)
    after = tree(tmp_path)
    with open(log, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["old"]: r["new"] for r in rows} == {o.as_posix(): n.as_posix() for o, n in plan}
    mapping = {r["old"]: r["new"] for r in rows}
    del after[RENAMES_CSV]
    assert after == {mapping.get(name, name): digest for name, digest in before.items()}
    assert (tmp_path / "labels" / "defekt_1.txt").read_text() == "content of labels/Дефект 1.txt"
    assert plan_sanitize(tmp_path) == []  # idempotent: a sanitized folder plans nothing


def test_a_second_run_appends_to_renames_csv(tmp_path: Path) -> None:
    make(tmp_path, "First One.jpg")
    apply_sanitize(tmp_path, plan_sanitize(tmp_path))
    make(tmp_path, "Second One.jpg")
    apply_sanitize(tmp_path, plan_sanitize(tmp_path))
    lines = (tmp_path / RENAMES_CSV).read_text().splitlines()
    assert lines == ["old,new", "First One.jpg,first_one.jpg", "Second One.jpg,second_one.jpg"]


def test_swaps_and_chains_are_safe(tmp_path: Path) -> None:
    make(tmp_path, "a.txt", "b.txt", "c.txt")
    swap = [(Path("a.txt"), Path("b.txt")), (Path("b.txt"), Path("a.txt"))]
    apply_sanitize(tmp_path, swap)
    assert (tmp_path / "a.txt").read_text() == "content of b.txt"
    assert (tmp_path / "b.txt").read_text() == "content of a.txt"
    chain = [(Path("b.txt"), Path("c.txt")), (Path("c.txt"), Path("d.txt"))]
    apply_sanitize(tmp_path, chain)
    assert (tmp_path / "c.txt").read_text() == "content of a.txt"
    assert (tmp_path / "d.txt").read_text() == "content of c.txt"


def test_a_plan_that_would_overwrite_changes_nothing(tmp_path: Path) -> None:
    make(tmp_path, "A.txt", "b.txt", "c.txt")
    before = tree(tmp_path)
    with pytest.raises(FileExistsError, match="c.txt"):
        apply_sanitize(tmp_path, [(Path("A.txt"), Path("a.txt")), (Path("b.txt"), Path("c.txt"))])
    with pytest.raises(ValueError, match="two files"):
        apply_sanitize(tmp_path, [(Path("A.txt"), Path("x.txt")), (Path("b.txt"), Path("X.txt"))])
    assert tree(tmp_path) == before


def test_cli_dry_run_prints_the_plan_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    make(tmp_path, "Дефект 1.jpg", "A b.jpg", "a_b.jpg")
    before = tree(tmp_path)
    main(["sanitize", str(tmp_path), "--dry-run"])
    out = capsys.readouterr().out
    assert "Дефект 1.jpg -> defekt_1.jpg" in out and "A b.jpg -> a_b_1.jpg" in out
    assert "dry run" in out
    assert tree(tmp_path) == before
    main(["sanitize", str(tmp_path)])
    assert sorted(tree(tmp_path)) == ["a_b.jpg", "a_b_1.jpg", "defekt_1.jpg", RENAMES_CSV]
