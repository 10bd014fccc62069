"""A corpus of broken inputs: each fails naming the file (and line), or is skipped and counted.

Every case starts from a copy of the tiny synthetic weld dataset and breaks one thing.
The two config cases of the corpus (unknown key, wrong type) live in test_config.py.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from defects.data.detection import DetectionDataModule
from defects.formats.errors import FormatError

CLASSES = ["porosity", "crack", "lack_of_fusion", "slag_inclusion"]


def first(root: Path, split: str, kind: str) -> Path:
    suffix = "*.png" if kind == "images" else "*.txt"
    return sorted((root / split / kind).glob(suffix))[0]


def labelled(root: Path) -> Path:
    """A train label file that has boxes (so its image is a defect image)."""
    return next(
        p for p in sorted((root / "train" / "labels").glob("*.txt")) if p.read_text().strip()
    )


def set_line(text: str) -> Callable[[Path], Path]:
    def mutate(root: Path) -> Path:
        label = labelled(root)
        lines = label.read_text().splitlines()
        lines.insert(1, text)
        label.write_text("\n".join(lines) + "\n")
        return label

    return mutate


def corrupt_jpeg(root: Path) -> Path:
    image = first(root, "train", "images")
    bad = image.with_suffix(".jpg")
    bad.write_bytes(b"\xff\xd8\xff\xe0" + b"\x13\x37" * 200)
    image.unlink()
    return bad


def truncated_png(root: Path) -> Path:
    image = first(root, "train", "images")
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    return image


def zero_byte_image(root: Path) -> Path:
    image = first(root, "train", "images")
    image.write_bytes(b"")
    return image


def label_without_image(root: Path) -> Path:
    orphan = root / "train" / "labels" / "orphan.txt"
    orphan.write_text("0 0.5 0.5 0.1 0.1\n")
    return orphan


LINE_CASES = {
    "four fields": ("0 0.5 0.5 0.1", "5 fields"),
    "nan coordinate": ("1 nan 0.5 0.1 0.1", "nan"),
    "class id >= nc": ("4 0.5 0.5 0.1 0.1", "class"),
    "negative width": ("2 0.5 0.5 -0.1 0.1", "width|w"),
    "coordinate outside [0,1]": ("0 1.5 0.5 0.1 0.1", "outside|range|\\[0, 1\\]"),
}
FILE_CASES = {
    "corrupt jpeg": (corrupt_jpeg, "decode"),
    "truncated file": (truncated_png, "decode|truncated"),
    "0-byte image": (zero_byte_image, "empty"),
    "label without image": (label_without_image, "no matching image"),
}


@pytest.fixture
def broken_root(weld_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(weld_root, root)
    return root


def datamodule(root: Path, strict: bool) -> DetectionDataModule:
    return DetectionDataModule(str(root), CLASSES, batch_size=2, strict=strict)


@pytest.mark.parametrize("case", sorted(LINE_CASES))
def test_bad_label_line_names_file_and_line(case: str, broken_root: Path) -> None:
    text, reason = LINE_CASES[case]
    label = set_line(text)(broken_root)
    with pytest.raises(FormatError, match=rf"{label.name}:2: .*({reason})") as info:
        datamodule(broken_root, strict=True).setup("fit")
    assert info.value.line == 2


@pytest.mark.parametrize("case", sorted(LINE_CASES))
def test_bad_label_line_is_skipped_and_counted(case: str, broken_root: Path) -> None:
    label = set_line(LINE_CASES[case][0])(broken_root)
    good_boxes = len(label.read_text().splitlines()) - 1
    dm = datamodule(broken_root, strict=False)
    dm.setup("fit")
    assert dm.report.count == 1
    sample = next(s for s in dm.datasets["train"].samples if s.image.stem == label.stem)
    assert len(sample.labels) == good_boxes


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_bad_file_fails_naming_it(case: str, broken_root: Path) -> None:
    mutate, reason = FILE_CASES[case]
    path = mutate(broken_root)
    with pytest.raises(FormatError, match=rf"{path.name}.*({reason})"):
        datamodule(broken_root, strict=True).setup("fit")


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_bad_file_is_skipped_and_counted(case: str, broken_root: Path) -> None:
    mutate, _ = FILE_CASES[case]
    path = mutate(broken_root)
    dm = datamodule(broken_root, strict=False)
    dm.setup("fit")
    assert dm.report.count == 1
    assert path.name in dm.report.summary()
    assert all(s.image != path for s in dm.datasets["train"].samples)


def huge_image(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make one train image a 'decompression bomb' by lowering PIL's limit below its size."""
    image = first(root, "train", "images")
    with Image.open(image) as im:
        width, height = im.size
        im.resize((width * 3, height)).save(image)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", width * height)  # bomb above twice that
    return image


