"""A pixel-mask dataset -> the pipe's box dataset: boxes from mask components, masks kept.

Real data with masks (Magnetic-Tile, ``../shared/data/magnetic_tile``) lets the pipe be
measured where the answer is known: every mask becomes one box per connected component
(the labels a crew with a box tool would have drawn), the masks stay beside them as
``true_masks`` (the truth every row of the evaluation is scored against), and a seeded
``fine.txt`` names the train images whose masks count as finely labelled.

Output: the layout of `defects.data.synthetic.generate_pipe_dataset` (``data.yaml``,
``{split}/images``, ``{split}/labels``, ``{split}/true_masks``, ``fine.txt``), without
planted cases; written whole or not at all. The mask folders are read through
`defects.formats.mask_folder.import_mask_folder` (its pairing rules and errors).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from defects.data.images import list_images
from defects.formats.io import atomic_directory, atomic_write_text
from defects.formats.layout import SPLITS
from defects.formats.mask_folder import (
    NONE_CLASS,
    import_mask_folder,
    read_index_mask,
    write_index_mask,
)
from defects.formats.yolo import write_class_names, write_yolo_labels
from defects.pipe.coarse import boxes_from_index_mask, image_size

__all__ = ["boxes_from_mask_folder"]


def _pick_fine(
    classes_of: Mapping[str, set[int]], num_classes: int, per_class: int, seed: int
) -> list[str]:
    """Train stems, seeded: for each class in turn, images holding it until ``per_class``
    of the picked images hold it (fewer where the class has fewer images)."""
    rng = np.random.default_rng(seed)
    stems = sorted(classes_of)
    order = [stems[i] for i in rng.permutation(len(stems))]
    picked: list[str] = []
    for c in range(num_classes):
        have = sum(c in classes_of[s] for s in picked)
        for stem in order:
            if have >= per_class:
                break
            if stem not in picked and c in classes_of[stem]:
                picked.append(stem)
                have += 1
    return sorted(picked)


def boxes_from_mask_folder(
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    classes: Mapping[str, str],
    fine_per_class: int = 10,
    mask_suffix: str = ".png",
    split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    strict: bool = True,
) -> dict:
    """Import per-class mask folders (see `import_mask_folder`) as a box dataset at ``out_dir``.

    Returns the import's summary plus ``boxes`` per class and split, and ``fine`` (the
    number of finely labelled train images).
    """
    out = Path(out_dir)
    with tempfile.TemporaryDirectory() as tmp, atomic_directory(out) as stage:
        masks_root = Path(tmp) / "masks"
        summary = import_mask_folder(
            source,
            masks_root,
            classes,
            mask_suffix=mask_suffix,
            split_fractions=tuple(split_fractions),  # type: ignore[arg-type]
            seed=seed,
            strict=strict,
        )
        names = [n for n in classes if n != NONE_CLASS]
        write_class_names(stage / "data.yaml", names)
        boxes_count = {split: dict.fromkeys(names, 0) for split in SPLITS}
        classes_of: dict[str, set[int]] = {}
        for split in SPLITS:
            images_dir = masks_root / split / "images"
            if not images_dir.is_dir():
                continue
            for sub in ("images", "labels", "true_masks"):
                (stage / split / sub).mkdir(parents=True)
            for image in list_images(images_dir):
                mask_path = masks_root / split / "masks" / f"{image.stem}.png"
                if mask_path.is_file():
                    mask = read_index_mask(mask_path, len(names))
                else:  # the masks layout leaves defect-free images without a mask
                    width, height = image_size(image)
                    mask = np.zeros((height, width), np.uint8)
                boxes = boxes_from_index_mask(mask)
                shutil.copyfile(image, stage / split / "images" / image.name)
                write_index_mask(stage / split / "true_masks" / f"{image.stem}.png", mask)
                write_yolo_labels(stage / split / "labels" / f"{image.stem}.txt", boxes)
                for box in boxes:
                    boxes_count[split][names[box.class_id]] += 1
                if split == "train":
                    classes_of[image.stem] = {b.class_id for b in boxes}
        fine = _pick_fine(classes_of, len(names), fine_per_class, seed)
        atomic_write_text(stage / "fine.txt", "".join(f"{s}\n" for s in fine))
    return {**summary, "boxes": boxes_count, "fine": len(fine)}
