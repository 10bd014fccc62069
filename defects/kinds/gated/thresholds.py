"""Thresholds that turn gate and mask probabilities into masks, and their search on Dice.

The same `binarize` runs in evaluation, the predictor (eager and ONNX) and the training
module's validation, so what is tuned is what is served.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc

from defects.metrics.segmentation import false_alarm_at_recall


@dataclass
class Thresholds:
    """Gate threshold, then per class: pixel probability threshold and minimum mask area."""

    gate: float
    pixel: list[float]
    min_area: list[int]

    def as_dict(self) -> dict[str, Any]:
        return {"gate": self.gate, "pixel": list(self.pixel), "min_area": list(self.min_area)}

    @classmethod
    def from_dict(cls, values: dict[str, Any], num_classes: int) -> Thresholds:
        """A scalar applies to every class; a list must have one value per class."""

        def per_class(key: str, default: float, kind: type) -> list:
            value = values.get(key, default)
            if not isinstance(value, Sequence):
                return [kind(value)] * num_classes
            if len(value) != num_classes:
                raise ValueError(f"thresholds.{key}: {len(value)} values for {num_classes} classes")
            return [kind(v) for v in value]

        return cls(
            float(values.get("gate", 0.5)),
            per_class("pixel", 0.5, float),
            per_class("min_area", 0, int),
        )


def binarize(gate: torch.Tensor, masks: torch.Tensor, thresholds: Thresholds) -> torch.Tensor:
    """Bool masks [N, K, H, W]: pixel threshold per class, masks under min_area dropped, and
    every mask of an image the gate rejects dropped."""
    pixel = masks.new_tensor(thresholds.pixel).view(1, -1, 1, 1)
    binary = masks >= pixel
    area = binary.flatten(2).sum(-1)
    keep = area >= area.new_tensor(thresholds.min_area).view(1, -1)
    keep &= (gate.max(dim=1).values >= thresholds.gate)[:, None]
    return binary & keep[:, :, None, None]


@dataclass
class ThresholdSearch:
    """Collects per-pair statistics on validation data, then picks the thresholds with the
    best Kaggle Dice on a grid: only counts are kept (no probability maps), so it streams.

    Gate thresholds tried: 0 (all pass) and cuts midway between neighbouring observed gate
    scores (at most `gate_cuts`, spread over the score quantiles), each as far as possible from
    the strips on both sides of it. A gate trained from scratch is often badly calibrated
    (every strip between 0.13 and 0.32, say) yet well ordered; a fixed 0.1 grid would see
    only "all pass" there.
    """

    pixel_grid: Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    area_grid: Sequence[int] = (0, 64, 256, 512, 1024, 2048, 4096)
    gate_cuts: int = 64
    counts: list[torch.Tensor] = field(default_factory=list)
    overlaps: list[torch.Tensor] = field(default_factory=list)
    truths: list[torch.Tensor] = field(default_factory=list)
    gates: list[torch.Tensor] = field(default_factory=list)

    def update(self, gate: torch.Tensor, masks: torch.Tensor, truth: torch.Tensor) -> None:
        truth = truth.bool()
        counts, overlaps = [], []
        for threshold in self.pixel_grid:
            binary = masks >= threshold
            counts.append(binary.flatten(2).sum(-1))
            overlaps.append((binary & truth).flatten(2).sum(-1))
        self.counts.append(torch.stack(counts, -1).double())  # [N, K, T]
        self.overlaps.append(torch.stack(overlaps, -1).double())
        self.truths.append(truth.flatten(2).sum(-1).double())  # [N, K]
        self.gates.append(gate.max(dim=1).values.double())  # [N]

    def pair_dice(self, gate_threshold: float) -> torch.Tensor:
        """Dice per (image, class, pixel threshold, min area) -> [N, K, T, A]."""
        counts, overlaps = torch.cat(self.counts), torch.cat(self.overlaps)
        truth = torch.cat(self.truths)[:, :, None, None]
        area = counts.new_tensor(list(self.area_grid)).view(1, 1, 1, -1)
        opened = (torch.cat(self.gates) >= gate_threshold)[:, None, None, None]
        kept = (counts[..., None] >= area) & opened
        pred = torch.where(kept, counts[..., None], torch.zeros_like(kept, dtype=counts.dtype))
        inter = torch.where(kept, overlaps[..., None], torch.zeros_like(pred))
        total = pred + truth
        return torch.where(total == 0, torch.ones_like(total), 2 * inter / total.clamp(min=1))

    def gate_candidates(self) -> list[float]:
        """0 and the midpoints between neighbouring observed gate scores, ascending."""
        scores = torch.unique(torch.cat(self.gates))  # sorted
        cuts = (scores[1:] + scores[:-1]) / 2
        if len(cuts) > self.gate_cuts:
            cuts = cuts[torch.linspace(0, len(cuts) - 1, self.gate_cuts).round().long()]
        return sorted({0.0} | {round(float(c), 6) for c in cuts})

    def best(self) -> tuple[Thresholds, float]:
        """The grid point with the highest mean pair Dice (gate shared, the rest per class)."""
        if not self.counts:
            raise ValueError("threshold search saw no images")
        best: tuple[float, Thresholds] | None = None
        for gate_threshold in self.gate_candidates():
            per_class = self.pair_dice(gate_threshold).mean(0)  # [K, T, A]
            flat = per_class.flatten(1)
            scores, index = flat.max(1)
            n_areas = len(self.area_grid)
            candidate = Thresholds(
                float(gate_threshold),
                [float(self.pixel_grid[int(i) // n_areas]) for i in index],
                [int(self.area_grid[int(i) % n_areas]) for i in index],
            )
            score = float(scores.mean())
            if best is None or score >= best[0] - 1e-12:  # ties: the higher gate skips more
                best = (score, candidate)
        assert best is not None
        return best[1], best[0]


def gate_scores(gate: np.ndarray, truth: np.ndarray, threshold: float) -> dict[str, float]:
    """Image-level gate accuracy, precision, recall and F1 (positive = has any defect), and
    the threshold-free AUROC (how well the gate orders the images; left out when the split
    has only one kind of image). A gate with a high AUROC but a poor F1 is miscalibrated,
    which the tuned gate threshold fixes; a low AUROC no threshold can fix. With both kinds
    of image also the share of clean images the gate alone passes at the threshold that
    passes 99 % of the defective ones (`gate_false_alarm_at_99_recall`: a line operator's
    "catch 99 %, how many good strips do I reject?", whatever the tuned threshold)."""
    pred = gate >= threshold
    truth = truth.astype(bool)
    tp = float((pred & truth).sum())
    fp = float((pred & ~truth).sum())
    fn = float((~pred & truth).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    auroc = {}
    if truth.any() and not truth.all():
        scores = torch.as_tensor(np.asarray(gate, dtype=np.float64))
        auroc["gate_auroc"] = float(binary_auroc(scores, torch.as_tensor(truth).long()))
        auroc["gate_false_alarm_at_99_recall"] = false_alarm_at_recall(scores, truth, 0.99)
    return {
        **auroc,
        "gate_accuracy": float((pred == truth).mean()) if len(truth) else 0.0,
        "gate_precision": precision,
        "gate_recall": recall,
        "gate_f1": f1,
    }
