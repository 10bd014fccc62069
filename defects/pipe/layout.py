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

The per-class baselines learn from boxes, not frames (`write_crop_layout`): one image per
box of their class, the box with context around it (`defects.pipe.refine.crop_window`)
scaled to a fixed size, with the binary true mask of the same window; train holds the
boxes of the fine subset, valid and test every box of their images. Refinement cuts the
train boxes the same way.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from defects.data.images import list_images, read_image
from defects.formats.errors import FormatError
from defects.formats.io import atomic_directory
from defects.formats.layout import SPLITS
from defects.formats.mask_folder import read_index_mask, write_index_mask
from defects.formats.yolo import read_yolo_labels
from defects.pipe.coarse import box_pixels
from defects.pipe.refine import crop_image, crop_window
from defects.progress import progress

__all__ = ["VARIANTS", "read_fine", "train_mask_folder", "write_crop_layout", "write_mask_layout"]

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


def _start_layout(
    root: Path, tmp: Path, listed: Sequence[str], splits: Sequence[str]
) -> Iterator[tuple[str, list[Path]]]:
    """Write ``classes.txt``; then, per split that ``root`` has, make its ``images`` and
    ``masks`` folders and yield (split, the split's images)."""
    (tmp / "classes.txt").write_text("".join(f"{n}\n" for n in listed), encoding="utf-8")
    for split in splits:
        images_dir = root / split / "images"
        if not images_dir.is_dir():
            continue
        (tmp / split / "images").mkdir(parents=True)
        (tmp / split / "masks").mkdir(parents=True)
        yield split, list_images(images_dir)


def write_mask_layout(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    variant: str,
    class_names: Sequence[str],
    class_id: int | None = None,
    splits: Sequence[str] = SPLITS,
    mask_roots: Mapping[str, str | os.PathLike[str]] | None = None,
) -> dict[str, int]:
    """Write the ``masks`` layout of one variant of the pipe dataset ``root`` to ``out``.

    ``mask_roots`` names, per mask folder, another dataset root holding ``{split}/<folder>``
    (the refine stage writes its masks outside the cleaned dataset it reads).

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
    roots = dict(mask_roots or {})
    counts: dict[str, int] = {}
    with atomic_directory(out) as tmp:
        listed = [names[class_id]] if class_id is not None else names
        for split, images in _start_layout(root, tmp, listed, splits):
            counts[split] = 0
            for image in progress(images, f"{variant} layout {split}"):
                folder = (
                    train_mask_folder(variant, image.stem, fine)
                    if split == "train"
                    else "true_masks"
                )
                if folder is None:
                    continue
                base = Path(roots.get(folder, root))
                mask_path = base / split / folder / f"{image.stem}.png"
                if not mask_path.is_file():
                    raise FormatError(mask_path, f"the '{variant}' layout needs this mask")
                mask = read_index_mask(mask_path, len(names))
                if class_id is not None:
                    mask = (mask == class_id + 1).astype(np.uint8)
                _link_or_copy(image, tmp / split / "images" / image.name)
                write_index_mask(tmp / split / "masks" / f"{image.stem}.png", mask)
                counts[split] += 1
    return counts


def write_crop_layout(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    class_names: Sequence[str],
    class_id: int,
    size: int = 64,
    context: float = 0.25,
    splits: Sequence[str] = SPLITS,
) -> dict[str, int]:
    """The binary ``masks`` layout of one class's boxes: ``{split}/images/<stem>_<line>.png``
    (``line``: the box's 1-based line in its label file), each a box crop scaled to
    ``size`` x ``size``, with the true mask of the class over the same window.

    Train takes the fine subset only (the images whose true masks count as labelled);
    valid and test take every image. ``out`` is written whole or not at all. Returns the
    crop count per split.
    """
    root = Path(root)
    names = list(class_names)
    if not 0 <= class_id < len(names):
        raise ValueError(f"class_id {class_id} is not in 0..{len(names) - 1}")
    if size < 8:
        raise ValueError(f"crop size must be at least 8 px, got {size}")
    fine = set(read_fine(root))
    counts: dict[str, int] = {}
    with atomic_directory(out) as tmp:
        for split, images in _start_layout(root, tmp, [names[class_id]], splits):
            counts[split] = 0
            for image_path in images:
                if split == "train" and image_path.stem not in fine:
                    continue
                label_path = root / split / "labels" / f"{image_path.stem}.txt"
                boxes = read_yolo_labels(label_path, len(names)) if label_path.is_file() else []
                lines = [n for n, box in enumerate(boxes, 1) if box.class_id == class_id]
                if not lines:
                    continue
                mask_path = root / split / "true_masks" / f"{image_path.stem}.png"
                if not mask_path.is_file():
                    raise FormatError(mask_path, "a baseline's crops need this true mask")
                image = read_image(image_path, 3)
                truth = (read_index_mask(mask_path, len(names)) == class_id + 1).astype(np.uint8)
                height, width = truth.shape
                for line in lines:
                    rect = box_pixels(boxes[line - 1], width, height)
                    if rect[2] <= rect[0] or rect[3] <= rect[1]:
                        continue  # no pixel inside the box (cleaning drops these)
                    window = crop_window(rect, width, height, context)
                    name = f"{image_path.stem}_{line}"
                    Image.fromarray(crop_image(image, window, size)).save(
                        tmp / split / "images" / f"{name}.png"
                    )
                    crop_mask = crop_image(truth, window, size, nearest=True)
                    write_index_mask(tmp / split / "masks" / f"{name}.png", crop_mask)
                    counts[split] += 1
    return counts
