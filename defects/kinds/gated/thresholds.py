"""Thresholds that turn gate and mask probabilities into masks, and their search on the
objective a run picks (`tune.objective`: Kaggle Dice, defective-pair Dice, class IoU or
image recall).

The same `binarize` runs in evaluation, the predictor (eager and ONNX) and the training
module's validation, so what is tuned is what is served.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc

from defects.config import ConfigError
from defects.metrics.segmentation import (
    dice_from_counts,
    false_alarm_at_recall,
    image_rates,
    iou_from_counts,
)
from defects.reports import threshold_curve as curve

log = logging.getLogger("defects")


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


#: What `ThresholdSearch` maximises: the config key `tune.objective` (see the class docstring).
Objective = Literal["kaggle_dice", "defective_dice", "class_iou", "recall_at_fpr"]
OBJECTIVES: tuple[str, ...] = get_args(Objective)


@dataclass
class ThresholdSearch:
    """Collects per-pair statistics on validation data, then picks the thresholds with the
    best `objective` on a grid: only counts are kept (no probability maps), so it streams.
    Built from the run's `tune` config node (`tune.objective`, `tune.target_recall`).

    Objectives (a pair is one (image, class); a clean pair has an empty truth mask):

    - `kaggle_dice`: Severstal's mean Dice over all pairs, empty-empty counting 1. On a mostly
      clean split it rewards predicting nothing: min areas up to 2048 px erase most masks.
    - `defective_dice`: (mean Dice over defective pairs + mean Dice over clean pairs) / 2,
      each mean pooled over every class's pairs (so the first is the report's
      `dice_defective` and the second its `dice_clean`, the share of clean pairs left
      empty). Both groups weigh half whatever the split's share of clean pairs, and neither
      degenerate answer wins: predicting nothing scores at most 0.5 (clean term only),
      predicting everything everywhere loses the whole clean term. A split without one of
      the groups is scored on the other alone.
    - `class_iou`: mean over classes of each class's IoU pooled over the split's pixels (sum
      of intersections / sum of unions); a class absent from truth and prediction alike
      counts 1 (nothing to find, nothing found), as Kaggle counts an empty-empty pair.
    - `recall_at_fpr`: what a line operator sets: catch `target_recall` of the defective
      images (an image is flagged when any class mask survives `binarize`) and reject as
      few clean ones as possible. At each gate candidate the per-class pixel thresholds and
      min areas are picked by `defective_dice` (Kaggle's mean would pick the min areas that
      erase small defects on a mostly clean split, undoing the recall the gate keeps); of
      the operating points that reach the target recall the one with the lowest image
      false-alarm rate wins (ties: the better `defective_dice`, then the higher gate, i.e.
      the highest gate that keeps the recall). When no point reaches the target, the one
      with the highest recall wins and a warning says so. Its score is 1 - false-alarm rate.

    For the first three every class's pixel threshold and min area are picked on their own
    (each objective is a mean of per-class terms), the gate is shared.

    Gate thresholds tried: 0 (all pass) and cuts midway between neighbouring observed gate
    scores (at most `gate_cuts`, spread over the score quantiles), each as far as possible from
    the strips on both sides of it. A gate trained from scratch is often badly calibrated
    (every strip between 0.13 and 0.32, say) yet well ordered; a fixed 0.1 grid would see
    only "all pass" there. `recall_at_fpr` also tries the cut just below every defective
    image's score: recall changes only there, and a subsampled grid could miss it.
    """

    objective: Objective = "kaggle_dice"
    target_recall: float = 0.99
    pixel_grid: Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    area_grid: Sequence[int] = (0, 64, 256, 512, 1024, 2048, 4096)
    gate_cuts: int = 64
    counts: list[torch.Tensor] = field(default_factory=list, init=False, repr=False)
    overlaps: list[torch.Tensor] = field(default_factory=list, init=False, repr=False)
    truths: list[torch.Tensor] = field(default_factory=list, init=False, repr=False)
    gates: list[torch.Tensor] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(
                f"tune.objective: '{self.objective}' is not one of {', '.join(OBJECTIVES)}"
            )
        if not 0.0 < self.target_recall <= 1.0:
            raise ConfigError(f"tune.target_recall: {self.target_recall} is not in (0, 1]")

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

    def _kept(self, gate_threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predicted and overlapping pixels per (image, class, pixel threshold, min area)
        after the gate and the min area -> [N, K, T, A] twice, and truth pixels [N, K, 1, 1]."""
        counts, overlaps = torch.cat(self.counts), torch.cat(self.overlaps)
        truth = torch.cat(self.truths)[:, :, None, None]
        area = counts.new_tensor(list(self.area_grid)).view(1, 1, 1, -1)
        opened = (torch.cat(self.gates) >= gate_threshold)[:, None, None, None]
        kept = (counts[..., None] >= area) & opened
        pred = torch.where(kept, counts[..., None], torch.zeros_like(kept, dtype=counts.dtype))
        inter = torch.where(kept, overlaps[..., None], torch.zeros_like(pred))
        return pred, inter, truth

    def pair_dice(self, gate_threshold: float) -> torch.Tensor:
        """Dice per (image, class, pixel threshold, min area) -> [N, K, T, A]."""
        pred, inter, truth = self._kept(gate_threshold)
        return dice_from_counts(inter, pred, truth)

    def class_terms(self, gate_threshold: float, objective: str) -> torch.Tensor:
        """Per class, the objective's term at every (pixel threshold, min area) -> [K, T, A];
        the objective is the mean of the classes' terms (not for `recall_at_fpr`)."""
        if objective == "class_iou":
            pred, inter, truth = self._kept(gate_threshold)
            return iou_from_counts(inter.sum(0), pred.sum(0), truth.sum(0))
        dice = self.pair_dice(gate_threshold)
        if objective == "kaggle_dice":
            return dice.mean(0)
        if objective != "defective_dice":
            raise ValueError(f"'{objective}' is not a per-class objective")
        defective = (torch.cat(self.truths) > 0)[:, :, None, None]
        groups = [(dice * g).sum(0) / g.sum() for g in (defective, ~defective) if g.any()]
        return torch.stack(groups).mean(0) * dice.shape[1]

    def gate_candidates(self) -> list[float]:
        """0 and the midpoints between neighbouring observed gate scores, ascending."""
        scores = torch.unique(torch.cat(self.gates))  # sorted
        cuts = (scores[1:] + scores[:-1]) / 2
        if len(cuts) > self.gate_cuts:
            cuts = cuts[torch.linspace(0, len(cuts) - 1, self.gate_cuts).round().long()]
        return sorted({0.0} | {round(float(c), 6) for c in cuts})

    def recall_gate_candidates(self) -> list[float]:
        """`gate_candidates` and the cut just below each defective image's gate score."""
        gates = torch.cat(self.gates)
        scores = torch.unique(gates)
        defective = torch.unique(gates[torch.cat(self.truths).sum(1) > 0])
        below = torch.searchsorted(scores, defective) - 1  # the next lower observed score
        cuts = (defective[below >= 0] + scores[below[below >= 0]]) / 2
        return sorted(set(self.gate_candidates()) | {round(float(c), 6) for c in cuts})

    def pick(self, gate_threshold: float, objective: str) -> tuple[Thresholds, float]:
        """At one gate threshold, each class's best (pixel threshold, min area) and the
        objective's value there."""
        per_class = self.class_terms(gate_threshold, objective)  # [K, T, A]
        flat = per_class.flatten(1)
        scores, index = flat.max(1)
        n_areas = len(self.area_grid)
        candidate = Thresholds(
            float(gate_threshold),
            [float(self.pixel_grid[int(i) // n_areas]) for i in index],
            [int(self.area_grid[int(i) % n_areas]) for i in index],
        )
        return candidate, float(scores.mean())

    def best(self) -> tuple[Thresholds, float]:
        """The grid point with the best objective (gate shared, the rest per class), and the
        objective's value there (`recall_at_fpr`: 1 - the image false-alarm rate)."""
        if not self.counts:
            raise ValueError("threshold search saw no images")
        if self.objective == "recall_at_fpr":
            return self._best_at_recall()
        best: tuple[float, Thresholds] | None = None
        for _, candidate, score in self.gate_points():
            if best is None or score >= best[0] - 1e-12:  # ties: the higher gate skips more
                best = (score, candidate)
        assert best is not None
        return best[1], best[0]

    def gate_points(self) -> list[tuple[float, Thresholds, float]]:
        """(gate threshold, the best per-class thresholds there, the objective's value) at
        each gate candidate, ascending (not for `recall_at_fpr`)."""
        return [(g, *self.pick(g, self.objective)) for g in self.gate_candidates()]

    def recall_points(self) -> list[tuple[float, float, float, float, Thresholds]]:
        """(image recall, -false-alarm rate, defective_dice, gate threshold, thresholds) at
        each of `recall_gate_candidates`, the per-class thresholds picked by defective_dice."""
        points = []
        for gate_threshold in self.recall_gate_candidates():
            candidate, score = self.pick(gate_threshold, "defective_dice")
            rates = self.summary(candidate)
            recall, false_alarm = rates["image_recall"], rates["image_false_alarm"]
            points.append((recall, -false_alarm, score, gate_threshold, candidate))
        return points

    def curves(self, chosen: Thresholds, class_names: Sequence[str]) -> list[dict[str, Any]]:
        """What the search chose from, for `defects.plots.plot_threshold_curves`: the
        objective against the gate threshold (image recall and false-alarm rate for
        `recall_at_fpr`), then per class its term against the pixel threshold (at the chosen
        min area) and the min area (at the chosen pixel threshold), at the chosen gate."""
        per_class: str = self.objective
        if self.objective == "recall_at_fpr":
            points = self.recall_points()
            x = [p[3] for p in points]
            series = {
                "image false alarm": [-p[1] for p in points],
                "image recall": [p[0] for p in points],
            }
            gate = curve("gate threshold", "", "image false alarm", x, series, chosen.gate)
            gate["target"] = {"series": "image recall", "value": self.target_recall}
            per_class = "defective_dice"
        else:
            points3 = self.gate_points()
            x, scores = [p[0] for p in points3], [p[2] for p in points3]
            gate = curve(
                "gate threshold", "", self.objective, x, {self.objective: scores}, chosen.gate
            )
        terms = self.class_terms(chosen.gate, per_class)  # [K, T, A]
        pixels, areas = [float(v) for v in self.pixel_grid], [int(v) for v in self.area_grid]
        found = [gate]
        for k, name in enumerate(class_names):
            t, a = pixels.index(chosen.pixel[k]), areas.index(chosen.min_area[k])
            by_pixel = {per_class: terms[k, :, a].tolist()}
            by_area = {per_class: terms[k, t, :].tolist()}
            found.append(
                curve("pixel threshold", name, per_class, pixels, by_pixel, chosen.pixel[k])
            )
            area = curve("min area (px)", name, per_class, areas, by_area, chosen.min_area[k])
            found.append({**area, "grid": True})
        return found

    def _best_at_recall(self) -> tuple[Thresholds, float]:
        points = self.recall_points()
        reached = [p for p in points if p[0] >= self.target_recall - 1e-12]
        if reached:
            choice = max(reached, key=lambda p: p[1:4])
        else:
            choice = max(points, key=lambda p: p[:4])
            log.warning(
                "tune.target_recall %.4f is out of reach on validation: the best image "
                "recall is %.4f (false-alarm rate %.4f)",
                self.target_recall,
                choice[0],
                -choice[1],
            )
        return choice[4], 1.0 + choice[1]

    def summary(self, thresholds: Thresholds) -> dict[str, float]:
        """What `thresholds` (pixel thresholds on `pixel_grid`) score on the collected split,
        the report's numbers: Kaggle Dice, defective- and clean-pair Dice, mean per-class
        IoU, image recall and false-alarm rate (an image is flagged when a mask survives)."""
        counts, overlaps = torch.cat(self.counts), torch.cat(self.overlaps)
        truth, gates = torch.cat(self.truths), torch.cat(self.gates)
        grid = [float(p) for p in self.pixel_grid]
        missing = [p for p in thresholds.pixel if p not in grid]
        if missing:
            raise ValueError(f"pixel thresholds {missing} are not on the search's grid {grid}")
        index = torch.tensor([grid.index(p) for p in thresholds.pixel])
        classes = torch.arange(counts.shape[1])
        count, overlap = counts[:, classes, index], overlaps[:, classes, index]  # [N, K]
        kept = count >= count.new_tensor(thresholds.min_area)
        kept &= (gates >= thresholds.gate)[:, None]
        pred = torch.where(kept, count, torch.zeros_like(count))
        inter = torch.where(kept, overlap, torch.zeros_like(count))
        dice = dice_from_counts(inter, pred, truth)
        iou = iou_from_counts(inter.sum(0), pred.sum(0), truth.sum(0))
        defective = truth > 0
        return {
            "dice": float(dice.mean()),
            "dice_defective": float(dice[defective].mean()) if defective.any() else 0.0,
            "dice_clean": float(dice[~defective].mean()) if (~defective).any() else 0.0,
            "mean_iou": float(iou.mean()),
            **image_rates((pred > 0).any(1).numpy(), defective.any(1).numpy()),
        }


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