def test_decompression_bomb_fails_naming_it(
    broken_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = huge_image(broken_root, monkeypatch)
    with pytest.raises(FormatError, match=rf"{path.name}: refused as a possible decompression"):
        datamodule(broken_root, strict=True).setup("fit")


def test_decompression_bomb_is_skipped_and_counted(
    broken_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = huge_image(broken_root, monkeypatch)
    dm = datamodule(broken_root, strict=False)
    dm.setup("fit")
    assert dm.report.count == 1 and path.name in dm.report.summary()
    assert all(s.image != path for s in dm.datasets["train"].samples)


def test_rounding_overshoot_is_clipped_and_counted_not_skipped(broken_root: Path) -> None:
    label = set_line("1 0.5 0.5 0.2 1.0004")(broken_root)
    boxes = len(label.read_text().splitlines())
    dm = datamodule(broken_root, strict=True)
    dm.setup("fit")
    assert dm.report.count == 0
    assert dm.report.clipped == [(str(label), 1)]
    sample = next(s for s in dm.datasets["train"].samples if s.image.stem == label.stem)
    assert len(sample.labels) == boxes
    assert sample.boxes[1].tolist() == pytest.approx([0.4 * 160, 0.0, 0.6 * 160, 128.0])


def test_overshoot_beyond_tolerance_names_file_and_line(broken_root: Path) -> None:
    label = set_line("1 0.5 0.5 0.2 1.01")(broken_root)
    with pytest.raises(FormatError, match=rf"{label.name}:2: .*outside"):
        datamodule(broken_root, strict=True).setup("fit")


def test_empty_split_names_the_folder(broken_root: Path) -> None:
    for image in (broken_root / "valid" / "images").iterdir():
        image.unlink()
    with pytest.raises(FormatError, match=r"valid/images.*empty"):
        datamodule(broken_root, strict=False).setup("fit")


def test_missing_split_folder_names_it(broken_root: Path) -> None:
    shutil.rmtree(broken_root / "test")
    dm = datamodule(broken_root, strict=True)
    dm.setup("fit")  # train and valid are enough to fit
    with pytest.raises(FormatError, match=r"test.*missing"):
        dm.setup("test")


def test_missing_dataset_folder(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="does not exist"):
        datamodule(tmp_path / "absent", strict=True).setup("fit")


def test_class_names_must_match_data_yaml(broken_root: Path) -> None:
    dm = DetectionDataModule(str(broken_root), ["a", "b", "c", "d"], strict=True)
    with pytest.raises(FormatError, match=r"data\.yaml.*differ"):
        dm.setup("fit")


def test_raw_data_is_never_modified(broken_root: Path) -> None:
    set_line("0 0.5 0.5 0.1")(broken_root)
    before = {p: p.read_bytes() for p in broken_root.rglob("*") if p.is_file()}
    dm = datamodule(broken_root, strict=False)
    dm.setup("fit")
    for batch in dm.train_dataloader():
        assert batch
    assert before == {p: p.read_bytes() for p in broken_root.rglob("*") if p.is_file()}
