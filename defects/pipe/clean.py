"""Clean a box-labelled YOLO dataset before its boxes become masks: a copy, and a report.

Box labels from crews carry the usual errors: the same frame exported twice (or re-encoded,
brightened, resized) with the same or with different labels, stray boxes of zero or absurd
size, boxes outside the frame, the same box twice, and classes too rare to learn. Each rule
below is a function that returns what it would remove and why; `clean_dataset` applies them
in this order and writes a cleaned copy plus ``report.json`` / ``report.csv`` listing every
removal (file, line for boxes, rule, reason). The source dataset is only read.

Rules and their defaults (`CleanConfig`):

1. Boxes, per label file, each rule on the boxes the earlier ones kept:
   ``degenerate_box`` w or h < ``degenerate_px`` (1 px); ``outside_image`` centre outside
   the image or less than ``min_inside_fraction`` (0.5) of the box inside (a box mostly
   inside is kept, clipped to the image, and listed under ``clipped``); ``implausible_size``
   area < ``min_area_px`` (16 px^2) or > ``max_area_fraction`` (0.9) of the image;
   ``implausible_aspect`` long side / short side > ``max_aspect`` (15); ``duplicate_box``
   same class and IoU > ``duplicate_iou`` (0.95) with an earlier kept box of the file.
2. Images, over all splits in split order (train, valid, test) then sorted file name, the
   first of a group is kept: ``exact_duplicate`` the same file bytes (SHA-256);
   ``near_duplicate`` pHash Hamming distance <= ``phash_threshold`` (4 of 64 bits) to a kept
   image (``imagehash.phash``: grey, 32x32 Lanczos, 2-D DCT, top-left 8x8 above median).
   A group whose cleaned label sets disagree (another box count, or a box without a
   same-class partner of IoU >= ``conflict_iou``, 0.5) is ``conflicting_labels``: all its
   images are dropped (``on_conflict="drop_all"``) or all but the first (``"keep_first"``).
3. Classes: a class with fewer than ``min_count`` (10) boxes left in train, or named in
   ``drop_classes``, is dropped (its boxes listed as ``rare_class``, its mask pixels set to
   background); the remaining class ids are renumbered contiguously in their old order and
   a new ``data.yaml`` is written.

Label files are read by `defects.formats.yolo.read_numbered_labels` with the geometry left to
the rules above. A line that is not ``class cx cy w h`` with finite numbers, or whose class id
is not in ``data.yaml``, is not a "false box" but bad input: FormatError naming file and line.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import imagehash
import numpy as np

from defects.data.images import open_image
from defects.formats.errors import FormatError
from defects.formats.io import atomic_directory
from defects.formats.layout import SPLITS, is_image_file
from defects.formats.mask_folder import read_index_mask, write_index_mask
from defects.formats.yolo import (
    NumberedBox,
    read_class_names,
    read_numbered_labels,
    write_class_names,
)
from defects.pipe.coarse import image_size
from defects.progress import progress

__all__ = [
    "CleanConfig",
    "DuplicateGroup",
    "ImageRecord",
    "Removal",
    "aspect_boxes",
    "clean_boxes",
    "clean_dataset",
    "degenerate_boxes",
    "duplicate_boxes",
    "find_duplicates",
    "labels_agree",
    "outside_boxes",
    "rare_classes",
    "size_boxes",
]

MASK_FOLDERS = ("true_masks", "coarse_masks", "masks")  # per-image index masks to carry over
_CONFLICT_POLICIES = ("drop_all", "keep_first")
_EDGE_SLACK = 1e-6


@dataclass(frozen=True)
class CleanConfig:
    """Thresholds of the cleaning rules (see the module docstring for what each one does)."""

    degenerate_px: float = 1.0
    min_inside_fraction: float = 0.5
    min_area_px: float = 16.0
    max_area_fraction: float = 0.9
    max_aspect: float = 15.0
    duplicate_iou: float = 0.95
    phash_threshold: int = 4
    conflict_iou: float = 0.5
    on_conflict: str = "drop_all"
    min_count: int = 10
    drop_classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.on_conflict not in _CONFLICT_POLICIES:
            raise ValueError(f"on_conflict must be one of {_CONFLICT_POLICIES}")
        for name in ("min_inside_fraction", "max_area_fraction", "duplicate_iou", "conflict_iou"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.max_aspect < 1.0 or self.phash_threshold < 0 or self.min_count < 0:
            raise ValueError("max_aspect must be >= 1, phash_threshold and min_count >= 0")
        drop = (self.drop_classes,) if isinstance(self.drop_classes, str) else self.drop_classes
        object.__setattr__(self, "drop_classes", tuple(str(c) for c in drop))


@dataclass(frozen=True)
class Removal:
    """One thing the cleaner dropped: an image (line None) or one box line of a label file."""

    rule: str
    split: str
    file: str  # relative to the source dataset, '/'-separated
    line: int | None
    reason: str


Flag = tuple[NumberedBox, str]  # a box a rule would remove, and why


# --------------------------------------------------------------------------- box rules


def degenerate_boxes(
    boxes: Sequence[NumberedBox], width: int, height: int, min_px: float = 1.0
) -> list[Flag]:
    """Boxes with (almost) no width or height: a mis-click, not a defect."""
    flags = []
    for b in boxes:
        w_px, h_px = b.w * width, b.h * height
        if w_px < min_px or h_px < min_px:
            flags.append((b, f"{w_px:.2f} x {h_px:.2f} px, below {min_px:g} px"))
    return flags


def _inside_fraction(b: NumberedBox, width: int, height: int) -> float:
    x1, y1, x2, y2 = b.to_xyxy(width, height)
    area = (x2 - x1) * (y2 - y1)
    ix = max(min(x2, width) - max(x1, 0.0), 0.0)
    iy = max(min(y2, height) - max(y1, 0.0), 0.0)
    return ix * iy / area if area > 0 else 0.0


def outside_boxes(
    boxes: Sequence[NumberedBox], width: int, height: int, min_inside_fraction: float = 0.5
) -> list[Flag]:
    """Boxes centred outside the image or mostly outside it: they label nothing visible."""
    flags = []
    for b in boxes:
        if not (0.0 <= b.cx <= 1.0 and 0.0 <= b.cy <= 1.0):
            flags.append((b, f"centre ({b.cx:g}, {b.cy:g}) is outside the image"))
            continue
        inside = _inside_fraction(b, width, height)
        if inside < min_inside_fraction:
            flags.append((b, f"only {inside:.0%} of the box is inside the image"))
    return flags


def _clip(b: NumberedBox) -> NumberedBox:
    """The box cut to the image [0, 1] x [0, 1]; unchanged when it already fits.

    The slack of 1e-6 is what 6-decimal label text can overshoot by on its own.
    """
    x1, x2 = b.cx - b.w / 2, b.cx + b.w / 2
    y1, y2 = b.cy - b.h / 2, b.cy + b.h / 2
    if min(x1, y1) >= -_EDGE_SLACK and max(x2, y2) <= 1.0 + _EDGE_SLACK:
        return b
    x1, x2, y1, y2 = max(x1, 0.0), min(x2, 1.0), max(y1, 0.0), min(y2, 1.0)
    return replace(b, cx=(x1 + x2) / 2, cy=(y1 + y2) / 2, w=x2 - x1, h=y2 - y1)


def size_boxes(
    boxes: Sequence[NumberedBox],
    width: int,
    height: int,
    min_area_px: float = 16.0,
    max_area_fraction: float = 0.9,
) -> list[Flag]:
    """Boxes too small to be a labelled defect, or covering (nearly) the whole frame."""
    flags = []
    for b in boxes:
        area = b.w * width * b.h * height
        if area < min_area_px:
            flags.append((b, f"area {area:.1f} px^2 < min_area_px {min_area_px:g}"))
        elif b.w * b.h > max_area_fraction:
            flags.append((b, f"covers {b.w * b.h:.0%} of the image > {max_area_fraction:.0%}"))
    return flags


def aspect_boxes(
    boxes: Sequence[NumberedBox], width: int, height: int, max_aspect: float = 15.0
) -> list[Flag]:
    """Boxes thinner than any real defect's box: a drag along an edge, not a defect."""
    flags = []
    for b in boxes:
        w_px, h_px = b.w * width, b.h * height
        aspect = max(w_px, h_px) / max(min(w_px, h_px), 1e-9)
        if aspect > max_aspect:
            flags.append((b, f"aspect {aspect:.1f} ({w_px:.1f} x {h_px:.1f} px) > {max_aspect:g}"))
    return flags


