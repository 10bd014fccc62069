"""Per-class folders of images with binary masks, imported into the index-mask ("masks") layout.

Output layout read by the segmentation data path::

    OUT/{train,valid,test}/images/<stem>.<ext>   image copied byte-for-byte from the source
    OUT/{train,valid,test}/masks/<stem>.png      uint8 index mask: 0 background, k = class k
    OUT/classes.txt                              class names, one per line, in id order (1-based)

An image without a mask file is defect-free. Source datasets like Magnetic-Tile keep one folder
per defect class, each image beside a same-stem binary mask; the importer turns those into index
masks, a stratified seeded split and unique output stems.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from defects.formats.errors import FormatError, SkipReport, first_few, handle
from defects.formats.io import atomic_directory, atomic_write_bytes
from defects.formats.layout import IMAGE_SUFFIXES, SPLITS
from defects.formats.voc import _check_split, _is_within, _split_counts
from defects.progress import progress

__all__ = [
    "MAGNETIC_TILE_CLASSES",
    "CLASS_PRESETS",
    "NONE_CLASS",
    "mask_components",
    "read_index_mask",
    "write_index_mask",
    "parse_classes",
    "import_mask_folder",
]

logger = logging.getLogger("defects")

NONE_CLASS = "none"  # key of the defect-free folder in a `classes` mapping

# Magnetic-Tile (Huang et al. 2018): MT_*/Imgs holds exp*_num_*.jpg images and same-stem .png
# masks (all zero in MT_Free). Names are lower-case and carry no "MT_" so stems stay short.
MAGNETIC_TILE_CLASSES: dict[str, str] = {
    "blowhole": "MT_Blowhole/Imgs",
    "break": "MT_Break/Imgs",
    "crack": "MT_Crack/Imgs",
    "fray": "MT_Fray/Imgs",
    "uneven": "MT_Uneven/Imgs",
    NONE_CLASS: "MT_Free/Imgs",
}
CLASS_PRESETS: dict[str, dict[str, str]] = {"magnetic_tile": MAGNETIC_TILE_CLASSES}

_SINGLE_BAND = frozenset({"L", "P", "1", "I", "I;16", "I;16L", "I;16B", "I;16N"})
_COLOUR_BANDS = frozenset({"LA", "RGB", "RGBA"})


# --------------------------------------------------------------------------- mask files


def mask_components(mask: np.ndarray) -> list[tuple[int, int, int, int, int]]:
    """(x, y, w, h, area) of each 8-connected component of a bool mask, in OpenCV's order."""
    import cv2

    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return [tuple(int(v) for v in stats[i]) for i in range(1, n)]  # type: ignore[misc]


def _grey_array(path: Path, palette_as_index: bool) -> np.ndarray:
    """Decode one mask file fully into a 2-D integer array; FormatError for anything else.

    The shared decoder (`open_image`) loads it fully so a truncated PNG fails here, not during
    training, and keeps the stored values (no conversion to grey). For
    'P' images the indices are the data when they are class ids (`palette_as_index`); for a
    binary mask the palette colours are what the annotator saw, so they are used instead, and
    a 1-bit mask reads as 0/255 like the black and white it shows (as 0/1 it would fall under
    any threshold above 1 and its defects would vanish).
    Multi-band images are accepted only when every colour band is equal (a grey mask saved as
    RGB) and any alpha is fully opaque: anything else is a colour-coded mask we cannot read.
    """
    from defects.data.images import open_image  # lazy: defects.data.images imports formats

    with open_image(path) as im:
        if im.mode == "P" and not palette_as_index:
            im = im.convert("RGBA" if im.has_transparency_data else "RGB")
        mode = im.mode
        arr = np.array(im)

    if mode in _SINGLE_BAND:
        if arr.dtype == np.bool_:  # a 1-bit file: 0/1 are class ids, or black/white (0/255)
            return arr.astype(np.uint8) * np.uint8(1 if palette_as_index else 255)
        return arr
    if mode not in _COLOUR_BANDS:
        raise FormatError(path, f"unsupported image mode {mode!r} for a mask")
    if "A" in mode:
        if np.any(arr[..., -1] != 255):
            raise FormatError(path, f"mode {mode} mask has transparent pixels")
        arr = arr[..., :-1]
    grey = arr[..., 0]
    for band in range(1, arr.shape[-1]):
        differ = arr[..., band] != grey
        if np.any(differ):
            y, x = (int(v) for v in np.argwhere(differ)[0])
            raise FormatError(
                path,
                f"mode {mode} mask has differing channels (first at x={x}, y={y}: "
                f"{arr[y, x].tolist()}); expected a single-channel or grey mask",
            )
    return np.ascontiguousarray(grey)


