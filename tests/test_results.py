"""Results answer for themselves: the stream, `serve --confidence` and prelabel call these
methods on any result and never ask which kind it is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from defects.prelabel import prelabel
from defects.results import Detections, SegmentationResult
from tests.test_predict_segmentation import SMALL_H, H, W, write_grey

NAMES = ["gap", "bulge"]


def detections() -> Detections:
    return Detections(
        np.array([[0, 0, 4, 4], [5, 5, 9, 9], [1, 1, 2, 2]], np.float32),
        ["gap", "bulge", "gap"],
        np.array([0, 1, 0]),
        np.array([0.9, 0.6, 0.3]),
        NAMES,
    )


def two_regions() -> SegmentationResult:
    """Class 0 in two separate blobs, class 1 in one, gate 0.8 (threshold 0.5)."""
    masks = np.zeros((2, 20, 30), bool)
    masks[0, 2:5, 3:7] = True  # x 3..6, y 2..4
    masks[0, 10:12, 20:29] = True  # x 20..28, y 10..11
    masks[1, 15:20, 0:2] = True
    return SegmentationResult(masks, 0.8, NAMES, 0.5)


def test_detections_cut_count_and_are_their_own_boxes() -> None:
    found = detections()
    assert found.above(0.5).scores.tolist() == [0.9, 0.6]
    assert found.counts() == {"gap": 2, "bulge": 1}
    assert found.above(0.7).counts() == {"gap": 1}
    assert found.as_boxes() is found
    assert len(Detections.empty(NAMES)) == 0 and Detections.empty(NAMES).counts() == {}


def test_segmentation_cut_is_the_gate() -> None:
    result = two_regions()
    kept = result.above(0.75)
    assert kept.masks is result.masks and kept.gate_threshold == 0.75
    dropped = result.above(0.85)
    assert not dropped.masks.any() and dropped.masks.shape == result.masks.shape
    assert dropped.counts() == {} and dropped.gate_threshold == 0.85
    assert result.above(0.1).gate_threshold == 0.5  # a looser cut adds nothing back


def test_segmentation_counts_classes_and_boxes_its_regions() -> None:
    result = two_regions()
    assert result.counts() == {"gap": 1, "bulge": 1}
    boxes = result.as_boxes()
    assert boxes.class_ids.tolist() == [0, 0, 1]
    assert boxes.labels == ["gap", "gap", "bulge"]
    assert boxes.boxes.tolist() == [[3, 2, 7, 5], [20, 10, 29, 12], [0, 15, 2, 20]]
    assert boxes.scores.tolist() == [0.8, 0.8, 0.8]
    assert len(result.above(0.9).as_boxes()) == 0


def test_index_mask_paints_higher_ids_over_lower() -> None:
    masks = np.zeros((3, 4, 4), bool)
    masks[0, :2] = True
    masks[2, 1:3] = True
    index = SegmentationResult(masks, 1.0, ["a", "b", "c"]).index_mask()
    assert index[:, 0].tolist() == [1, 3, 3, 0]
    with pytest.raises(ValueError, match="256 classes do not fit"):
        SegmentationResult(np.zeros((256, 1, 1), bool), 1.0, ["x"] * 256).index_mask()


def test_a_segmentation_bundle_prelabels_its_regions_as_boxes(
    tmp_path: Path, one_thread: None
) -> None:
    """The test bundle paints pits and scratches over every full-size strip; a strip under
    the minimum area is defect-free. Its pre-labels are one box per class over the strip."""
    from tests.test_predict_segmentation import make_segmentation_bundle

    bundle = make_segmentation_bundle(tmp_path / "bundle.pt")
    frames = tmp_path / "frames"
    frames.mkdir()
    write_grey(frames / "a.png", H, W, 1)
    write_grey(frames / "small.png", SMALL_H, W, 2)
    summary = prelabel(bundle, frames, tmp_path / "out", confidence=0.0)
    assert summary["images"] == 2 and summary["boxes"] == 2
    lines = (tmp_path / "out" / "labels" / "a.txt").read_text().split()
    assert [lines[0], lines[5]] == ["0", "2"]  # pits and scratches, whole strip each
    assert [float(v) for v in lines[1:5]] == [0.5, 0.5, 1.0, 1.0]
    assert (tmp_path / "out" / "labels" / "small.txt").read_text() == ""
    assert "pits" in (tmp_path / "out" / "data.yaml").read_text()
