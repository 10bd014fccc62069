"""Errors and skip bookkeeping shared by the annotation readers.

Bad annotations are common in real defect datasets; every problem must point at the exact file
and line so it can be fixed, and a lenient reader must count what it dropped instead of hiding it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

logger = logging.getLogger("defects")

__all__ = ["FormatError", "SkipReport", "first_few", "handle", "note_clipped"]


class FormatError(ValueError):
    """Bad input: message names the file and, when known, the line."""

    def __init__(self, path: str | os.PathLike[str], message: str, line: int | None = None):
        self.path = os.fspath(path)
        self.line = line
        self.reason = message
        super().__init__(self._render())

    def _render(self) -> str:
        if self.line is None:
            return f"{self.path}: {self.reason}"
        return f"{self.path}:{self.line}: {self.reason}"

    def __str__(self) -> str:
        return self._render()

    def __reduce__(self) -> tuple[type[FormatError], tuple[str, str, int | None]]:
        # Default exception pickling replays self.args, which holds the rendered text only;
        # keep the structured fields so errors survive multiprocessing data loaders.
        return (type(self), (self.path, self.reason, self.line))


@dataclass
class SkipReport:
    """Counts what a non-strict reader skipped so the user sees it instead of losing it silently."""

    items: list[FormatError] = field(default_factory=list)
    # (file, boxes clipped in it): kept, not skipped, but counted so rounding fixes stay visible
    clipped: list[tuple[str, int]] = field(default_factory=list)

    def add(self, error: FormatError) -> None:
        """Record a skipped item and warn right away, so long runs show problems as they happen."""
        self.items.append(error)
        logger.warning("skipped: %s", error)

    @property
    def count(self) -> int:
        """Number of skipped items (lines, objects, images or files, whatever the reader drops)."""
        return len(self.items)

    def add_clipped(self, path: str | os.PathLike[str], count: int) -> None:
        """Record that `count` boxes of one file were clipped to the image (see note_clipped)."""
        if count > 0:
            self.clipped.append((os.fspath(path), int(count)))

    @property
    def clipped_count(self) -> int:
        """Boxes clipped to the image over all files (they are kept, so not part of `count`)."""
        return sum(n for _, n in self.clipped)

    def summary(self, limit: int = 10) -> str:
        """Human-readable digest; capped at `limit` entries so huge reports stay readable."""
        lines = [f"{self.count} items skipped" + (":" if self.items else "")]
        lines.extend(f"  {err}" for err in self.items[: max(limit, 0)])
        hidden = self.count - min(self.count, max(limit, 0))
        if hidden:
            lines.append(f"  ... and {hidden} more")
        if self.clipped:
            lines.append(
                f"{self.clipped_count} boxes clipped to the image in {len(self.clipped)} files"
            )
        return "\n".join(lines)


def handle(error: FormatError, strict: bool, report: SkipReport | None) -> None:
    """Raise `error` if strict, else record it in `report` (or just warn when there is none)."""
    if strict:
        raise error
    if report is not None:
        report.add(error)
    else:
        logger.warning("skipped: %s", error)


def note_clipped(
    path: str | os.PathLike[str], count: int, detail: str, report: SkipReport | None
) -> None:
    """Warn once for a file whose `count` boxes were clipped to the image, and count them.

    Clipping is not an error (strict readers clip too): annotation tools overshoot the border
    by float rounding. `detail` says by how much, e.g. "by up to 0.0004 (normalised)".
    """
    if count <= 0:
        return
    logger.warning("%s: clipped %d box(es) to the image, %s", os.fspath(path), count, detail)
    if report is not None:
        report.add_clipped(path, count)


def first_few(items: Sequence[object], limit: int = 5) -> str:
    """'a, b, c, ...': the first `limit` items of a list a warning points at."""
    return ", ".join(map(str, items[:limit])) + (", ..." if len(items) > limit else "")