def _check_mask_shape(path: Path, arr: np.ndarray, shape: tuple[int, int] | None) -> None:
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise FormatError(
            path,
            f"mask is {arr.shape[0]}x{arr.shape[1]} (HxW), expected {shape[0]}x{shape[1]}",
        )


def read_index_mask(
    path: str | os.PathLike[str], num_classes: int, shape: tuple[int, int] | None = None
) -> np.ndarray:
    """(H, W) uint8 index mask with values in 0..num_classes; FormatError(path, reason) if bad.

    Values are checked here because a mask from another class list or a 0/255 binary mask
    would otherwise train as nonsense classes. `shape` (H, W) is the image size when known.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise ValueError(f"num_classes must be an integer, got {num_classes!r}")
    if not 1 <= num_classes <= 255:
        raise ValueError(f"num_classes must be in 1..255 for a uint8 mask, got {num_classes}")
    mask_path = Path(path)
    arr = _grey_array(mask_path, palette_as_index=True)
    _check_mask_shape(mask_path, arr, shape)
    top = int(arr.max()) if arr.size else 0
    if top > num_classes or (arr.size and int(arr.min()) < 0):
        bad = top if top > num_classes else int(arr.min())
        count = int(np.count_nonzero(arr == bad))
        raise FormatError(
            mask_path,
            f"value {bad} in {count} pixel(s) is outside 0..{num_classes} "
            f"(0 = background, 1..{num_classes} = class ids)",
        )
    return arr.astype(np.uint8, copy=False)


def _png_bytes(mask: np.ndarray) -> bytes:
    arr = np.asarray(mask)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"mask must be a non-empty 2-D (H, W) array, got shape {arr.shape}")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    elif not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"mask must hold integer class ids, got dtype {arr.dtype}")
    elif arr.dtype != np.uint8:
        if int(arr.min()) < 0 or int(arr.max()) > 255:
            raise ValueError(f"mask values must be in 0..255, got {arr.min()}..{arr.max()}")
        arr = arr.astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_index_mask(path: str | os.PathLike[str], mask: np.ndarray) -> None:
    """Write a 2-D integer mask as an 8-bit grey PNG atomically (temp sibling + os.replace).

    Readers never see a half-written mask; parent directories are created. The PNG is encoded
    in memory first so a bad array fails before anything touches the disk.
    """
    atomic_write_bytes(path, _png_bytes(mask))


# --------------------------------------------------------------------------- class mapping


def parse_classes(spec: str | Mapping[str, str] | Iterable[str]) -> dict[str, str]:
    """`name=folder,...,none=folder` text (or a preset name such as "magnetic_tile") -> mapping.

    Also takes a mapping or a list of `name=folder` items, which is what `fire` hands over
    when the shell text happens to parse as a Python literal.
    """
    if isinstance(spec, Mapping):
        return {str(k).strip(): str(v).strip() for k, v in spec.items()}
    if isinstance(spec, str):
        text = spec.strip()
        if text in CLASS_PRESETS:
            return dict(CLASS_PRESETS[text])
        items = text.split(",")
    else:
        items = [str(item) for item in spec]
    result: dict[str, str] = {}
    for item in items:
        if not item.strip():
            continue
        name, sep, folder = item.partition("=")
        name, folder = name.strip(), folder.strip()
        if not sep or not name or not folder:
            presets = ", ".join(sorted(CLASS_PRESETS))
            raise ValueError(
                f"classes: expected 'name=folder' items or a preset ({presets}), got {item!r}"
            )
        if name in result:
            raise ValueError(f"classes: {name!r} given twice")
        result[name] = folder
    if not result:
        raise ValueError("classes: empty")
    return result


def _prefix(name: str) -> str:
    """File-name-safe lower-case tag that makes output stems unique across class folders."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