def box_iou(a: NumberedBox, b: NumberedBox) -> float:
    """IoU of two boxes in normalised coordinates."""
    ax1, ay1, ax2, ay2 = a.to_xyxy(1, 1)
    bx1, by1, bx2, by2 = b.to_xyxy(1, 1)
    iw = max(min(ax2, bx2) - max(ax1, bx1), 0.0)
    ih = max(min(ay2, by2) - max(ay1, by1), 0.0)
    inter = iw * ih
    union = a.w * a.h + b.w * b.h - inter
    return inter / union if union > 0 else 0.0


def duplicate_boxes(
    boxes: Sequence[NumberedBox], width: int, height: int, max_iou: float = 0.95
) -> list[Flag]:
    """Later boxes that repeat an earlier one (same class, IoU > max_iou): one defect, once."""
    kept: list[NumberedBox] = []
    flags = []
    for b in boxes:
        twin = next((k for k in kept if k.class_id == b.class_id and box_iou(k, b) > max_iou), None)
        if twin is None:
            kept.append(b)
        else:
            flags.append((b, f"same class, IoU {box_iou(twin, b):.2f} with line {twin.line}"))
    return flags


BoxRule = Callable[[Sequence[NumberedBox], int, int], list[Flag]]


def box_rules(config: CleanConfig) -> list[tuple[str, BoxRule]]:
    """The box rules in the order they run, bound to the config's thresholds."""
    c = config
    return [
        ("degenerate_box", lambda b, w, h: degenerate_boxes(b, w, h, c.degenerate_px)),
        ("outside_image", lambda b, w, h: outside_boxes(b, w, h, c.min_inside_fraction)),
        (
            "implausible_size",
            lambda b, w, h: size_boxes(b, w, h, c.min_area_px, c.max_area_fraction),
        ),
        ("implausible_aspect", lambda b, w, h: aspect_boxes(b, w, h, c.max_aspect)),
        ("duplicate_box", lambda b, w, h: duplicate_boxes(b, w, h, c.duplicate_iou)),
    ]


