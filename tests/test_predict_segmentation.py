"""`defects predict` on a segmentation bundle: index masks, overlays, summary and Severstal CSV.

The bundle is built without training: the segmentation head's weight is zeroed and its bias set,
so the masks are known in advance (whole image or nothing) and the test checks real behaviour.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from defects.bundle import save_bundle
from defects.cli import predict
from defects.data.images import read_image
from defects.formats.mask_folder import read_index_mask
from defects.formats.severstal import read_severstal_csv, rle_decode
from defects.kinds.gated.net import Segmenter
from defects.plots import overlay_masks
from tests.conftest import torch_threads

CLASS_NAMES = ["pits", "inclusion", "scratches", "patches"]
H, W = 64, 320
SMALL_H = 32  # H x W = 20480 pixels pass MIN_AREA, SMALL_H x W = 10240 do not
MIN_AREA = 15000
KWARGS = {
    "num_classes": 4,
    "design": "separate",
    "arch": "unet",
    "encoder": "timm-efficientnet-b0",
    "decoder_channels": [16, 16, 16, 16, 16],
    "gate_encoder": "timm-efficientnet-b0",
    "gate_scale": 0.5,
    "in_channels": 1,
}


def make_segmentation_bundle(path: Path, gate: float = 0.0) -> Path:
    """A steel bundle whose masks are all of pits and scratches, nothing of the other classes.

    Classes 1 and 3 overlap everywhere, so index masks show which class wins; an image smaller
    than MIN_AREA pixels is defect-free because both full masks are below the minimum area.
    """
    torch.manual_seed(0)
    net = Segmenter(**KWARGS)
    head = net.model.segmentation_head[0]
    head.weight.data.zero_()
    head.bias.data[:] = torch.tensor([10.0, -10.0, 10.0, -10.0])
    return save_bundle(
        path,
        task="steel",
        model={"kind": "segmenter", "kwargs": KWARGS},
        state_dict=net.state_dict(),
        class_names=CLASS_NAMES,
        thresholds={"gate": gate, "pixel": [0.5] * 4, "min_area": [MIN_AREA] * 4},
        input={"channels": 1, "resize": None},
    )


def write_grey(path: Path, height: int, width: int, seed: int) -> Path:
    image = np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)
    assert cv2.imwrite(str(path), image)
    return path


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny images: extra threads only add sync overhead, and much more on a busy machine."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_segmentation_bundle(tmp_path_factory.mktemp("bundle") / "bundle.pt")


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    write_grey(folder / "a.png", H, W, 1)
    write_grey(folder / "b.png", H, W, 2)
    write_grey(folder / "c_small.png", SMALL_H, W, 3)
    return folder


def test_predict_writes_masks_overlays_summary_and_submission(
    bundle: Path, images: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    report = Path(predict(str(bundle), str(images), str(out)))
    assert report == out / "submission.csv"

    for stem, height in (("a", H), ("b", H), ("c_small", SMALL_H)):
        mask = read_index_mask(out / "masks" / f"{stem}.png", 4, shape=(height, W))
        # pits (1) and scratches (3) both cover a/b: the higher class id wins
        assert np.all(mask == (3 if height == H else 0)), stem
        masks = np.zeros((4, height, W), dtype=bool)
        masks[[0, 2]] = height == H
        expected = overlay_masks(read_image(images / f"{stem}.png"), masks)
        # the file holds RGB as RGB: a BGR mix-up would swap pits' red and scratches' blue
        overlay = np.asarray(Image.open(out / "overlays" / f"{stem}.png"))
        np.testing.assert_array_equal(overlay, expected)
        # ...a check that can fail: tinted overlays are not symmetric in R and B, grey ones are
        assert np.array_equal(expected[..., 0], expected[..., 2]) == (height != H)

    table = read_severstal_csv(report, 4, shape=(H, W))
    assert set(table) == {"a.png", "b.png", "c_small.png"}
    full = np.ones((H, W), dtype=bool)
    for name in ("a.png", "b.png"):
        assert set(table[name]) == {1, 3}
        for rle in table[name].values():
            np.testing.assert_array_equal(rle_decode(rle, (H, W)), full)
    assert table["c_small.png"] == {}
    rows = report.read_text().splitlines()
    assert rows[0] == "ImageId,ClassId,EncodedPixels"
    assert [r for r in rows if r.startswith("c_small.png")] == ["c_small.png,1,"]

    summary = json.loads((out / "summary.json").read_text())
    assert summary["a.png"]["areas"] == {
        "pits": H * W,
        "inclusion": 0,
        "scratches": H * W,
        "patches": 0,
    }
    assert summary["c_small.png"]["areas"] == dict.fromkeys(CLASS_NAMES, 0)
    assert all(0.0 <= v["gate"] <= 1.0 for v in summary.values())


def test_gate_threshold_override_empties_everything(
    bundle: Path, images: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    report = predict(str(bundle), str(images), str(out), threshold=1.01, overlays=False)
    assert read_severstal_csv(report, 4, shape=(H, W)) == {
        "a.png": {},
        "b.png": {},
        "c_small.png": {},
    }
    for stem, height in (("a", H), ("b", H), ("c_small", SMALL_H)):
        assert not read_index_mask(out / "masks" / f"{stem}.png", 4, shape=(height, W)).any()
    assert not (out / "overlays").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert all(not any(v["areas"].values()) for v in summary.values())
