"""One progress bar for every long loop (prepare, imports, predict, export, pipe stages).

tqdm on stderr, shown where stderr is a terminal and left out of pipes and log files (CI, `dvc
repro > log`), where a bar redrawn with carriage returns is only noise. ``TQDM_DISABLE=1``
hides every bar, ``TQDM_DISABLE=0`` shows them in a pipe too. (tqdm itself would read any
non-empty value, "0" included, as "disable".)
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")

__all__ = ["bars_disabled", "progress"]

_OFF = {"1", "true", "yes", "on"}
_ON = {"0", "false", "no", "off"}


def bars_disabled() -> bool | None:
    """tqdm's `disable` from TQDM_DISABLE: True (off), False (on) or None (on for a terminal)."""
    value = os.environ.get("TQDM_DISABLE", "").strip().lower()
    if value in _OFF:
        return True
    if value in _ON:
        return False
    if value:
        raise ValueError(f"TQDM_DISABLE: expected 1 (no bars) or 0 (bars), got {value!r}")
    return None


def progress(
    iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "img"
) -> tqdm[T]:
    """`iterable` with a bar named `desc` (`total` where `iterable` has no len())."""
    return tqdm(
        iterable, desc=desc, total=total, unit=unit, dynamic_ncols=True, disable=bars_disabled()
    )
