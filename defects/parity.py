"""Compare two backends' detections of one image (eager vs ONNX): pair them, then measure.

NMS orders equal scores arbitrarily, and scores or coordinates that differ by 1e-6 can fall
either side of any rounding used as a sort key, so sorting both lists and comparing row by
row flips rows now and then. Pairing each detection with the nearest unpaired one of its
class on the other side is order-free (boxes that survive NMS lie far apart compared with
a backend's 1e-3 px): what remains is the real difference.
"""

from __future__ import annotations

import numpy as np

from defects.results import Detections

__all__ = ["max_differences", "pair_detections"]


def pair_detections(a: Detections, b: Detections) -> tuple[np.ndarray, np.ndarray]:
    """Indices (ia, ib) pairing ``a`` with ``b`` one to one: each detection of ``a``, in
    order, takes the unpaired one of ``b`` of its class whose largest coordinate difference
    is smallest. ValueError if the counts differ or some detection has no partner."""
    if len(a) != len(b):
        raise ValueError(f"detection counts differ: {len(a)} vs {len(b)}")
    boxes_a, boxes_b = np.asarray(a.boxes, float), np.asarray(b.boxes, float)
    classes_a, classes_b = np.asarray(a.class_ids), np.asarray(b.class_ids)
    free = np.ones(len(b), bool)
    ib = np.zeros(len(a), int)
    for i in range(len(a)):
        candidates = np.flatnonzero(free & (classes_b == classes_a[i]))
        if not len(candidates):
            raise ValueError(f"detection {i} (class {classes_a[i]}) has no partner")
        cost = np.abs(boxes_b[candidates] - boxes_a[i]).max(axis=1)
        ib[i] = candidates[int(np.argmin(cost))]
        free[ib[i]] = False
    return np.arange(len(a)), ib


def max_differences(a: Detections, b: Detections) -> tuple[float, float]:
    """(largest box-coordinate difference in px, largest score difference) over the pairs."""
    ia, ib = pair_detections(a, b)
    if not len(ia):
        return 0.0, 0.0
    box = float(np.abs(np.asarray(a.boxes)[ia] - np.asarray(b.boxes)[ib]).max())
    score = float(np.abs(np.asarray(a.scores)[ia] - np.asarray(b.scores)[ib]).max())
    return box, score