def clean_boxes(
    boxes: Sequence[NumberedBox], width: int, height: int, config: CleanConfig
) -> tuple[list[NumberedBox], list[tuple[str, NumberedBox, str]], list[NumberedBox]]:
    """(kept boxes, [(rule, box, reason)] removed, boxes clipped to the image).

    Each rule sees only what the earlier rules kept, so a box is removed by its first rule.
    Boxes that pass ``outside_image`` are clipped before the size and aspect rules.
    """
    kept = list(boxes)
    removed: list[tuple[str, NumberedBox, str]] = []
    clipped: list[NumberedBox] = []
    for rule, check in box_rules(config):
        flags = check(kept, width, height)
        gone = {id(b) for b, _ in flags}
        removed.extend((rule, b, reason) for b, reason in flags)
        kept = [b for b in kept if id(b) not in gone]
        if rule == "outside_image":
            cut = [_clip(b) for b in kept]
            clipped = [b for b, c in zip(kept, cut, strict=True) if c != b]
            kept = cut
    return kept, removed, clipped


# --------------------------------------------------------------------------- images


@dataclass
class ImageRecord:
    """One image of the source dataset with what the cleaner learned about it."""

    split: str
    path: Path
    rel: str
    width: int
    height: int
    boxes: list[NumberedBox]
    kept: list[NumberedBox] = field(default_factory=list)
    sha: str = ""
    phash: imagehash.ImageHash | None = None

    @property
    def label_rel(self) -> str:
        return f"{self.split}/labels/{self.path.stem}.txt"


@dataclass
class DuplicateGroup:
    """A kept image and the later images that duplicate it, each with rule and reason."""

    first: ImageRecord
    members: list[tuple[ImageRecord, str, str]] = field(default_factory=list)


