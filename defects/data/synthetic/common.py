"""Drawing and sampling pieces every synthetic generator shares (weld, steel, ...)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np

from defects.formats.io import atomic_directory

# Re-exported: the generators import SPLITS from here.
from defects.formats.layout import SPLITS as SPLITS
from defects.progress import progress

Job = TypeVar("Job")
Result = TypeVar("Result")


def smooth_1d(
    rng: np.random.Generator, n: int, amplitude: float, periods: Sequence[float]
) -> np.ndarray:
    """Sum of random-phase sinusoids: cheap smooth wobble for the bead edges and centre line."""
    x = np.arange(n, dtype=np.float32)
    out = np.zeros(n, dtype=np.float32)
    for period in periods:
        phase = rng.uniform(0.0, 2.0 * math.pi)
        amp = rng.uniform(0.4, 1.0) * amplitude
        out += amp * np.sin(2.0 * math.pi * x / (period * rng.uniform(0.8, 1.25)) + phase)
    return out


SHIFT = 4  # cv2 fixed-point bits for sub-pixel drawing
SCALE = 1 << SHIFT


def fixed_point(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Float polyline -> cv2 fixed-point int32 points."""
    return np.round(np.stack([xs, ys], axis=1) * SCALE).astype(np.int32).reshape(-1, 1, 2)


def along(rng: np.random.Generator, n: int, lo: float) -> np.ndarray:
    """Smoothly varying strength in [lo, 1] along a line: real flaws are not uniformly open."""
    t = np.linspace(0.0, 1.0, n)
    wave = 0.5 + 0.5 * np.sin(2 * math.pi * (rng.uniform(0.7, 2.2) * t + rng.uniform(0, 1)))
    return lo + (1.0 - lo) * wave


def draw_polyline(
    mask: np.ndarray, xs: np.ndarray, ys: np.ndarray, values: np.ndarray, thickness: np.ndarray
) -> None:
    """Draw a polyline segment by segment so darkness and width can vary along it."""
    pts = fixed_point(xs, ys).reshape(-1, 2)
    for i in range(len(pts) - 1):
        p, q = (int(pts[i, 0]), int(pts[i, 1])), (int(pts[i + 1, 0]), int(pts[i + 1, 1]))
        cv2.line(mask, p, q, float(values[i]), int(thickness[i]), cv2.LINE_AA, SHIFT)


def normalized_weights(
    class_names: Sequence[str], class_weights: Sequence[float] | None
) -> np.ndarray:
    """Class sampling probabilities; default equal, zero weight = class never drawn."""
    if class_weights is None:
        return np.full(len(class_names), 1.0 / len(class_names))
    w = np.asarray(list(class_weights), dtype=np.float64)
    if w.shape != (len(class_names),):
        raise ValueError(f"class_weights needs {len(class_names)} values, got {len(w)}")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"class_weights must be non-negative with a positive sum, got {list(w)}")
    return w / w.sum()


def check_split_args(
    n_train: int, n_valid: int, n_test: int, defect_free_fraction: float, max_defects: int
) -> dict[str, int]:
    """Validate the knobs every generator shares; return the image count per split."""
    counts = {"train": int(n_train), "valid": int(n_valid), "test": int(n_test)}
    if any(n < 0 for n in counts.values()):
        raise ValueError(f"split sizes must be >= 0, got {counts}")
    if not 0.0 <= defect_free_fraction <= 1.0:
        raise ValueError(f"defect_free_fraction must be in [0, 1], got {defect_free_fraction}")
    if max_defects < 1:
        raise ValueError(f"max_defects must be >= 1, got {max_defects}")
    return counts


