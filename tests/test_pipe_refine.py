"""Boxes -> coarse masks, refinement inside boxes (baseline maps, GrabCut), per-class IoU."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from defects.data.images import read_image
from defects.data.synthetic import PIPE_CLASSES, generate_pipe_dataset
from defects.formats.errors import FormatError
from defects.formats.mask_folder import read_index_mask
from defects.formats.yolo import YoloBox, read_yolo_labels
from defects.pipe.coarse import box_pixels, coarse_mask, coarse_masks, paint_order
from defects.pipe.refine import (
    crop_image,
    crop_window,
    grabcut_mask,
    mask_iou_per_class,
    refine_boxes,
    refine_mask,
    uncrop,
)

W, H = 64, 48


def pbox(class_id: int, x1: float, y1: float, x2: float, y2: float) -> YoloBox:
    return YoloBox.from_xyxy(class_id, x1, y1, x2, y2, W, H)


# --------------------------------------------------------------------------- coarse


def test_box_pixels_cover_exactly_the_integer_rectangle() -> None:
    assert box_pixels(pbox(0, 10, 5, 20, 9), W, H) == (10, 5, 20, 9)
    # 6-decimal label rounding must not add or lose a pixel row/column.
    line = pbox(0, 10, 5, 20, 9).to_line().split()
    rounded = YoloBox(0, *(float(v) for v in line[1:]))
    assert box_pixels(rounded, W, H) == (10, 5, 20, 9)
    assert box_pixels(pbox(0, 10.4, 5, 19.6, 9), W, H) == (10, 5, 20, 9)  # centres inside


def test_coarse_overlap_smaller_box_on_top_ties_by_class_id() -> None:
    big, small = pbox(2, 0, 0, 40, 40), pbox(0, 10, 10, 20, 20)
    for boxes in ([big, small], [small, big]):  # file order does not matter
        mask = coarse_mask(boxes, W, H)
        assert mask[15, 15] == 1 and mask[5, 5] == 3 and mask[45, 60] == 0
    tie_a, tie_b = pbox(3, 30, 0, 50, 10), pbox(1, 40, 0, 60, 10)  # same area, overlap 40..50
    for boxes in ([tie_a, tie_b], [tie_b, tie_a]):
        mask = coarse_mask(boxes, W, H)
        assert mask[5, 45] == 2  # the lower class id is on top
        assert mask[5, 35] == 4 and mask[5, 55] == 2
    assert paint_order([small, big], W, H) == [1, 0]


def test_coarse_masks_writes_folders_or_nothing(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    generate_pipe_dataset(
        root, n_train=2, n_valid=1, n_test=0, width=128, height=128,
        n_duplicates=0, n_false_boxes=0, fine_per_class=0,
    )  # fmt: skip
    counts = coarse_masks(root)
    assert counts == {"train": 2, "valid": 1, "test": 0}
    for label in root.glob("*/labels/*.txt"):
        split = label.parent.parent
        mask = read_index_mask(split / "coarse_masks" / f"{label.stem}.png", len(PIPE_CLASSES))
        assert np.array_equal(mask, coarse_mask(read_yolo_labels(label), 128, 128))
        true = read_index_mask(split / "true_masks" / f"{label.stem}.png", len(PIPE_CLASSES))
        assert np.all(mask[true > 0] == true[true > 0])  # boxes contain their components
    # A bad line anywhere: FormatError with file and line, and no output at all.
    (root / "valid" / "labels" / "00000.txt").write_text("0 0.5 0.5 0.1 0.1\n0 0.5 0.5 0 0.1\n")
    with pytest.raises(FormatError, match=r"valid/labels/00000.txt:2: w must be > 0"):
        coarse_masks(root, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- refine


def test_refine_replaces_each_box_by_its_prediction_inside_the_box() -> None:
    boxes = [pbox(0, 0, 0, 30, 30), pbox(1, 10, 10, 20, 20), pbox(2, 40, 10, 60, 40)]
    maps = {c: np.zeros((H, W), np.float32) for c in range(3)}
    maps[0][:, :] = 0.9  # class 0 sees everything, everywhere: clipped to its box
    maps[1][12:16, 12:16] = 0.8  # class 1 sees a 4x4 spot inside its small box
    maps[2][0:2, 0:2] = 0.9  # class 2 only sees something outside its box: fallback
    mask = refine_mask(boxes, maps, threshold=0.5, min_fraction=0.05)
    assert np.all(mask[:30, :30][(mask[:30, :30] != 2)] == 1)
    assert (mask == 2).sum() == 16 and np.all(mask[12:16, 12:16] == 2)
    assert mask[18, 18] == 1  # the small box only claims what its baseline predicted
    assert np.all(mask[10:40, 40:60] == 3)  # nothing predicted inside: the full box
    outside = np.ones((H, W), bool)
    for b in boxes:
        x1, y1, x2, y2 = box_pixels(b, W, H)
        outside[y1:y2, x1:x2] = False
    assert not mask[outside].any()  # never grows outside the boxes


def test_refine_min_fraction_and_missing_baseline() -> None:
    b = [pbox(0, 0, 0, 20, 20), pbox(1, 30, 0, 50, 20)]
    maps = np.zeros((1, H, W), np.float32)
    maps[0, 0:2, 0:10] = 1.0  # 20 px of a 400 px box = 5 %
    assert (refine_mask(b, maps, min_fraction=0.04)[:20, :20] == 1).sum() == 20
    assert (refine_mask(b, maps, min_fraction=0.1)[:20, :20] == 1).sum() == 400
    assert np.all(refine_mask(b, maps)[0:20, 30:50] == 2)  # class 1 has no baseline: box kept
    with pytest.raises(ValueError, match="one size"):
        refine_mask(b, {0: np.zeros((H, W)), 1: np.zeros((H, W + 1))})


def test_crop_window_grows_the_box_and_stays_in_the_image() -> None:
    assert crop_window((10, 10, 30, 20), W, H, 0.25) == (5, 8, 35, 22)
    assert crop_window((0, 0, 4, 4), W, H, 0.25) == (0, 0, 6, 6)  # at least 2 px, clipped
    assert crop_window((50, 40, 64, 48), W, H, 1.0) == (36, 32, 64, 48)


def test_crop_and_uncrop_bring_a_map_back_into_its_box() -> None:
    """What a baseline predicts on a crop lands where the crop came from: a map equal to
    the crop of a known mask, scaled back, reproduces that mask inside the box."""
    truth = np.zeros((H, W), np.uint8)
    truth[14:22, 20:36] = 1
    rect = (16, 12, 40, 26)
    window = crop_window(rect, W, H, 0.25)
    crop = crop_image(truth, window, 32, nearest=True)
    assert crop.shape == (32, 32) and set(np.unique(crop)) == {0, 1}
    back = uncrop(crop.astype(np.float32), window, rect) > 0.5
    x1, y1, x2, y2 = rect
    assert back.shape == (y2 - y1, x2 - x1)
    assert np.mean(back == truth[y1:y2, x1:x2].astype(bool)) > 0.95
    rgb = crop_image(np.dstack([truth * 255] * 3), window, 16)
    assert rgb.shape == (16, 16, 3) and rgb.dtype == np.uint8
    with pytest.raises(ValueError, match="empty crop"):
        crop_image(truth, (5, 5, 5, 9), 16)


def test_refine_boxes_takes_each_box_its_own_map() -> None:
    """Two boxes of one class, each with its own box-sized map; a missing map keeps the box."""
    boxes = [pbox(0, 0, 0, 10, 10), pbox(0, 20, 0, 30, 10), pbox(1, 40, 0, 50, 10)]
    first = np.zeros((10, 10), np.float32)
    first[:5] = 0.9
    second = np.zeros((10, 10), np.float32)
    second[:, :2] = 0.9
    mask, fallbacks = refine_boxes(boxes, [first, second, None], H, W, 0.5, 0.05)
    assert fallbacks == 1
    assert (mask[:10, :10] == 1).sum() == 50 and (mask[:10, 20:30] == 1).sum() == 20
    assert np.all(mask[:10, 40:50] == 2) and (mask > 0).sum() == 170
    with pytest.raises(ValueError, match="probability maps"):
        refine_boxes(boxes, [first], H, W)
    with pytest.raises(ValueError, match="box probability"):
        refine_boxes(boxes[:1], [np.zeros((3, 3))], H, W)


def test_grabcut_finds_a_disc_in_its_box_and_falls_back() -> None:
    image = np.full((H, W, 3), 60, np.uint8)
    cv2.circle(image, (20, 24), 9, (200, 180, 90), -1)
    rng = np.random.default_rng(0)
    image = np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)
    disc = np.zeros((H, W), np.uint8)
    cv2.circle(disc, (20, 24), 9, 1, -1)
    boxes = [pbox(0, 8, 12, 33, 37)]
    mask = grabcut_mask(image, boxes)
    assert mask_iou_per_class([mask], [disc], 1)[0] > 0.85
    assert not mask[:, 33:].any() and not mask[:12].any()  # clipped to the box
    assert np.array_equal(grabcut_mask(image, boxes), mask)  # reproducible
    flat = np.full((H, W), 90, np.uint8)  # nothing to find: the full box
    assert (grabcut_mask(flat, boxes) == 1).sum() == 25 * 25
    whole = [pbox(1, 0, 0, W, H)]  # no background to learn from: the full box
    assert np.all(grabcut_mask(image, whole) == 2)


# --------------------------------------------------------------------------- IoU


def test_mask_iou_per_class_matches_torchmetrics() -> None:
    rng = np.random.default_rng(4)
    preds = [rng.integers(0, 4, (20, 30)).astype(np.uint8) for _ in range(3)]
    trues = [np.where(rng.random((20, 30)) < 0.7, p, rng.integers(0, 4, (20, 30))) for p in preds]
    ours = mask_iou_per_class(preds, trues, 3)
    metric = MulticlassJaccardIndex(num_classes=4, average="none")
    for p, t in zip(preds, trues, strict=True):
        metric.update(torch.from_numpy(p.astype(np.int64)), torch.from_numpy(t.astype(np.int64)))
    assert np.allclose(ours, metric.compute().numpy()[1:], atol=1e-6)
    # Pooled, not averaged per image; a class absent on both sides is NaN.
    a, b = np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8)
    a[0, :2], b[0, :1] = 1, 1
    iou = mask_iou_per_class([a, b], [a, a], 2)
    assert iou[0] == pytest.approx(3 / 4) and np.isnan(iou[1])
    with pytest.raises(ValueError):
        mask_iou_per_class([a], [a, a], 2)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("refine") / "ds"
    generate_pipe_dataset(
        root, n_train=36, n_valid=0, n_test=0, width=192, height=192, rare_fraction=0.0,
        n_duplicates=0, n_false_boxes=0, fine_per_class=0, seed=0,
    )  # fmt: skip
    return root


def test_refined_masks_beat_box_filled_masks(synthetic: Path) -> None:
    """GrabCut and an oracle refinement (baseline maps = true masks, blurred) vs box-filled.

    The oracle must win for every class by a wide margin: refinement has a lot to gain over
    boxes. GrabCut, a model-free baseline, wins on average and for the classes with crisp
    outlines (disconnection, deposits); for bulges and shaded stones it is close to boxes and
    can lose by a little on some samples, so those are held to "no worse than 0.03 below".
    """
    names = list(PIPE_CLASSES)
    boxed, grabcut, oracle, truth = [], [], [], []
    for path in sorted((synthetic / "train" / "images").glob("*.png")):
        true = read_index_mask(synthetic / "train" / "true_masks" / path.name, len(names))
        boxes = read_yolo_labels(synthetic / "train" / "labels" / f"{path.stem}.txt")
        h, w = true.shape
        maps = {
            c: cv2.GaussianBlur((true == c + 1).astype(np.float32), (0, 0), 1.0)
            for c in range(len(names))
        }
        boxed.append(coarse_mask(boxes, w, h))
        grabcut.append(grabcut_mask(read_image(path, 3), boxes))
        oracle.append(refine_mask(boxes, maps, threshold=0.5, min_fraction=0.02))
        truth.append(true)
    iou = {
        name: mask_iou_per_class(masks, truth, len(names))[:4]
        for name, masks in (("box", boxed), ("grabcut", grabcut), ("oracle", oracle))
    }
    assert not np.isnan(iou["box"]).any()  # all four common classes are present
    assert np.all(iou["oracle"] > iou["box"] + 0.15)
    assert iou["grabcut"].mean() > iou["box"].mean() + 0.02
    assert np.all(iou["grabcut"] > iou["box"] - 0.03)
    for name in ("disconnection", "deposits"):
        k = names.index(name)
        assert iou["grabcut"][k] > iou["box"][k]


def test_exclusive_probabilities_keep_each_pixels_top_class() -> None:
    from defects.kinds.gated.predictor import exclusive_probabilities

    probs = torch.tensor([[[[0.9, 0.2]], [[0.8, 0.6]], [[0.1, 0.6]]]])  # [1, 3, 1, 2]
    out = exclusive_probabilities(probs)
    assert out[0, :, 0, 0].tolist() == pytest.approx([0.9, 0.0, 0.0])
    assert out[0, :, 0, 1].tolist() == pytest.approx([0.0, 0.6, 0.0])  # a tie: the lower id
    one = torch.rand(2, 1, 4, 4)
    assert torch.equal(exclusive_probabilities(one), one)