def find_duplicates(images: Sequence[ImageRecord], phash_threshold: int) -> list[DuplicateGroup]:
    """Groups of duplicates; ``images`` in keep-priority order, the first of a group is kept.

    Each image joins the first earlier kept image with the same bytes (``exact_duplicate``)
    or, failing that, the nearest one within ``phash_threshold`` bits (``near_duplicate``);
    otherwise it is kept itself. Joining only kept images avoids chains of small changes
    gluing different pictures together.
    """
    kept: list[tuple[imagehash.ImageHash, DuplicateGroup]] = []  # each group's first image
    by_sha: dict[str, DuplicateGroup] = {}
    for im in images:
        group = by_sha.get(im.sha)
        if group is not None:
            group.members.append((im, "exact_duplicate", f"byte-identical to {group.first.rel}"))
            continue
        if im.phash is None:
            raise ValueError(f"{im.rel}: no pHash computed")
        best: tuple[int, DuplicateGroup] | None = None
        for first_hash, g in kept:
            d = int(im.phash - first_hash)  # Hamming distance in bits
            if d <= phash_threshold and (best is None or d < best[0]):
                best = (d, g)
        if best is not None:
            reason = f"pHash distance {best[0]} <= {phash_threshold} to {best[1].first.rel}"
            best[1].members.append((im, "near_duplicate", reason))
            continue
        group = DuplicateGroup(im)
        kept.append((im.phash, group))
        by_sha[im.sha] = group
    return [g for _, g in kept if g.members]


def labels_agree(a: Sequence[NumberedBox], b: Sequence[NumberedBox], min_iou: float = 0.5) -> bool:
    """Same number of boxes and a one-to-one same-class match with IoU >= min_iou.

    Compared in normalised coordinates, so a resized copy with the same labels agrees.
    """
    if len(a) != len(b):
        return False
    free = list(b)
    for box in sorted(a, key=lambda x: -x.w * x.h):
        scored = [(box_iou(box, o), i) for i, o in enumerate(free) if o.class_id == box.class_id]
        if not scored or max(scored)[0] < min_iou:
            return False
        free.pop(max(scored)[1])
    return True


def rare_classes(
    counts: Counter[int], names: Sequence[str], min_count: int, drop: Iterable[str] = ()
) -> dict[int, str]:
    """{class id: why it is dropped} for classes below ``min_count`` boxes or named in drop."""
    drop = list(drop)
    unknown = [d for d in drop if d not in names]
    if unknown:
        raise ValueError(f"drop_classes {unknown} are not classes of the dataset {list(names)}")
    out = {}
    for k, name in enumerate(names):
        if name in drop:
            out[k] = "named in drop_classes"
        elif counts[k] < min_count:
            out[k] = f"{counts[k]} boxes in train < min_count {min_count}"
    return out


# --------------------------------------------------------------------------- dataset


def _scan(root: Path, num_classes: int) -> list[ImageRecord]:
    """Every image of every split with its parsed label file; orphans are bad input."""
    images: list[ImageRecord] = []
    for split in SPLITS:
        images_dir = root / split / "images"
        if not images_dir.is_dir():
            continue
        stems: dict[str, Path] = {}
        for path in sorted(p for p in images_dir.iterdir() if is_image_file(p)):
            if path.stem in stems:
                raise FormatError(path, f"same stem as {stems[path.stem].name}")
            stems[path.stem] = path
            width, height = image_size(path)
            label_path = root / split / "labels" / f"{path.stem}.txt"
            # Syntax only: the box rules judge geometry and list every box they drop.
            boxes = read_numbered_labels(label_path, num_classes, check_geometry=False)
            rel = f"{split}/images/{path.name}"
            images.append(ImageRecord(split, path, rel, width, height, boxes))
        labels_dir = root / split / "labels"
        if labels_dir.is_dir():
            for label in sorted(labels_dir.glob("*.txt")):
                if label.stem not in stems:
                    raise FormatError(label, f"label file without an image in {images_dir}")
    return images


def _check_paths(src: Path, out: Path) -> None:
    """Refuse an output that would replace or contain the raw data."""
    s, o = src.resolve(), out.resolve()
    if s == o or s.is_relative_to(o):
        raise ValueError(f"output {out} would replace the source dataset {src}")


