"""What a predictor returns, and the JSON rows, tables and overlays every front end shows.

Defined once here (no torch, no web server), so `defects predict`, the Flask page, the stream,
prelabel and the benchmark format a result the same way and never ask which kind of result
they hold. A kind whose results are neither boxes nor masks adds its own class with the
methods of `Result`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np


class Result(Protocol):
    """The face every front end relies on; `class_names` gives the legend."""

    class_names: list[str]

    def record(self) -> dict[str, Any]:
        """JSON-ready description of the result (full precision)."""

    def table(self) -> tuple[list[str], list[tuple[int, list[Any]]]]:
        """(column headers, rows of (class id for the colour swatch, cells))."""

    def headline(self) -> str:
        """One sentence a person reads first."""

    def overlay(self, image: np.ndarray) -> np.ndarray:
        """RGB uint8 copy of `image` with the result drawn on it."""

    def above(self, threshold: float) -> Result:
        """The result a stricter main threshold (the predictor's `main_threshold`: a box's
        score, a segmenter's gate) would have given; a looser one cannot add anything back."""

    def counts(self) -> dict[str, int]:
        """Findings per class name (boxes, or 1 per class a mask shows); absent classes left
        out."""

    def as_boxes(self) -> Detections:
        """The findings as boxes in original pixels (what a CVAT pre-label holds)."""


@dataclass
class Detections:
    """Boxes in original pixels (x1, y1, x2, y2), class names, class ids (0-based), scores."""

    boxes: np.ndarray
    labels: list[str]
    class_ids: np.ndarray
    scores: np.ndarray
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.scores)

    def above(self, threshold: float) -> Detections:
        """The detections scoring at least `threshold` (the predictor's own cut)."""
        keep = self.scores >= threshold
        return Detections(
            self.boxes[keep],
            [label for label, k in zip(self.labels, keep, strict=True) if k],
            self.class_ids[keep],
            self.scores[keep],
            self.class_names,
        )

    def counts(self) -> dict[str, int]:
        """Boxes per class name; classes without a box left out."""
        return dict(Counter(self.labels))

    def as_boxes(self) -> Detections:
        """The detections themselves (they are boxes already)."""
        return self

    @classmethod
    def empty(cls, class_names: list[str]) -> Detections:
        """No detection: what an image without findings gives."""
        return cls(
            np.zeros((0, 4), np.float32), [], np.zeros(0, np.int64), np.zeros(0), class_names
        )

    def rows(self) -> list[dict[str, Any]]:
        """One {label, class_id, score, box} per detection, unrounded: metrics recomputed
        from `defects predict` output must equal the evaluation's."""
        return [
            {
                "label": label,
                "class_id": int(c),
                "score": float(s),
                "box": [float(v) for v in box],
            }
            for label, c, s, box in zip(
                self.labels, self.class_ids, self.scores, self.boxes, strict=True
            )
        ]

    def record(self) -> dict[str, Any]:
        """`{"detections": rows()}`: what `defects predict` writes per image."""
        return {"detections": self.rows()}

    def table(self) -> tuple[list[str], list[tuple[int, list[Any]]]]:
        """Class, score and box per detection, rounded for people (the web page's table)."""
        rows = [
            (int(r["class_id"]), [r["label"], f"{r['score']:.3f}", [round(v, 1) for v in r["box"]]])
            for r in self.rows()
        ]
        return ["class", "score", "box (x1, y1, x2, y2)"], rows

    def headline(self) -> str:
        """How many boxes, in words."""
        return f"{len(self)} detection(s)."

    def overlay(self, image: np.ndarray) -> np.ndarray:
        """RGB copy of `image` with each box, its class name and score drawn."""
        from defects.plots import draw_boxes_rgb

        class_ids, scores = self.class_ids.tolist(), self.scores.tolist()
        return draw_boxes_rgb(image, self.boxes, class_ids, self.labels, scores)


@dataclass
class SegmentationResult:
    """Masks [K, H, W] bool at the input's size, the gate's probability, class names."""

    masks: np.ndarray
    gate: float
    class_names: list[str]
    gate_threshold: float = 0.0

    @property
    def present(self) -> list[str]:
        """The class names whose mask has at least one pixel."""
        return [name for name, mask in zip(self.class_names, self.masks, strict=True) if mask.any()]

    def areas(self) -> dict[str, int]:
        """Mask pixels per class name, every class listed."""
        return {n: int(m.sum()) for n, m in zip(self.class_names, self.masks, strict=True)}

    def above(self, threshold: float) -> SegmentationResult:
        """Every mask dropped when the gate's probability is below `threshold`."""
        threshold = max(float(threshold), self.gate_threshold)
        masks = self.masks if self.gate >= threshold else np.zeros_like(self.masks)
        return replace(self, masks=masks, gate_threshold=threshold)

    def counts(self) -> dict[str, int]:
        """1 per class whose mask shows something (a mask is one finding)."""
        return {name: 1 for name in self.present}

    def as_boxes(self) -> Detections:
        """One box per connected region (8-connected) of each class's mask, scored with the
        gate's probability, ordered by class then by OpenCV's label order."""
        from defects.formats.mask_folder import mask_components

        boxes, ids = [], []
        for class_id, mask in enumerate(self.masks):
            for x, y, w, h, _ in mask_components(mask) if mask.any() else []:
                boxes.append([x, y, x + w, y + h])
                ids.append(class_id)
        if not boxes:
            return Detections.empty(self.class_names)
        return Detections(
            np.asarray(boxes, np.float32),
            [self.class_names[i] for i in ids],
            np.asarray(ids, np.int64),
            np.full(len(ids), self.gate, np.float64),
            self.class_names,
        )

    def index_mask(self) -> np.ndarray:
        """(H, W) uint8, 0 = background; classes are painted in id order, so where masks
        overlap the higher class id wins."""
        if len(self.masks) > 255:
            raise ValueError(f"{len(self.masks)} classes do not fit a uint8 index mask")
        index = np.zeros(self.masks.shape[1:], dtype=np.uint8)
        for class_id, mask in enumerate(self.masks, start=1):
            index[mask] = class_id
        return index

    def record(self) -> dict[str, Any]:
        """Only present classes, each with its area and Severstal RLE; `shape` because an RLE
        cannot be decoded without the image size."""
        from defects.formats.severstal import rle_encode

        return {
            "gate": round(self.gate, 6),
            "shape": list(self.masks.shape[1:]),
            "classes": {
                cls: {"area": int(mask.sum()), "rle": rle_encode(mask)}
                for cls, mask in zip(self.class_names, self.masks, strict=True)
                if mask.any()
            },
        }

    def table(self) -> tuple[list[str], list[tuple[int, list[Any]]]]:
        """Class and area in pixels, every class (the web page's table)."""
        rows = [(k, [cls, area]) for k, (cls, area) in enumerate(self.areas().items())]
        return ["class", "area (pixels)"], rows

    def headline(self) -> str:
        """The gate's probability and threshold, and the classes found."""
        verdict = ", ".join(self.present) or "no defect"
        return (
            f"Gate probability {self.gate:.3f} (threshold {self.gate_threshold:.2f}). "
            f"Found: {verdict}."
        )

    def overlay(self, image: np.ndarray) -> np.ndarray:
        """RGB copy of `image` with each class's mask tinted in its colour."""
        from defects.plots import overlay_masks

        return overlay_masks(image, self.masks)