# --------------------------------------------------------------------------- folder scan


def _subfolders(folder: Path, recursive: bool) -> list[Path]:
    """`folder`, and with `recursive` every non-hidden folder below it, in sorted order."""
    if not recursive:
        return [folder]
    below = (
        d
        for d in folder.rglob("*")
        if d.is_dir() and not any(p.startswith(".") for p in d.relative_to(folder).parts)
    )
    return [folder, *sorted(below)]


def _stem_in(folder: Path, sub: Path, stem: str) -> str:
    """`part01/img0` -> `part01_img0`: the subfolder path joined into the output stem."""
    return "_".join((*sub.relative_to(folder).parts, stem))


@dataclass
class _Pair:
    stem: str
    image: Path
    mask: Path | None


def _pair_files(
    folder: Path,
    image_suffixes: tuple[str, ...],
    mask_suffix: str,
    strict: bool,
    report: SkipReport,
) -> list[_Pair]:
    """Match images with their masks in one folder (see `import_mask_folder` for the rule)."""
    mask_sfx = mask_suffix.lower()
    ambiguous = mask_sfx in image_suffixes  # e.g. ".png": masks look like images
    images: dict[str, list[Path]] = {}
    masks: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        name = entry.name
        if name.startswith(".") or not entry.is_file():
            continue
        if name.lower().endswith(mask_sfx) and len(name) > len(mask_sfx):
            masks[name[: -len(mask_sfx)]] = entry
        elif entry.suffix.lower() in image_suffixes:
            images.setdefault(entry.stem, []).append(entry)

    pairs: list[_Pair] = []
    for stem in sorted(images.keys() | masks.keys()):
        candidates = images.get(stem, [])
        mask = masks.get(stem)
        if len(candidates) > 1:
            names = ", ".join(p.name for p in candidates)
            handle(
                FormatError(folder / stem, f"several images share the stem: {names}"),
                strict,
                report,
            )
            continue
        if not candidates:
            assert mask is not None
            if not ambiguous:
                reason = f"mask without an image (no {stem}.<image suffix> beside it)"
            else:
                reason = (
                    f"ambiguous: has the mask suffix {mask_suffix!r} but no same-stem image "
                    f"with another suffix; an image without a mask or a mask without an "
                    f"image? (use a distinct mask suffix such as '_mask{mask_suffix}')"
                )
            handle(FormatError(mask, reason), strict, report)
            continue
        pairs.append(_Pair(stem, candidates[0], mask))
    return pairs


def _image_shape(path: Path) -> tuple[int, int]:
    """(H, W) after a full decode: a truncated image must fail the import, not the training."""
    from defects.data.images import open_image  # lazy: defects.data.images imports formats

    with open_image(path) as im:
        return im.height, im.width


@dataclass
class _Item:
    out_stem: str
    image: Path
    mask: np.ndarray | None  # index mask, None when the image is defect-free


