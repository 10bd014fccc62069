"""Synthetic winding videos: frame reader/writer, dataset layout, labels, determinism, atomicity."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from defects.data.detection import scan_split
from defects.data.synthetic import (
    WINDING_CLASSES,
    generate_winding_dataset,
    render_winding_video,
)
from defects.data.synthetic import winding as winding_module
from defects.formats.errors import FormatError
from defects.formats.yolo import read_class_names, read_yolo_labels
from defects.video import frames as frames_module
from defects.video import iter_frames, read_video_info, write_video

SPLITS = ("train", "valid", "test")
TINY = {"width": 160, "height": 120, "frames_per_video": 12, "every_k": 3}
CUT = [0, 3, 6, 9]  # frames cut from a 12-frame video with every_k=3


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _counter_video(path: Path, n: int = 20, fps: float = 10) -> list[np.ndarray]:
    """Frames whose brightness encodes their index, so a decoded frame can be identified."""
    frames = [np.full((48, 64, 3), 10 * i + 5, np.uint8) for i in range(n)]
    write_video(path, frames, fps)
    return frames


# --------------------------------------------------------------------------- frame reader


def test_write_and_read_video_roundtrip(tmp_path: Path) -> None:
    frames = _counter_video(tmp_path / "clip.mp4")
    info = read_video_info(tmp_path / "clip.mp4")
    assert (info.fps, info.frame_count, info.width, info.height) == (10.0, 20, 64, 48)
    decoded = list(iter_frames(tmp_path / "clip.mp4"))
    assert [i for i, _ in decoded] == list(range(20))
    for (index, frame), original in zip(decoded, frames, strict=True):
        assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
        assert abs(float(frame.mean()) - float(original.mean())) < 4, index
    # Only the finished file is left: no temp sibling from the atomic write.
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_frames_are_rgb(tmp_path: Path) -> None:
    red = np.zeros((48, 64, 3), np.uint8)
    red[..., 0] = 220
    write_video(tmp_path / "red.mp4", [red] * 3, 5)
    _, frame = next(iter_frames(tmp_path / "red.mp4"))
    r, g, b = frame.reshape(-1, 3).mean(axis=0)
    assert r > 180 and g < 40 and b < 40


def test_every_k_and_every_seconds(tmp_path: Path) -> None:
    _counter_video(tmp_path / "clip.mp4", n=20, fps=10)
    path = tmp_path / "clip.mp4"

    def picked(**kwargs) -> list[int]:
        return [i for i, _ in iter_frames(path, **kwargs)]

    assert picked(every_k=3) == [0, 3, 6, 9, 12, 15, 18]
    assert picked(every_k=25) == [0]
    # First frame at or after each multiple of the period (frame i is at i / fps seconds).
    assert picked(every_seconds=0.25) == [0, 3, 5, 8, 10, 13, 15, 18]
    assert picked(every_seconds=1.0) == [0, 10]
    assert picked(every_seconds=0.01) == list(range(20))  # never more than every frame
    # The frame content matches the index it is reported with.
    for index, frame in iter_frames(path, every_k=7):
        assert abs(float(frame.mean()) - (10 * index + 5)) < 4


@pytest.mark.parametrize(
    "kwargs",
    [
        {"every_k": 2, "every_seconds": 1.0},
        {"every_k": 0},
        {"every_k": 1.5},
        {"every_seconds": 0},
        {"every_seconds": float("nan")},
    ],
)
def test_bad_sampling_arguments(tmp_path: Path, kwargs: dict) -> None:
    _counter_video(tmp_path / "clip.mp4", n=3)
    with pytest.raises(ValueError):
        iter_frames(tmp_path / "clip.mp4", **kwargs)


def test_unreadable_videos_raise_format_error_naming_the_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not a video" * 50)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.mp4"
    _counter_video(tmp_path / "whole.mp4")
    truncated.write_bytes((tmp_path / "whole.mp4").read_bytes()[:300])
    for bad in (tmp_path / "missing.mp4", garbage, empty, truncated, tmp_path):
        with pytest.raises(FormatError) as caught:
            iter_frames(bad)  # raises on the call, not at the first next()
        assert caught.value.path == str(bad)
        with pytest.raises(FormatError, match=bad.name):
            read_video_info(bad)


def test_write_video_rejects_bad_input_and_leaves_nothing(tmp_path: Path) -> None:
    good = np.zeros((48, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="mp4"):
        write_video(tmp_path / "clip.avi", [good], 10)
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "clip.mp4", [], 10)
    with pytest.raises(ValueError, match="frame 2"):
        write_video(tmp_path / "clip.mp4", [good, good, np.zeros((48, 60, 3), np.uint8)], 10)
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "clip.mp4", [good.astype(np.float32)], 10)
    with pytest.raises(ValueError, match="fps"):
        write_video(tmp_path / "clip.mp4", [good], 0)
    assert list(tmp_path.iterdir()) == []


def test_write_video_reports_a_writer_opencv_cannot_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Closed:
        def __init__(self, *args: object) -> None:
            pass

        def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
            return False

        def release(self) -> None:
            pass

    monkeypatch.setattr(frames_module.cv2, "VideoWriter", Closed)
    with pytest.raises(OSError, match="cannot open an 'mp4v' video writer"):
        write_video(tmp_path / "clip.mp4", [np.zeros((48, 64, 3), np.uint8)], 10)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- renderer


def test_render_shapes_and_box_bounds() -> None:
    frames, labels = render_winding_video(
        np.random.default_rng(0), 160, 120, 12, list(WINDING_CLASSES)
    )
    assert len(frames) == len(labels) == 12
    for frame, boxes in zip(frames, labels, strict=True):
        assert frame.shape == (120, 160, 3) and frame.dtype == np.uint8
        for box in boxes:
            x1, y1, x2, y2 = box.to_xyxy(160, 120)
            assert 0 <= x1 < x2 <= 160 and 0 <= y1 < y2 <= 120
            assert x2 - x1 >= 10 - 1e-6 and y2 - y1 >= 10 - 1e-6
    # Colour, and a machine that moves: consecutive frames differ.
    assert np.abs(frames[0].astype(int)[..., 0] - frames[0][..., 2]).mean() > 10
    assert np.abs(frames[1].astype(int) - frames[0]).mean() > 1


def test_defect_free_video_has_no_boxes() -> None:
    frames, labels = render_winding_video(np.random.default_rng(4), 160, 120, 12, [])
    assert len(frames) == 12 and all(boxes == [] for boxes in labels)


@pytest.mark.parametrize("kind", WINDING_CLASSES)
def test_box_covers_what_the_defect_changes(kind: str) -> None:
    """Same seed with and without the defect: boxed regions differ clearly and, for defects
    that do not push the later turns along (all but a gap), nothing differs outside them."""
    width, height, n = 320, 240, 12
    boxed_frames = 0
    for seed in range(3):
        frames, labels = render_winding_video(np.random.default_rng(seed), width, height, n, [kind])
        clean, clean_labels = render_winding_video(
            np.random.default_rng(seed), width, height, n, []
        )
        assert all(b == [] for b in clean_labels)
        for frame, reference, boxes in zip(frames, clean, labels, strict=True):
            changed = np.abs(frame.astype(int) - reference).max(axis=2) > 40
            covered = np.zeros(changed.shape, bool)
            for box in boxes:
                assert box.class_id == WINDING_CLASSES.index(kind)
                x1, y1, x2, y2 = (int(round(v)) for v in box.to_xyxy(width, height))
                assert changed[y1:y2, x1:x2].sum() >= 20
                covered[max(y1 - 3, 0) : y2 + 3, max(x1 - 3, 0) : x2 + 3] = True
                boxed_frames += 1
            if kind != "gap" and boxes:
                # While a bulge grows under the lay point the feed wire touches down a little
                # higher: a few pixels of that wire may change just outside the box.
                assert (changed & ~covered).sum() <= (12 if kind == "bulge" else 0)
    assert boxed_frames >= 10


def test_render_class_ids_follow_names_and_unknown_kinds_fail() -> None:
    names = ["bulge", "gap"]
    _, labels = render_winding_video(np.random.default_rng(0), 160, 120, 12, ["gap"], names)
    assert {b.class_id for boxes in labels for b in boxes} == {1}
    with pytest.raises(ValueError, match="scratch"):
        render_winding_video(np.random.default_rng(0), 160, 120, 4, ["scratch"])
    with pytest.raises(ValueError, match="not in names"):
        render_winding_video(np.random.default_rng(0), 160, 120, 4, ["loose_loop"], names)
    with pytest.raises(ValueError, match="at least"):
        render_winding_video(np.random.default_rng(0), 100, 80, 4, [])


# --------------------------------------------------------------------------- dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Path]:
    base = tmp_path_factory.mktemp("winding")
    gif = base / "plots" / "winding.gif"
    summary = generate_winding_dataset(
        base / "ds", n_train=2, n_valid=1, n_test=1, seed=3, preview_gif=gif, **TINY
    )
    return base / "ds", summary, gif


def test_layout_and_summary(dataset: tuple[Path, dict, Path]) -> None:
    root, summary, _ = dataset
    assert summary["videos"] == {"train": 2, "valid": 1, "test": 1}
    assert summary["frames"] == {"train": 8, "valid": 4, "test": 4}
    assert summary["seed"] == 3
    assert read_class_names(root / "data.yaml") == list(WINDING_CLASSES)
    ids = {"train": ["w000", "w001"], "valid": ["w002"], "test": ["w003"]}
    boxes = 0
    for split in SPLITS:
        videos = sorted((root / "videos" / split).iterdir())
        assert [p.name for p in videos] == [f"{v}.mp4" for v in ids[split]]
        images = sorted((root / split / "images").iterdir())
        labels = sorted((root / split / "labels").iterdir())
        assert [p.name for p in images] == [f"{v}_{i:05d}.png" for v in ids[split] for i in CUT]
        assert [p.name for p in labels] == [f"{p.stem}.txt" for p in images]
        for video in videos:
            info = read_video_info(video)
            assert (info.frame_count, info.width, info.height, info.fps) == (12, 160, 120, 10)
        for path in images:
            with Image.open(path) as im:
                assert im.format == "PNG" and im.mode == "RGB" and im.size == (160, 120)
        boxes += sum(len(read_yolo_labels(p, len(WINDING_CLASSES))) for p in labels)
    assert sum(summary["boxes"].values()) == boxes
    assert sorted(p.name for p in root.parent.iterdir()) == ["ds", "plots"]  # no temp siblings


def test_split_by_video(dataset: tuple[Path, dict, Path]) -> None:
    root, _, _ = dataset
    seen: dict[str, str] = {}
    for split in SPLITS:
        videos = {p.stem for p in (root / "videos" / split).glob("*.mp4")}
        for image in (root / split / "images").glob("*.png"):
            video = image.stem.rsplit("_", 1)[0]
            assert video in videos, f"{image} comes from a video of another split"
            assert seen.setdefault(video, split) == split


def test_images_are_frames_decoded_from_the_video(dataset: tuple[Path, dict, Path]) -> None:
    root, _, _ = dataset
    video = root / "videos" / "valid" / "w002.mp4"
    for index, frame in iter_frames(video, every_k=3):
        png = cv2.cvtColor(
            cv2.imread(str(root / "valid" / "images" / f"w002_{index:05d}.png")), cv2.COLOR_BGR2RGB
        )
        assert np.array_equal(png, frame)


def test_detection_data_reads_it_in_colour(dataset: tuple[Path, dict, Path]) -> None:
    root, summary, _ = dataset
    samples = scan_split(root, "train", num_classes=len(WINDING_CLASSES), channels=3)
    assert len(samples) == summary["frames"]["train"]


def test_preview_gif(dataset: tuple[Path, dict, Path]) -> None:
    _, summary, gif = dataset
    assert summary["preview_gif"] == str(gif)
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames == 12 and im.size == (160, 120)
    assert [p.name for p in gif.parent.iterdir()] == ["winding.gif"]


def test_deterministic_bytes(tmp_path: Path) -> None:
    kwargs = {"n_train": 1, "n_valid": 1, "n_test": 0, **TINY}
    generate_winding_dataset(tmp_path / "a", seed=5, **kwargs)
    generate_winding_dataset(tmp_path / "b", seed=5, **kwargs)
    generate_winding_dataset(tmp_path / "c", seed=6, **kwargs)
    a, b, c = (_files(tmp_path / name) for name in "abc")
    assert a == b  # PNG frames, labels and the mp4 files themselves
    assert a.keys() == c.keys() and a != c


def test_every_class_appears_and_boxes_are_valid(tmp_path: Path) -> None:
    summary = generate_winding_dataset(
        tmp_path / "ds", n_train=8, n_valid=0, n_test=0, defect_free_fraction=0.0, seed=1, **TINY
    )
    assert all(count > 0 for count in summary["boxes"].values()), summary["boxes"]
    for label in (tmp_path / "ds").glob("train/labels/*.txt"):
        for b in read_yolo_labels(label, len(WINDING_CLASSES)):  # strict: raises on bad lines
            assert b.w > 0 and b.h > 0
            assert b.cx - b.w / 2 >= -1e-6 and b.cx + b.w / 2 <= 1 + 1e-6
            assert b.cy - b.h / 2 >= -1e-6 and b.cy + b.h / 2 <= 1 + 1e-6


def test_defect_free_videos_have_empty_labels(tmp_path: Path) -> None:
    summary = generate_winding_dataset(
        tmp_path / "ds", n_train=2, n_valid=1, n_test=0, defect_free_fraction=1.0, **TINY
    )
    assert summary["defect_free"] == 3 and sum(summary["boxes"].values()) == 0
    labels = list((tmp_path / "ds").glob("*/labels/*.txt"))
    assert len(labels) == 12 and all(p.stat().st_size == 0 for p in labels)


def test_class_subset_and_weights(tmp_path: Path) -> None:
    summary = generate_winding_dataset(
        tmp_path / "ds",
        n_train=3,
        n_valid=0,
        n_test=0,
        class_names=["loose_loop", "bulge"],
        class_weights=[0, 1],
        defect_free_fraction=0.0,
        **TINY,
    )
    assert summary["boxes"]["bulge"] > 0 and summary["boxes"]["loose_loop"] == 0
    ids = {
        b.class_id for p in (tmp_path / "ds").glob("*/labels/*.txt") for b in read_yolo_labels(p)
    }
    assert ids == {1}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"class_names": ["gap", "dent"]},
        {"class_names": ["gap", "gap"]},
        {"class_weights": [1, 1]},
        {"defect_free_fraction": 2.0},
        {"max_defects": 0},
        {"n_train": -1},
        {"width": 100},
        {"frames_per_video": 0},
        {"every_k": 0},
        {"fps": 0},
    ],
)
def test_invalid_arguments_raise_before_writing(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError) as caught:
        generate_winding_dataset(tmp_path / "ds", **{**TINY, "n_train": 1, **kwargs})
    if "dent" in str(kwargs):
        assert "dent" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_crash_leaves_no_partial_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = winding_module.render_winding_video

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(winding_module, "render_winding_video", flaky)
    with pytest.raises(RuntimeError, match="boom"):
        generate_winding_dataset(
            tmp_path / "ds", n_train=2, n_valid=1, n_test=1, preview_gif=tmp_path / "p.gif", **TINY
        )
    assert list(tmp_path.iterdir()) == []
