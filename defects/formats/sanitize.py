"""Safe file names for a dataset folder: ASCII, lower case, no spaces, no collisions.

Factory images arrive as "Дефект 1.JPG" or "Scan (copy).png"; CVAT, YOLO tools, shells and
Windows/Linux round trips choke on such names. `plan_sanitize` works out renames without
touching anything (so a dry run can show them), `apply_sanitize` carries them out without
ever overwriting a file and records every rename in renames.csv, so nothing is lost.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import os
import re
import secrets
import unicodedata
from collections import defaultdict
from pathlib import Path

from defects.formats.io import atomic_write_text
from defects.formats.layout import IMAGE_SUFFIXES

__all__ = ["RENAMES_CSV", "sanitize_name", "plan_sanitize", "apply_sanitize"]

RENAMES_CSV = "renames.csv"

# Russian, Ukrainian and Belarusian letters, GOST 7.79-2000 system B style without
# diacritics or apostrophes (the hard and soft signs are dropped).
_CYRILLIC = {
    "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ё": "e", "ж": "zh",
    "з": "z", "и": "i", "й": "y", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o",
    "п": "p", "р": "r", "с": "s", "т": "t", "у": "u", "ф": "f", "х": "kh", "ц": "ts",
    "ч": "ch", "ш": "sh", "щ": "shch", "ъ": "", "ы": "y", "ь": "", "э": "e", "ю": "yu",
    "я": "ya", "і": "i", "ї": "yi", "є": "ye", "ґ": "g", "ў": "u",
}  # fmt: skip
_UNSAFE = re.compile(r"[^a-z0-9_-]+")
_REPEATS = re.compile(r"([_-])\1+")

Rename = tuple[Path, Path]


def _ascii(text: str) -> str:
    """Cyrillic by the table, other letters by NFKD decomposition minus what is not ASCII."""
    spelled = "".join(_CYRILLIC.get(ch.lower(), ch) for ch in text)
    return unicodedata.normalize("NFKD", spelled).encode("ascii", "ignore").decode("ascii")


def _clean(text: str) -> str:
    """Lower-case ASCII with runs of anything unsafe as one `_`, no separators at the ends."""
    cleaned = _UNSAFE.sub("_", _ascii(text).lower())
    return _REPEATS.sub(r"\1", cleaned).strip("_-")


def _suffix(name: str) -> str:
    clean = _clean(Path(name).suffix[1:])
    return f".{clean}" if clean else ""


def _stem(name: str) -> str:
    return _clean(Path(name).stem) or "file"


def sanitize_name(name: str) -> str:
    """The safe form of one file name, collisions aside: "Дефект 1.JPG" -> "defekt_1.jpg".

    Idempotent: a safe name maps to itself.
    """
    return _stem(name) + _suffix(name)


def _files(root: Path) -> list[Path]:
    """Files under `root` (relative, sorted), leaving out hidden ones and our renames.csv."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        base = Path(dirpath).relative_to(root)
        for name in sorted(filenames):
            rel = base / name
            if not name.startswith(".") and rel != Path(RENAMES_CSV):
                found.append(rel)
    return found


def _units(files: list[Path]) -> list[list[Path]]:
    """Files that must share a new stem: an image, then same-stem non-images next to it and,
    for an `images/` folder, same-stem files in the sibling `labels/` (the YOLO layout).

    When several images share a stem (a.jpg, a.png) the companions go with the one keeping
    its name if any, else the first by name; every other file is a unit of its own.
    """
    by_stem: dict[tuple[Path, str], list[Path]] = defaultdict(list)
    for rel in files:
        by_stem[(rel.parent, rel.stem)].append(rel)
    claimed: set[Path] = set()
    units = []
    images = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
    images.sort(key=lambda f: (sanitize_name(f.name) != f.name, str(f)))
    for image in images:
        if image in claimed:
            continue
        unit = [image]
        claimed.add(image)
        places = [image.parent]
        if image.parent.name == "images":
            places.append(image.parent.parent / "labels")
        for place in places:
            for other in by_stem.get((place, image.stem), []):
                if other not in claimed and other.suffix.lower() not in IMAGE_SUFFIXES:
                    unit.append(other)
                    claimed.add(other)
        units.append(unit)
    units.extend([f] for f in files if f not in claimed)
    return sorted(units, key=lambda u: str(u[0]))


def _targets(unit: list[Path], stem: str) -> list[Path]:
    return [rel.with_name(stem + _suffix(rel.name)) for rel in unit]


