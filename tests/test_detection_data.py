"""The detection DataModule: channels, targets, augmentation config and determinism."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from defects.data.detection import DetectionDataModule

CLASSES = ["porosity", "crack", "lack_of_fusion", "slag_inclusion"]
AUGMENT = [
    {"_target_": "albumentations.HorizontalFlip", "p": 0.5},
    {"_target_": "albumentations.RandomBrightnessContrast", "p": 0.5},
]


def first_batch(root: Path, **kwargs) -> tuple[list[torch.Tensor], list[dict]]:
    dm = DetectionDataModule(str(root), CLASSES, batch_size=4, **kwargs)
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


def test_grayscale_targets_are_detection_targets(weld_root: Path) -> None:
    images, targets = first_batch(weld_root, augment=None, seed=0)
    assert all(img.shape[0] == 1 and img.dtype == torch.float32 for img in images)
    assert all(float(img.min()) >= 0.0 and float(img.max()) <= 1.0 for img in images)
    for image, target in zip(images, targets, strict=True):
        boxes = target["boxes"]
        assert boxes.shape[1] == 4 and len(boxes) == len(target["labels"])
        assert bool((target["labels"] >= 1).all() and (target["labels"] <= len(CLASSES)).all())
        assert bool((boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 2] <= image.shape[2]).all())


def test_rgb_images_give_three_channels(weld_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "rgb"
    shutil.copytree(weld_root, root)
    for path in (root / "train" / "images").glob("*.png"):
        Image.open(path).convert("RGB").save(path)
    images, _ = first_batch(root, channels=3, augment=None, seed=0)
    assert all(img.shape[0] == 3 for img in images)
    grey, _ = first_batch(root, channels=1, augment=None, seed=0)
    assert grey[0].shape[1:] == images[0].shape[1:]


def test_augmentation_is_deterministic_with_a_seed(weld_root: Path) -> None:
    a_images, a_targets = first_batch(weld_root, augment=AUGMENT, seed=7)
    b_images, b_targets = first_batch(weld_root, augment=AUGMENT, seed=7)
    for a, b in zip(a_images, b_images, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(a_targets, b_targets, strict=True):
        assert torch.equal(a["boxes"], b["boxes"])


def test_flip_moves_boxes_with_pixels(weld_root: Path) -> None:
    flip = [{"_target_": "albumentations.HorizontalFlip", "p": 1.0}]
    plain_images, plain_targets = first_batch(weld_root, augment=None, seed=0)
    flip_images, flip_targets = first_batch(weld_root, augment=flip, seed=0)
    width = plain_images[0].shape[2]
    for plain, flipped in zip(plain_images, flip_images, strict=True):
        assert torch.equal(plain.flip(-1), flipped)
    for plain, flipped in zip(plain_targets, flip_targets, strict=True):
        expected = plain["boxes"][:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) + torch.tensor(
            [width, 0, width, 0]
        )
        np.testing.assert_allclose(flipped["boxes"].numpy(), expected.numpy(), atol=1e-3)


def test_canvas_mosaic_zoomed_out_shows_all_four_images_with_their_boxes() -> None:
    """A 2x2 mosaic on the 2x canvas, then scale 0.5 and the centre crop: the four images' central
    boxes all land in the crop, one per quadrant, each with its own label (cropping before
    the affine step would show one quarter of the canvas shrunk inside a grey border)."""
    import albumentations as A

    from defects.data.transforms import build_transform, canvas_mosaic

    size = 64

    def item(label: int) -> dict:
        image = np.full((size, size, 3), 40 * (label + 1), np.uint8)
        return {"image": image, "bboxes": np.array([[24.0, 24.0, 40.0, 40.0]]), "labels": [label]}

    transform = build_transform(
        [
            canvas_mosaic(size, grid=2),
            A.Affine(scale=0.5, fill=114, p=1.0),
            A.CenterCrop(size, size),
        ],
        bbox=True,
        seed=0,
        min_visibility=0.1,
    )
    first = item(0)
    out = transform(
        image=first["image"],
        bboxes=first["bboxes"],
        labels=first["labels"],
        mosaic_metadata=[item(k) for k in (1, 2, 3)],
    )
    assert out["image"].shape == (size, size, 3)
    boxes = np.asarray(out["bboxes"]).reshape(-1, 4)
    assert sorted(out["labels"]) == [0, 1, 2, 3]
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    quadrants = {(int(x >= size / 2), int(y >= size / 2)) for x, y in centres}
    assert quadrants == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert np.allclose(boxes[:, 2:] - boxes[:, :2], 8.0, atol=0.5)  # 16 px boxes at scale 0.5


def test_canvas_mosaic_junction_lands_anywhere_in_the_centre_view() -> None:
    """The default 3x3 grid: the centre view at scale 1 shows four images meeting at one
    point, uniformly placed over the view (Ultralytics' mosaic centre rule), and each box
    keeps its own image's label; grid=2 always meets at the centre."""
    import albumentations as A

    from defects.data.transforms import build_transform, canvas_mosaic

    size = 64

    def item(label: int) -> dict:
        image = np.full((size, size, 3), 20 * (label + 1), np.uint8)
        return {"image": image, "bboxes": np.array([[8.0, 8.0, 56.0, 56.0]]), "labels": [label]}

    def junctions(grid: int, draws: int) -> list[tuple[int, int]]:
        transform = build_transform(
            [canvas_mosaic(size, grid=grid), A.CenterCrop(size, size)],
            bbox=True,
            seed=0,
            min_visibility=0.0,
        )
        found = []
        for _ in range(draws):
            first = item(0)
            out = transform(
                image=first["image"],
                bboxes=first["bboxes"],
                labels=first["labels"],
                mosaic_metadata=[item(k) for k in range(1, grid * grid)],
            )
            view = out["image"][..., 0].astype(int)
            assert len(np.unique(view)) <= 4  # one junction of at most four images
            cols = np.flatnonzero(np.diff(view[size // 2]) != 0)
            rows = np.flatnonzero(np.diff(view[:, size // 2]) != 0)
            x = int(cols[0]) + 1 if len(cols) else 0
            y = int(rows[0]) + 1 if len(rows) else 0
            found.append((x, y))
            for box, label in zip(out["bboxes"], out["labels"], strict=True):
                x1, y1, x2, y2 = (int(round(v)) for v in box)
                assert np.all(view[y1:y2, x1:x2] == 20 * (label + 1))
        return found

    spread = np.array(junctions(3, 40))
    assert spread.min(0).max() < size / 4 and spread.max(0).min() > 3 * size / 4
    assert set(junctions(2, 5)) == {(size // 2, size // 2)}
    with pytest.raises(ValueError, match="grid must be 2 or 3"):
        canvas_mosaic(size, grid=4)

    # 4:3 frames in cells of their own aspect meet edge to edge: no fill in the centre view;
    # in square cells the letterbox bands show (fill 114).
    def grey_share(aspect: float | None) -> float:
        transform = build_transform(
            [canvas_mosaic(size, aspect=aspect), A.CenterCrop(size, size)], bbox=False, seed=1
        )
        frames = [np.full((48, size, 3), 20 * (k + 1), np.uint8) for k in range(9)]
        shares = []
        for _ in range(10):
            meta = [{"image": f} for f in frames[1:]]
            view = transform(image=frames[0], mosaic_metadata=meta)["image"]
            shares.append(float(np.mean(view[..., 0] == 114)))
        return float(np.mean(shares))

    assert grey_share(0.75) == 0.0 and grey_share(None) > 0.1


def test_box_filter_keeps_or_drops_boxes_a_crop_cuts() -> None:
    """A crop leaving 20 % of a box: dropped at min_visibility 0.3, kept at 0.1; a sliver
    under min_box_px is dropped whatever its share."""
    import albumentations as A

    from defects.data.transforms import build_transform

    image = np.zeros((100, 100), np.uint8)
    crop = [A.Crop(x_min=0, y_min=0, x_max=52, y_max=100)]
    box = np.array([[48.0, 10.0, 68.0, 30.0]])  # 4 of its 20 px width survive: 20 %
    kept = {
        (vis, px): len(
            build_transform(crop, bbox=True, min_visibility=vis, min_box_px=px)(
                image=image, bboxes=box, labels=[0]
            )["bboxes"]
        )
        for vis, px in [(0.3, 0), (0.1, 0), (0.1, 5)]
    }
    assert kept == {(0.3, 0): 0, (0.1, 0): 1, (0.1, 5): 0}
