"""Which images a report figure shows: the ones that teach something.

The first images of a split are often all defect-free and show nothing. Instead every
evaluated image yields candidates (a found defect with its IoU, a missed one, a false alarm
with its score, a clean image left empty), and `pick_examples` takes, per row of the figure
(a class, or the whole split), the best and worst of each kind. Pure and kind-agnostic:
detection and segmentation differ only in the candidates and slots they pass in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    """One thing an image could be shown for: `outcome` (e.g. "hit", "miss"), the row it
    belongs to (`group`: a class name, or "" for the whole split), the number it is ranked
    by (`value`: IoU, Dice, a score) and, optionally, the box it is about (x1, y1, x2, y2)."""

    index: int
    group: str
    outcome: str
    value: float
    box: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class Slot:
    """A panel of a row: the candidates of `outcome`, the one with the highest `value`
    (`highest`) or the lowest. `title` and `absent` are formatted with `group`, `value`
    and `outcome` (e.g. "{group}: worst miss (IoU {value:.2f})")."""

    outcome: str
    highest: bool
    title: str
    absent: str


@dataclass(frozen=True)
class Panel:
    """A picked panel: `candidate` None when the split has nothing for its slot; `title`
    then says so."""

    slot: Slot
    group: str
    candidate: Candidate | None
    title: str


def pick_examples(
    candidates: Sequence[Candidate], rows: Sequence[tuple[str, Sequence[Slot]]]
) -> list[list[Panel]]:
    """One panel per slot of each row (`rows`: (group, slots)), from the candidates of that
    group and outcome: the highest or lowest value, ties to the earliest image (then the
    earliest candidate). A candidate already shown in its row is not picked again (with a
    single defective strip, "highest" and "lowest Dice" would be one panel twice)."""
    pools: dict[tuple[str, str], list[tuple[int, Candidate]]] = {}
    for k, c in enumerate(candidates):
        pools.setdefault((c.group, c.outcome), []).append((k, c))
    picked: list[list[Panel]] = []
    for group, slots in rows:
        shown: set[int] = set()
        row = []
        for slot in slots:
            pool = [kc for kc in pools.get((group, slot.outcome), []) if kc[0] not in shown]
            sign = -1.0 if slot.highest else 1.0
            best = min(pool, key=lambda kc: (sign * kc[1].value, kc[1].index, kc[0]), default=None)
            if best is None:
                title = slot.absent.format(group=group, outcome=slot.outcome, value=float("nan"))
                row.append(Panel(slot, group, None, title))
                continue
            shown.add(best[0])
            chosen = best[1]
            title = slot.title.format(group=group, outcome=slot.outcome, value=chosen.value)
            row.append(Panel(slot, group, chosen, title))
        picked.append(row)
    return picked


def picked_indices(rows: Sequence[Sequence[Panel]]) -> list[int]:
    """The images the panels show, each once, in split order (what to decode for drawing)."""
    return sorted({p.candidate.index for row in rows for p in row if p.candidate is not None})
