"""Segmentation data: both layouts, crops that find defects, balanced sampling, clear errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from defects.data.segmentation import (
    SegmentationDataModule,
    balanced_weights,
    collate_same_size,
    scan_segmentation_split,
)
from defects.formats.errors import FormatError
from defects.formats.mask_folder import write_index_mask

CLASSES = ["pits", "inclusion", "scratches", "patches"]


def masks_dataset(root: Path, sizes: list[tuple[int, int]]) -> Path:
    """A `masks`-layout dataset: image k has class (k % 3) as a square, class 0 = defect-free."""
    for split in ("train", "valid", "test"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir()
        for k, (h, w) in enumerate(sizes):
            image = np.full((h, w), 100, np.uint8)
            cls = k % 3
            if cls:
                image[4:12, 4:12] = 200
                mask = np.zeros((h, w), np.uint8)
                mask[4:12, 4:12] = cls
                write_index_mask(root / split / "masks" / f"im{k}.png", mask)
            cv2.imwrite(str(root / split / "images" / f"im{k}.jpg"), image)
    return root


def test_masks_layout_with_resize(tmp_path: Path) -> None:
    root = masks_dataset(tmp_path / "d", [(40, 60), (50, 50), (33, 70)])
    dm = SegmentationDataModule(
        str(root),
        CLASSES[:2],
        layout="masks",
        resize=[32, 64],
        crop=None,
        num_workers=0,
        eval_batch_size=3,
    )
    images, masks = next(iter(dm.val_dataloader()))
    assert images.shape == (3, 1, 32, 64) and masks.shape == (3, 2, 32, 64)
    assert masks[0].sum() == 0  # im0 defect-free
    assert masks[1, 0].sum() > 0 and masks[1, 1].sum() == 0
    assert masks[2, 1].sum() > 0 and masks[2, 0].sum() == 0
    assert set(torch.unique(masks).tolist()) <= {0.0, 1.0}


def test_mixed_sizes_without_resize_name_the_fix(tmp_path: Path) -> None:
    root = masks_dataset(tmp_path / "d", [(40, 60), (50, 50)])
    dm = SegmentationDataModule(str(root), CLASSES[:2], layout="masks", num_workers=0)
    with pytest.raises(ValueError, match="data.resize"):
        next(iter(dm.val_dataloader()))


def test_defect_biased_crops_find_the_defect(steel_root: Path) -> None:
    dm = SegmentationDataModule(
        str(steel_root),
        CLASSES,
        shape=[64, 320],
        crop=[64, 64],
        crop_defect_bias=1.0,
        num_workers=0,
        augment=[],
    )
    dataset = dm.dataset("train")
    defective = [i for i, s in enumerate(dataset.samples) if s.rles]
    assert defective
    for i in defective:
        image, masks = dataset[i]
        assert image.shape == (1, 64, 64) and masks.shape == (4, 64, 64)
        assert masks.sum() > 0


def test_balanced_weights_favour_rare_classes() -> None:
    labels = [set(), set(), set(), {3}, {3}, {2}, {2, 3}]
    weights = balanced_weights(labels)
    assert weights[0] == pytest.approx(1 / 3)
    assert weights[3] == pytest.approx(1 / 3)
    assert weights[5] == pytest.approx(1 / 2) and weights[6] == pytest.approx(1 / 2)


def test_clean_share_gives_defect_free_images_that_share_of_the_draws() -> None:
    labels = [set(), set(), set(), {3}, {3}, {2}, {2, 3}]
    weights = balanced_weights(labels, clean_share=0.5)
    assert sum(weights[:3]) == pytest.approx(0.5) and sum(weights[3:]) == pytest.approx(0.5)
    plain = balanced_weights(labels)  # among the defective ones, the same class balance
    assert weights[5] / weights[3] == pytest.approx(plain[5] / plain[3])
    assert balanced_weights([{1}, {2}], clean_share=0.5) == balanced_weights([{1}, {2}])
    with pytest.raises(ValueError, match="clean_share"):
        balanced_weights(labels, clean_share=1.0)


def test_balanced_sampling_loader_runs(steel_root: Path) -> None:
    dm = SegmentationDataModule(
        str(steel_root),
        CLASSES,
        shape=[64, 320],
        crop=[64, 128],
        balanced_sampling=True,
        batch_size=2,
        num_workers=0,
    )
    images, masks = next(iter(dm.train_dataloader()))
    assert images.shape == (2, 1, 64, 128) and masks.shape == (2, 4, 64, 128)


def test_csv_row_for_a_missing_image_is_named(steel_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "steel"
    shutil.copytree(steel_root, root)
    csv = root / "train" / "train.csv"
    csv.write_text(csv.read_text() + "ghost.png,1,1 5\n")
    with pytest.raises(FormatError, match="ghost.png"):
        scan_segmentation_split(root, "train", 4, "severstal", (64, 320))
    from defects.formats.errors import SkipReport

    report = SkipReport()
    samples = scan_segmentation_split(root, "train", 4, "severstal", (64, 320), False, report)
    assert report.count == 1 and len(samples) == 8


def test_rle_for_another_image_size_fails_with_the_row(steel_root: Path) -> None:
    with pytest.raises(FormatError, match=r"train.csv:\d+"):
        scan_segmentation_split(steel_root, "train", 4, "severstal", (32, 100))


def test_missing_dataset_and_bad_layout(tmp_path: Path) -> None:
    dm = SegmentationDataModule(str(tmp_path / "nope"), CLASSES, num_workers=0)
    with pytest.raises(FormatError, match="dataset folder not found"):
        dm.setup("fit")
    with pytest.raises(ValueError, match="data.layout"):
        scan_segmentation_split(tmp_path, "train", 4, "coco")


def test_collate_stacks_equal_sizes() -> None:
    batch = [(torch.zeros(1, 4, 8), torch.zeros(2, 4, 8))] * 3
    images, masks = collate_same_size(batch)
    assert images.shape == (3, 1, 4, 8) and masks.shape == (3, 2, 4, 8)