def _conflicts(
    groups: list[DuplicateGroup], config: CleanConfig
) -> tuple[list[Removal], list[dict], set[str]]:
    """Removals for every duplicate group (rel paths dropped), conflicting groups listed."""
    removals: list[Removal] = []
    report: list[dict] = []
    for g in groups:
        agree = all(
            labels_agree(g.first.kept, m.kept, config.conflict_iou) for m, _, _ in g.members
        )
        if agree:
            removals += [Removal(rule, m.split, m.rel, None, why) for m, rule, why in g.members]
            continue
        keep_first = config.on_conflict == "keep_first"
        names = [g.first.rel] + [m.rel for m, _, _ in g.members]
        report.append({"images": names, "kept": g.first.rel if keep_first else None})
        victims = (
            [m for m, _, _ in g.members] if keep_first else [g.first] + [m for m, _, _ in g.members]
        )
        why = f"duplicate group {', '.join(names)} whose labels disagree ({config.on_conflict})"
        removals += [Removal("conflicting_labels", m.split, m.rel, None, why) for m in victims]
    return removals, report, {r.file for r in removals}


def _copy_masks(src: Path, tmp: Path, im: ImageRecord, lut: np.ndarray, num_classes: int) -> None:
    """Carry the image's index masks over with class ids renumbered (dropped -> 0)."""
    for folder in MASK_FOLDERS:
        path = src / im.split / folder / f"{im.path.stem}.png"
        if path.is_file():
            mask = read_index_mask(path, num_classes, (im.height, im.width))
            write_index_mask(tmp / im.split / folder / path.name, lut[mask])


def _write_csv(path: Path, removals: Sequence[Removal]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["split", "file", "line", "rule", "reason"])
    for r in removals:
        writer.writerow([r.split, r.file, "" if r.line is None else r.line, r.rule, r.reason])
    path.write_text(buffer.getvalue(), encoding="utf-8")


@dataclass
class _ClassPlan:
    """Which classes survive and their new ids; ``gone`` maps a dropped id to why."""

    names: list[str]
    gone: dict[int, str]
    mapping: dict[int, int]
    train_counts: Counter[int]

    @property
    def new_names(self) -> list[str]:
        return [n for k, n in enumerate(self.names) if k in self.mapping]

    def lut(self) -> np.ndarray:
        """Old mask value -> new mask value (dropped classes -> 0 background)."""
        table = np.zeros(256, np.uint8)
        for old, new in self.mapping.items():
            table[old + 1] = new + 1
        return table


def _phash_file(path: Path) -> imagehash.ImageHash:
    """64-bit pHash of an image file, decoded by the one image decoder (FormatError naming it)."""
    with open_image(path) as image:
        return imagehash.phash(image)


def _judge_images(images: list[ImageRecord], config: CleanConfig) -> tuple[list[Removal], list]:
    """Box rules per file (filling each image's ``kept``) and its hashes; (removals, clipped)."""
    removals: list[Removal] = []
    clipped: list[dict] = []
    for im in progress(images, "clean"):
        im.kept, removed, cut = clean_boxes(im.boxes, im.width, im.height, config)
        removals += [Removal(r, im.split, im.label_rel, b.line, why) for r, b, why in removed]
        clipped += [{"file": im.label_rel, "line": b.line} for b in cut]
        im.sha = hashlib.sha256(im.path.read_bytes()).hexdigest()
        im.phash = _phash_file(im.path)
    return removals, clipped


def _plan_classes(
    survivors: list[ImageRecord], names: list[str], config: CleanConfig
) -> tuple[_ClassPlan, list[Removal]]:
    """Drop rare or named classes (counted on train's surviving boxes), renumber the rest."""
    counts = Counter(b.class_id for im in survivors if im.split == "train" for b in im.kept)
    gone = rare_classes(counts, names, config.min_count, config.drop_classes)
    if len(gone) == len(names):
        raise ValueError(f"every class would be dropped: {gone}")
    kept_ids = [k for k in range(len(names)) if k not in gone]
    plan = _ClassPlan(names, gone, {k: i for i, k in enumerate(kept_ids)}, counts)
    removals = [
        Removal(
            "rare_class",
            im.split,
            im.label_rel,
            b.line,
            f"class {names[b.class_id]!r} dropped: {gone[b.class_id]}",
        )  # fmt: skip
        for im in survivors
        for b in im.kept
        if b.class_id in gone
    ]
    return plan, removals


