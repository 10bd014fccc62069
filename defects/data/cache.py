"""Decoded images kept in memory between epochs, up to a byte budget.

Every epoch decodes the same files again (a YOLO mosaic reads nine per picture); where the
split fits in memory, decoding once is free speed. Arrays are returned read-only: the
augmentations make new arrays, and one that tried to write into a cached picture would
otherwise change every later epoch's copy.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import numpy as np


class DecodedCache:
    """`get(key, load)`: the cached array, or `load()`'s, kept while the budget allows."""

    def __init__(self, budget_mb: float = 0.0):
        if budget_mb < 0:
            raise ValueError(f"data.cache_mb: must be >= 0, got {budget_mb}")
        self.budget = int(budget_mb * 2**20)
        self.used = 0
        self.arrays: dict[Hashable, np.ndarray] = {}

    def get(self, key: Hashable, load: Callable[[], np.ndarray]) -> np.ndarray:
        found = self.arrays.get(key)
        if found is not None:
            return found
        array = load()
        if self.used + array.nbytes <= self.budget:
            array.flags.writeable = False
            self.arrays[key] = array
            self.used += array.nbytes
        return array

    def __getstate__(self) -> dict:
        """Loader workers start empty and fill their own (a copy would be pickled per worker)."""
        return {**self.__dict__, "arrays": {}, "used": 0}
