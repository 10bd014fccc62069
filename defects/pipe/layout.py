"""Segmentation datasets in the ``masks`` layout, built from the pipe's mask folders.

The pipe keeps several index masks per training image side by side (``true_masks``,
``coarse_masks``, ``refined_masks``, ``grabcut_masks``); each training variant is a folder
that `defects.data.segmentation.SegmentationDataModule` reads with ``layout=masks``::

    OUT/classes.txt                 class names, one per line, in id order (1-based)
    OUT/{split}/images/<name>       the image (a hard link where possible, else a copy)
    OUT/{split}/masks/<stem>.png    uint8 index mask, 0 = background, k = class k

A variant chooses, per training image, which mask folder it takes (`VARIANTS`); valid and
test always take ``true_masks`` (models are scored on the fine labels). A per-class binary
variant (``class_id``) keeps one class as value 1 and sets the others to background.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from defects.data.images import list_images
from defects.formats.errors import FormatError
from defects.formats.io import atomic_directory
from defects.formats.layout import SPLITS
from defects.formats.mask_folder import read_index_mask, write_index_mask

__all__ = ["VARIANTS", "read_fine", "train_mask_folder", "write_mask_layout"]

# variant -> (train images it uses, mask folder of the fine images, of the other images)
VARIANTS: dict[str, tuple[str, str, str | None]] = {
    "fine": ("fine", "true_masks", None),  # the finely labelled subset only
    "box": ("all", "coarse_masks", "coarse_masks"),  # every box filled
    "refined": ("all", "true_masks", "refined_masks"),  # refined boxes + the fine masks
    "grabcut": ("all", "true_masks", "grabcut_masks"),  # GrabCut boxes + the fine masks
    "oracle": ("all", "true_masks", "true_masks"),  # the truth everywhere: the upper bound
}


def read_fine(root: str | os.PathLike[str]) -> list[str]:
    """Stems listed in ``root/fine.txt`` (the finely labelled train subset); [] without it."""
    path = Path(root) / "fine.txt"
    if not path.is_file():
        return []
    return [s.strip() for s in path.read_text(encoding="utf-8").split("\n") if s.strip()]


def train_mask_folder(variant: str, stem: str, fine: set[str]) -> str | None:
    """The mask folder a variant takes a training image's mask from; None = image left out."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown layout variant {variant!r}; known: {', '.join(VARIANTS)}")
    images, fine_folder, other_folder = VARIANTS[variant]
    if stem in fine:
        return fine_folder
    return other_folder if images == "all" else None


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def write_mask_layout(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    variant: str,
    class_names: Sequence[str],
    class_id: int | None = None,
    splits: Sequence[str] = SPLITS,
) -> dict[str, int]:
    """Write the ``masks`` layout of one variant of the pipe dataset ``root`` to ``out``.

    ``class_names`` are those of ``root`` (its masks are read against them). With
    ``class_id`` (0-based) the layout is binary: that class is 1, all else 0, and
    ``classes.txt`` names only it. ``out`` is written whole or not at all. A mask the
    variant needs that is missing is FormatError (no silent "defect-free" image). Returns
    the image count per split.
    """
    root = Path(root)
    names = list(class_names)
    if class_id is not None and not 0 <= class_id < len(names):
        raise ValueError(f"class_id {class_id} is not in 0..{len(names) - 1}")
    fine = set(read_fine(root))
    counts: dict[str, int] = {}
    with atomic_directory(out) as tmp:
        listed = [names[class_id]] if class_id is not None else names
        (tmp / "classes.txt").write_text("".join(f"{n}\n" for n in listed), encoding="utf-8")
        for split in splits:
            images_dir = root / split / "images"
            if not images_dir.is_dir():
                continue
            (tmp / split / "images").mkdir(parents=True)
            (tmp / split / "masks").mkdir(parents=True)
            counts[split] = 0
            for image in list_images(images_dir):
                folder = (
                    train_mask_folder(variant, image.stem, fine)
                    if split == "train"
                    else "true_masks"
                )
                if folder is None:
                    continue
                mask_path = root / split / folder / f"{image.stem}.png"
                if not mask_path.is_file():
                    raise FormatError(mask_path, f"the '{variant}' layout needs this mask")
                mask = read_index_mask(mask_path, len(names))
                if class_id is not None:
                    mask = (mask == class_id + 1).astype(np.uint8)
                _link_or_copy(image, tmp / split / "images" / image.name)
                write_index_mask(tmp / split / "masks" / f"{image.stem}.png", mask)
                counts[split] += 1
    return counts
