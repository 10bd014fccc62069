"""A mask-folder dataset (Magnetic-Tile's layout) becomes the pipe's box dataset: one box
per mask component, the masks kept as the truth, a seeded fine subset."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from defects.data.images import list_images
from defects.formats.mask_folder import read_index_mask
from defects.formats.yolo import read_class_names, read_yolo_labels
from defects.pipe.coarse import box_pixels
from defects.pipe.from_masks import boxes_from_mask_folder
from defects.pipe.layout import read_fine

CLASSES = {"blowhole": "MT_Blowhole/Imgs", "crack": "MT_Crack/Imgs", "none": "MT_Free/Imgs"}


def _tiles(root: Path) -> Path:
    """Tiles of varying size; blowholes have two separate holes, cracks one thin line."""
    rng = np.random.default_rng(0)
    for folder, count in {"MT_Blowhole": 6, "MT_Crack": 6, "MT_Free": 4}.items():
        for i in range(count):
            h, w = 40 + 4 * i, 50 + 3 * i
            stem = f"exp{i}_num_{100 + i}"
            image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            mask = np.zeros((h, w), np.uint8)
            if folder == "MT_Blowhole":
                cv2.circle(mask, (10, 10), 4, 255, -1)
                cv2.circle(mask, (w - 12, h - 12), 5, 255, -1)
            elif folder == "MT_Crack":
                cv2.line(mask, (5, 30), (w - 5, 20), 255, 2)
            (root / folder / "Imgs").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / folder / "Imgs" / f"{stem}.jpg"), image)
            cv2.imwrite(str(root / folder / "Imgs" / f"{stem}.png"), mask)
    return root


def test_boxes_are_the_mask_components_and_masks_are_kept(tmp_path: Path) -> None:
    source = _tiles(tmp_path / "src")
    out = tmp_path / "boxes"
    summary = boxes_from_mask_folder(source, out, CLASSES, fine_per_class=2, seed=3)
    names = read_class_names(out / "data.yaml")
    assert names == ["blowhole", "crack"]
    total = {n: 0 for n in names}
    for split in ("train", "valid", "test"):
        for image in list_images(out / split / "images"):
            truth = read_index_mask(out / split / "true_masks" / f"{image.stem}.png", 2)
            boxes = read_yolo_labels(out / split / "labels" / f"{image.stem}.txt", 2)
            n_components = {
                c: cv2.connectedComponents((truth == c + 1).astype(np.uint8), connectivity=8)[0] - 1
                for c in range(2)
            }
            assert [sum(b.class_id == c for b in boxes) for c in range(2)] == [
                n_components[0],
                n_components[1],
            ]
            for box in boxes:  # each box is the tight bound of its pixels
                x1, y1, x2, y2 = box_pixels(box, truth.shape[1], truth.shape[0])
                inside = truth[y1:y2, x1:x2] == box.class_id + 1
                assert inside[0].any() and inside[-1].any()
                assert inside[:, 0].any() and inside[:, -1].any()
                total[names[box.class_id]] += 1
    assert total == {"blowhole": 12, "crack": 6}
    assert {n: sum(summary["boxes"][s][n] for s in summary["boxes"]) for n in names} == total
    fine = read_fine(out)
    train = {i.stem for i in list_images(out / "train" / "images")}
    assert set(fine) <= train and summary["fine"] == len(fine)
    for c, name in enumerate(names):  # two fine images hold each class
        held = [
            s
            for s in fine
            if c in {b.class_id for b in read_yolo_labels(out / "train" / "labels" / f"{s}.txt", 2)}
        ]
        assert len(held) == 2, name
    again = boxes_from_mask_folder(source, tmp_path / "again", CLASSES, fine_per_class=2, seed=3)
    assert read_fine(tmp_path / "again") == fine and again == summary  # seeded