def _report(
    root: Path,
    config: CleanConfig,
    images: list[ImageRecord],
    survivors: list[ImageRecord],
    removals: list[Removal],
    conflicts: list[dict],
    clipped: list[dict],
    plan: _ClassPlan,
) -> dict:
    """The report.json content: config, every removal, conflicts, class changes, counts."""
    return {
        "source": os.fspath(root),
        "config": asdict(config),
        "removals": [asdict(r) for r in removals],
        "conflicts": conflicts,
        "clipped": clipped,
        "classes": {
            "before": list(plan.names),
            "after": plan.new_names,
            "dropped": [
                {"name": plan.names[k], "boxes_in_train": plan.train_counts[k], "reason": why}
                for k, why in plan.gone.items()
            ],
            "mapping": {plan.names[k]: v for k, v in plan.mapping.items()},
        },
        "counts": {
            "images_in": len(images),
            "images_out": len(survivors),
            "boxes_in": sum(len(im.boxes) for im in images),
            "boxes_out": sum(b.class_id in plan.mapping for im in survivors for b in im.kept),
            "by_rule": dict(Counter(r.rule for r in removals)),
        },
    }


def _write_clean(
    root: Path, tmp: Path, images: list[ImageRecord], survivors: list[ImageRecord], plan: _ClassPlan
) -> None:
    """Kept images (byte copies), their renumbered labels and masks, data.yaml, fine.txt."""
    for split in {im.split for im in images}:
        (tmp / split / "images").mkdir(parents=True)
        (tmp / split / "labels").mkdir(parents=True)
    lut = plan.lut()
    for im in survivors:
        shutil.copyfile(im.path, tmp / im.rel)
        lines = [
            replace(b, class_id=plan.mapping[b.class_id]).to_line() + "\n"
            for b in im.kept
            if b.class_id in plan.mapping
        ]
        (tmp / im.label_rel).write_text("".join(lines), encoding="utf-8")
        _copy_masks(root, tmp, im, lut, len(plan.names))
    write_class_names(tmp / "data.yaml", plan.new_names)
    fine = root / "fine.txt"
    if fine.is_file():
        kept_train = {im.path.stem for im in survivors if im.split == "train"}
        stems = [s.strip() for s in fine.read_text(encoding="utf-8").split("\n") if s.strip()]
        (tmp / "fine.txt").write_text("".join(f"{s}\n" for s in stems if s in kept_train))


def clean_dataset(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: CleanConfig | None = None,
    **overrides: object,
) -> dict:
    """Write a cleaned copy of the YOLO dataset ``src`` to ``out`` with its report.

    ``out`` gets ``data.yaml`` (classes after dropping), ``{split}/images`` (kept images,
    byte copies), ``{split}/labels`` (kept boxes, renumbered), the index-mask folders among
    `MASK_FOLDERS` renumbered, ``fine.txt`` without dropped stems, and ``report.json`` /
    ``report.csv``. ``out`` is written whole or not at all; ``src`` is never modified (an
    ``out`` that is or contains ``src`` is refused). ``overrides`` replace single
    `CleanConfig` fields. Bad input raises FormatError before anything is written. Returns
    the report.
    """
    config = replace(config or CleanConfig(), **overrides)  # type: ignore[arg-type]
    root, out_path = Path(src), Path(out)
    _check_paths(root, out_path)
    names = read_class_names(root / "data.yaml")
    images = _scan(root, len(names))
    removals, clipped = _judge_images(images, config)
    groups = find_duplicates(images, config.phash_threshold)
    dup_removals, conflicts, dropped = _conflicts(groups, config)
    removals += dup_removals
    survivors = [im for im in images if im.rel not in dropped]
    plan, rare_removals = _plan_classes(survivors, names, config)
    removals += rare_removals
    report = _report(root, config, images, survivors, removals, conflicts, clipped, plan)
    with atomic_directory(out_path) as tmp:
        _write_clean(root, tmp, images, survivors, plan)
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        _write_csv(tmp / "report.csv", removals)
    return report
