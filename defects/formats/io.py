"""Atomic writers: an interrupted export must never leave a half-written label file or dataset."""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_with",
    "atomic_directory",
    "staged_directory",
    "remove_stale_temps",
]


def _sibling(path: Path, tag: str) -> Path:
    """Hidden, unique name next to `path`: same filesystem, so os.replace/rename is atomic."""
    return path.with_name(f".{path.name}.{tag}-{secrets.token_hex(4)}")


def remove_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Delete the temp siblings of `path` that writers killed before their rename left behind
    (a SIGKILL runs no cleanup); returns them. Called once a new version of `path` is in,
    so a rerun ends with the output and nothing else, however often it was killed."""
    target = Path(path)
    if not target.parent.is_dir():
        return []
    stale = [
        p
        for tag in ("tmp", "old")
        for p in target.parent.glob(f".{glob.escape(target.name)}.{tag}-*")
    ]
    for leftover in stale:
        with contextlib.suppress(OSError):
            _remove(leftover)
    return stale


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to a temp file in the same directory, fsync, then os.replace it in.

    Readers see either the old file or the complete new one. Parent directories are created.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(target, "tmp")
    # os.open with 0o666 lets the umask decide permissions, like a plain open() would
    # (tempfile.mkstemp would force 0o600 on the final file).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Atomically write UTF-8 `text` (see atomic_write_bytes).

    Newlines are written as given (no platform translation) so label files are byte-stable.
    """
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_with(path: str | os.PathLike[str], writer: Callable[[Path], object]) -> Path:
    """Let `writer(tmp)` write a temp sibling of `path`, fsync it, then os.replace it in.

    For writers that want a path rather than bytes: `torch.save(obj, tmp)`, a csv writer on
    `open(tmp, "w", newline="")`, `figure.savefig(tmp)`, `cv2.imwrite(str(tmp), img)`. The temp
    name ends with `path`'s suffix, so writers that pick the format from it work. If `writer`
    raises or leaves no file, the temp file is removed and any old `path` is left untouched.
    Parent directories are created. Returns `path` as a Path.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(target, "tmp")
    tmp = tmp.with_name(tmp.name + target.suffix)
    try:
        writer(tmp)
        if not tmp.is_file():
            raise OSError(f"{target}: the writer left no file (it wrote to {tmp.name}?)")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return target


def _remove(path: Path) -> None:
    """Delete a file, symlink or directory tree."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


@contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a directory under a temp sibling name and swap it into `path` only on success.

    On success an existing `path` is replaced (it is renamed aside, the new tree renamed in,
    then the old one deleted). If the body raises, the temp tree is removed and any old `path`
    is left untouched. `path` must not be an existing regular file.
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"{target}: exists and is not a directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(target, "tmp")
    os.mkdir(tmp, 0o777)  # umask applies, unlike tempfile.mkdtemp's forced 0o700
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    old: Path | None = None
    if target.exists() or target.is_symlink():
        old = _sibling(target, "old")
        os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        if old is not None:
            os.rename(old, target)  # put the previous version back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        _remove(old)
    remove_stale_temps(target)


@contextmanager
def staged_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A folder to write into whose files appear under `path` only if the body succeeds.

    A new `path` is built whole and renamed in (`atomic_directory`). An existing one is
    merged into, not replaced: files written are moved in at the end (same-named files are
    replaced), every other file there is left alone, so pointing an output at a folder that
    also holds the user's images never deletes them.
    """
    target = Path(path)
    if not target.exists():
        with atomic_directory(target) as tmp:
            yield tmp
        return
    if not target.is_dir():
        raise NotADirectoryError(f"{target}: exists and is not a directory")
    tmp = Path(tempfile.mkdtemp(prefix=".staging-", dir=target))
    try:
        yield tmp
        for item in sorted(tmp.rglob("*")):
            if item.is_dir():
                continue
            dest = target / item.relative_to(tmp)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(item, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