def plan_sanitize(folder: str | os.PathLike[str]) -> list[Rename]:
    """The renames (old, new; relative to `folder`) that make every file name safe.

    Nothing is touched. Names already safe stay, and reserve their names first; the others
    take their safe name, or `<name>_1`, `<name>_2`, ... where that is taken in any folder
    of its unit (compared case-insensitively, as Windows and macOS do), in name order, so
    the plan is deterministic. Label files follow their images. Directories keep their names.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: folder not found")
    units = _units(_files(root))
    moving = [u for u in units if _targets(u, _stem(u[0].name)) != u]
    leaving = {rel for unit in moving for rel in unit}
    taken: dict[Path, set[str]] = defaultdict(set)
    for rel in {rel.parent for unit in units for rel in unit}:
        for entry in (root / rel).iterdir():
            if rel / entry.name not in leaving:
                taken[rel].add(entry.name.lower())
    plan: list[Rename] = []
    for unit in moving:
        base = _stem(unit[0].name)
        for n in itertools.count():
            targets = _targets(unit, base if n == 0 else f"{base}_{n}")
            if all(t.name.lower() not in taken[t.parent] for t in targets):
                break
        for old, new in zip(unit, targets, strict=True):
            taken[new.parent].add(new.name.lower())
            if old != new:
                plan.append((old, new))
    return plan


def _check_plan(root: Path, plan: list[Rename]) -> None:
    """Refuse, before touching anything, a plan that would overwrite or lose a file."""
    olds = {old for old, _ in plan}
    news: set[tuple[Path, str]] = set()
    for old, new in plan:
        if old.is_absolute() or new.is_absolute() or ".." in old.parts + new.parts:
            raise ValueError(f"rename {old} -> {new}: paths must be relative to {root}")
        if old.parent != new.parent:
            raise ValueError(f"rename {old} -> {new}: renames stay in their folder")
        if not os.path.lexists(root / old):
            raise FileNotFoundError(f"{root / old}: not found (the folder changed since the plan?)")
        key = (new.parent, new.name.lower())
        if key in news:
            raise ValueError(f"rename {old} -> {new}: two files would get that name")
        news.add(key)
    for parent in {new.parent for _, new in plan}:
        staying = {
            e.name.lower(): e.name for e in (root / parent).iterdir() if parent / e.name not in olds
        }
        for _, new in plan:
            if new.parent == parent and new.name.lower() in staying:
                existing = staying[new.name.lower()]
                raise FileExistsError(f"{root / parent / existing}: exists; not overwriting")


def _move_no_replace(src: Path, dst: Path) -> None:
    """Rename that fails if `dst` exists: a hard link cannot replace a file (atomic), with a
    check-then-rename fallback where the file system has no hard links."""
    try:
        os.link(src, dst, follow_symlinks=False)
    except FileExistsError:
        raise FileExistsError(f"{dst}: exists; not overwriting") from None
    except OSError:
        if os.path.lexists(dst):
            raise FileExistsError(f"{dst}: exists; not overwriting") from None
        os.rename(src, dst)
        return
    os.unlink(src)


def apply_sanitize(folder: str | os.PathLike[str], plan: list[Rename]) -> Path:
    """Carry out `plan` (from plan_sanitize) and append it to `folder/renames.csv` (old,new).

    Two phases: every file first gets a unique temporary name, then its new name, so chains
    (a -> b, b -> c) and swaps are safe and case-only renames work on case-insensitive file
    systems. Nothing is ever overwritten; on any error the files done so far are moved back.
    Returns the renames.csv path.
    """
    root = Path(folder)
    _check_plan(root, plan)
    token = secrets.token_hex(4)
    temps = [old.with_name(f".sanitize-{token}-{i}") for i, (old, _) in enumerate(plan)]
    where = [old for old, _ in plan]  # each file's current relative path
    try:
        for i, (old, _) in enumerate(plan):
            _move_no_replace(root / old, root / temps[i])
            where[i] = temps[i]
        for i, (_, new) in enumerate(plan):
            _move_no_replace(root / temps[i], root / new)
            where[i] = new
    except BaseException:
        for i, (old, _) in reversed(list(enumerate(plan))):
            if where[i] != old:
                with contextlib.suppress(OSError):
                    _move_no_replace(root / where[i], root / old)
        raise
    return _log_renames(root / RENAMES_CSV, plan)


def _log_renames(path: Path, plan: list[Rename]) -> Path:
    """Append the renames to renames.csv (header once), so earlier runs stay recorded."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    previous = path.read_text(encoding="utf-8") if path.is_file() else ""
    if not previous:
        writer.writerow(["old", "new"])
    elif not previous.endswith("\n"):
        buffer.write("\n")
    writer.writerows([old.as_posix(), new.as_posix()] for old, new in plan)
    atomic_write_text(path, previous + buffer.getvalue())
    return path