def plan_split(
    seed: int,
    split_index: int,
    n: int,
    defect_free_fraction: float,
    max_defects: int,
    weights: np.ndarray,
) -> list[tuple[np.random.Generator, list[int]]]:
    """Per image of one split: its own child RNG and the class indices of its defects.

    Split-level choices come from `default_rng([seed, split_index])`; each image then gets a
    spawned child RNG, so images can be rendered by several threads and stay byte-identical.
    An exact, seeded subset is defect-free so the fraction holds even for tiny splits.
    """
    rng = np.random.default_rng([seed, split_index])
    free = np.zeros(n, dtype=bool)
    free[rng.permutation(n)[: int(round(defect_free_fraction * n))]] = True
    plan = []
    for i, child in enumerate(rng.spawn(n)):
        classes: list[int] = []
        if not free[i]:
            k = int(rng.integers(1, max_defects + 1))
            classes = [int(j) for j in rng.choice(len(weights), size=k, p=weights)]
        plan.append((child, classes))
    return plan


def check_class_names(class_names: Sequence[str], known: Iterable[str]) -> list[str]:
    """The class names as strings: non-empty, unique, each one the generator can draw."""
    names = [str(n) for n in class_names]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"class_names must be non-empty and unique, got {names}")
    known = list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"no renderer for classes {unknown}; known: {known}")
    return names


def check_size(width: int, height: int, min_width: int, min_height: int) -> None:
    """Defect sizes are in pixels, so an image below a generator's minimum cannot hold them."""
    if width < min_width or height < min_height:
        raise ValueError(f"image must be at least {min_width}x{min_height}, got {width}x{height}")


# --------------------------------------------------------------------------- split writer


@dataclass(frozen=True)
class Split:
    """One split being written: ``index`` is its place in SPLITS, the key of its seed."""

    index: int
    name: str
    count: int  # images (or videos) the generator was asked for
    root: Path  # the dataset root being written, not yet in place

    @property
    def dir(self) -> Path:
        """The split's own folder, ``root/name``."""
        return self.root / self.name


class SplitWriter:
    """The dataset root being written, its splits in order and the threads that render them."""

    def __init__(
        self,
        root: Path,
        pool: Executor,
        counts: Mapping[str, int],
        folders: Sequence[str],
        name: str = "",
    ) -> None:
        self.root = root
        self._pool = pool
        self._counts = counts
        self._folders = folders
        self._name = name  # the dataset's, for the progress bars
        self._split = ""

    def splits(self) -> Iterator[Split]:
        """train, valid, test, each once its folders (``folders`` with ``{split}``) exist."""
        for index, name in enumerate(SPLITS):
            for folder in self._folders:
                (self.root / folder.format(split=name)).mkdir(parents=True)
            self._split = name
            yield Split(index, name, self._counts[name], self.root)

    def map(
        self,
        make: Callable[[Job], Result],
        jobs: Iterable[Job],
        desc: str | None = None,
        unit: str = "img",
    ) -> Iterator[Result]:
        """``make`` over ``jobs`` on the writer's threads, results in job order, with a
        progress bar (``desc``, default ``<dataset>/<split>``).

        The first failure is re-raised. Each job carries its own RNG, so what is written does
        not depend on which thread ran it or when.
        """
        jobs = list(jobs)
        desc = desc or "/".join(filter(None, (self._name, self._split)))
        return iter(progress(self._pool.map(make, jobs), desc, total=len(jobs), unit=unit))


@contextmanager
def split_writer(
    out_dir: str | Path, counts: Mapping[str, int], folders: Sequence[str]
) -> Iterator[SplitWriter]:
    """Write a generated dataset whole or not at all, two render threads at a time.

    The body writes under ``writer.root``, a temporary sibling that replaces ``out_dir`` only
    when the body succeeds. Two threads: numpy, cv2 and PNG/fsync I/O release the GIL, and a
    laptop has at least two cores. ``folders`` are made per split, e.g. ``"{split}/images"``.
    """
    with atomic_directory(out_dir) as tmp, ThreadPoolExecutor(max_workers=2) as pool:
        yield SplitWriter(Path(tmp), pool, counts, folders, Path(out_dir).name)