def _seeded_order(n: int, seed: int, key: str) -> np.ndarray:
    """Per-folder permutation: the key keeps one folder's split from depending on the others."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(key.encode("utf-8"))])
    return rng.permutation(n)


def _stratified_counts(n: int, fractions: tuple[float, float, float]) -> list[int]:
    """Largest-remainder counts, then lift empty splits (with a positive fraction) to one item.

    A class missing from valid or test makes its metric undefined, so with enough images each
    wanted split gets at least one; the image is taken from the largest split.
    """
    counts = _split_counts(n, fractions)
    wanted = [i for i, p in enumerate(fractions) if p > 0]
    if n >= len(wanted):
        for i in wanted:
            if counts[i] == 0:
                donor = max(range(len(counts)), key=lambda j: (counts[j], -j))
                counts[donor] -= 1
                counts[i] += 1
    return counts


# --------------------------------------------------------------------------- import


def import_mask_folder(
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    classes: Mapping[str, str],
    image_suffixes: tuple[str, ...] = IMAGE_SUFFIXES,
    mask_suffix: str = ".png",
    mask_threshold: int = 128,
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    strict: bool = True,
    recursive: bool = False,
) -> dict:
    """Import per-class folders of images + binary masks into the index-mask layout.

    `classes` maps a class name, or "none" for the defect-free folder, to a folder relative to
    `source`. Class ids are 1-based in the order of the non-"none" keys.

    Which file is the image and which the mask (per folder, files directly inside it, hidden
    files ignored, suffixes compared case-insensitively):

    - The mask of image `<stem><ext>` is `<stem><mask_suffix>`.
    - Every file whose name ends with `mask_suffix` is a mask; every other file with a suffix
      in `image_suffixes` is an image. So with a distinct suffix ("_mask.png": `a.jpg` +
      `a_mask.png`) any image type works, and with a plain image suffix (".png", the
      Magnetic-Tile layout: `a.jpg` + `a.png`) images are the files with another suffix.
    - In the plain case a lone `a.png` is ambiguous (an image without a mask, or a mask
      without an image?) and an error naming it.
    - Several images with one stem, or a mask without an image, are errors too.

    In a class folder every image needs its mask; pixels >= `mask_threshold` are the class.
    A mask that thresholds to nothing (Magnetic-Tile has a few; KolektorSDD ships one for every
    clean image) keeps the image as defect-free; one warning at the end counts them all.
    In the "none" folder a mask may be missing; if present it must be empty.
    Masks must match their image's size. Errors raise FormatError naming the file when
    `strict`, else the image is skipped, logged and counted.

    The split is stratified per folder and seeded (numpy default_rng from `seed` and the class
    name): every folder with at least 3 images gets an image in each split with a positive
    fraction. Output stems are `<class name>__<source stem>`, so they are unique across
    folders. With `recursive`, the subfolders of each class folder are read too (datasets
    shipped one folder per part or batch, `kos01/Part0.jpg` + `kos01/Part0_label.bmp`, paired
    within each subfolder) and the stem carries the subfolder: `<class>__kos01_Part0`; two
    files that would get one output name are an error naming both. `out_dir` is written
    whole or not at all (`atomic_directory`) and the source is only read. Returns
    {"images": {split: n}, "per_class": {name: n_images}, "defect_free": n, "skipped": n,
    "empty_masks": n, "classes": [names]}.
    """
    fractions = _check_split(split_fractions)
    if isinstance(mask_threshold, bool) or not isinstance(mask_threshold, (int, np.integer)):
        raise ValueError(f"mask_threshold must be an integer, got {mask_threshold!r}")
    if mask_threshold < 1:
        raise ValueError(f"mask_threshold must be >= 1 (0 marks every pixel), got {mask_threshold}")
    suffixes = tuple(s.lower() for s in image_suffixes)
    if not suffixes or not all(s.startswith(".") for s in suffixes):
        raise ValueError(f"image_suffixes must be extensions like '.jpg', got {image_suffixes!r}")
    if "." not in mask_suffix or mask_suffix.endswith("."):
        raise ValueError(f"mask_suffix {mask_suffix!r} has no file extension")

    src_root, out_root = Path(source), Path(out_dir)
    if not src_root.is_dir():
        raise NotADirectoryError(f"{src_root}: not a directory")
    src_abs, out_abs = src_root.resolve(), out_root.resolve()
    if _is_within(src_abs, out_abs) or _is_within(out_abs, src_abs):
        # Replacing out_dir would delete the source; writing inside it would modify it.
        raise ValueError(f"out_dir {out_root} must not be, contain or lie inside {src_root}")

    mapping = dict(classes)
    names = [k for k in mapping if k != NONE_CLASS]
    if not names:
        raise ValueError("classes: need at least one defect class besides 'none'")
    prefixes: dict[str, str] = {}
    for key in mapping:
        if not key or key != key.strip() or any(c in key for c in "\r\n,="):
            raise ValueError(f"class name {key!r}: must be non-empty, one line, no ',' or '='")
        tag = _prefix(key)
        if not tag:
            raise ValueError(f"class name {key!r} has no letters or digits for a file prefix")
        if tag in prefixes.values():
            other = next(k for k, t in prefixes.items() if t == tag)
            raise ValueError(f"class names {other!r} and {key!r} give the same prefix {tag!r}")
        prefixes[key] = tag
    folders: dict[str, Path] = {}
    for key, rel in mapping.items():
        folder = src_root / rel
        if not folder.is_dir():
            raise FormatError(folder, f"folder of class {key!r} not found")
        real = folder.resolve()
        for other, seen in folders.items():
            if seen.resolve() == real:
                raise ValueError(f"classes {other!r} and {key!r} use the same folder {rel!r}")
        folders[key] = folder

    report = SkipReport()
    class_ids = {name: i + 1 for i, name in enumerate(names)}
    per_folder: dict[str, list[_Item]] = {}
    empty: list[str] = []  # masks with no pixel over the threshold, for the summary warning
    for key, folder in folders.items():
        items: list[_Item] = []
        pairs = [
            (_stem_in(folder, sub, pair.stem), pair)
            for sub in _subfolders(folder, recursive)
            for pair in _pair_files(sub, suffixes, mask_suffix, strict, report)
        ]
        taken: dict[str, Path] = {}
        for stem, pair in progress(pairs, f"read {key}"):
            out_stem = f"{prefixes[key]}__{stem}"
            if out_stem in taken:
                reason = f"output name {out_stem} is also that of {taken[out_stem]}"
                handle(FormatError(pair.image, reason), strict, report)
                continue
            taken[out_stem] = pair.image
            try:
                shape = _image_shape(pair.image)
                if pair.mask is None:
                    if key != NONE_CLASS:
                        raise FormatError(
                            pair.image, f"no mask {pair.stem}{mask_suffix} beside the image"
                        )
                    items.append(_Item(out_stem, pair.image, None))
                    continue
                grey = _grey_array(pair.mask, palette_as_index=False)
                _check_mask_shape(pair.mask, grey, shape)
                binary = grey >= mask_threshold
            except FormatError as err:
                handle(err, strict, report)
                continue
            if key == NONE_CLASS:
                if binary.any():
                    handle(
                        FormatError(
                            pair.mask,
                            f"mask in the defect-free folder has {int(binary.sum())} pixel(s) "
                            f">= {mask_threshold}",
                        ),
                        strict,
                        report,
                    )
                    continue
                items.append(_Item(out_stem, pair.image, None))
            elif not binary.any():
                empty.append(str(pair.mask.relative_to(src_root)))
                items.append(_Item(out_stem, pair.image, None))
            else:
                index = binary.astype(np.uint8) * np.uint8(class_ids[key])
                items.append(_Item(out_stem, pair.image, index))
        per_folder[key] = items

    if empty:
        logger.warning(
            "import_mask_folder: %d mask(s) with no pixel >= %d, imported as defect-free: %s",
            len(empty),
            mask_threshold,
            first_few(empty),
        )
    if not any(per_folder.values()):
        raise FormatError(src_root, f"no usable images in the class folders\n{report.summary()}")

    assignment: dict[str, list[_Item]] = {name: [] for name in SPLITS}
    for key, items in per_folder.items():
        ordered = sorted(items, key=lambda it: it.out_stem)
        perm = _seeded_order(len(ordered), seed, key)
        start = 0
        for split, count in zip(SPLITS, _stratified_counts(len(ordered), fractions), strict=True):
            assignment[split].extend(ordered[int(i)] for i in perm[start : start + count])
            start += count

    with atomic_directory(out_root) as tmp:
        for split in SPLITS:
            (tmp / split / "images").mkdir(parents=True)
            (tmp / split / "masks").mkdir(parents=True)
            ordered = sorted(assignment[split], key=lambda it: it.out_stem)
            for item in progress(ordered, f"write {split}"):
                image_name = f"{item.out_stem}{item.image.suffix}"
                shutil.copyfile(item.image, tmp / split / "images" / image_name)
                if item.mask is not None:
                    write_index_mask(tmp / split / "masks" / f"{item.out_stem}.png", item.mask)
        (tmp / "classes.txt").write_text("".join(f"{n}\n" for n in names), encoding="utf-8")

    if report.count:
        logger.warning("import_mask_folder: %s", report.summary())
    all_items = [it for items in per_folder.values() for it in items]
    return {
        "images": {split: len(assignment[split]) for split in SPLITS},
        "per_class": {name: sum(it.mask is not None for it in per_folder[name]) for name in names},
        "defect_free": sum(it.mask is None for it in all_items),
        "skipped": report.count,
        "empty_masks": len(empty),
        "classes": names,
    }
