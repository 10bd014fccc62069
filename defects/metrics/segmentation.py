"""Kaggle Severstal Dice: the mean over image-class pairs, with empty-empty counted as 1.

No library scores it this way (torchmetrics' Dice averages pixels, or skips empty pairs),
so it is ours, tested against a direct per-pair reference. Because most pairs are empty,
an all-empty predictor already scores high on the Kaggle mean; the defective-pairs mean
(pairs whose truth has pixels) is reported beside it so that cannot hide, and the
clean-pairs mean (the share of defect-free pairs left empty) beside that.

Image-level rates (`image_rates`, `false_alarm_at_recall`) answer a line operator: of the
defective images how many are flagged, of the clean ones how many are rejected.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
from torchmetrics import Metric
from torchmetrics.functional.classification import binary_roc


def pair_dice(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice per (image, class) pair of boolean masks [N, C, H, W] -> [N, C]; both empty -> 1."""
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(
            f"pred and target must both be [N, C, H, W], got {pred.shape}, {target.shape}"
        )
    pred, target = pred.bool().flatten(2), target.bool().flatten(2)
    intersection = (pred & target).sum(-1).double()
    return dice_from_counts(intersection, pred.sum(-1).double(), target.sum(-1).double())


def dice_from_counts(
    intersection: torch.Tensor, predicted: torch.Tensor, truth: torch.Tensor
) -> torch.Tensor:
    """Dice from pixel counts (any matching shapes); both empty -> 1, as Kaggle scores it."""
    total = predicted + truth
    return torch.where(total == 0, torch.ones_like(total), 2.0 * intersection / total.clamp(min=1))


def iou_from_counts(
    intersection: torch.Tensor, predicted: torch.Tensor, truth: torch.Tensor
) -> torch.Tensor:
    """IoU from pixel counts (any matching shapes); both empty -> 1 (nothing to find, none
    found)."""
    union = predicted + truth - intersection
    return torch.where(union == 0, torch.ones_like(union), intersection / union.clamp(min=1))


class SeverstalDice(Metric):
    """Accumulates pair Dice over batches: Kaggle mean, per class, defective and clean pairs."""

    full_state_update = False

    def __init__(self, class_names: Sequence[str]):
        super().__init__()
        self.class_names = list(class_names)
        classes = len(self.class_names)
        for name in ("sum", "count", "defective_sum", "defective_count", "clean_sum"):
            self.add_state(name, torch.zeros(classes, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        dice = pair_dice(pred, target)
        defective = target.flatten(2).any(-1)
        self.sum += dice.sum(0)
        self.count += dice.new_full((dice.shape[1],), dice.shape[0])
        self.defective_sum += (dice * defective).sum(0)
        self.defective_count += defective.sum(0).double()
        self.clean_sum += (dice * ~defective).sum(0)

    def compute(self) -> dict[str, torch.Tensor]:
        clean_count = self.count.sum() - self.defective_count.sum()
        result = {
            "dice": self.sum.sum() / self.count.sum().clamp(min=1),
            "dice_defective": self.defective_sum.sum() / self.defective_count.sum().clamp(min=1),
            "dice_clean": self.clean_sum.sum() / clean_count.clamp(min=1),
        }
        for k, name in enumerate(self.class_names):
            result[f"dice/{name}"] = self.sum[k] / self.count[k].clamp(min=1)
        return result


def image_rates(flagged: npt.ArrayLike, defective: npt.ArrayLike) -> dict[str, float]:
    """Image-level recall (share of defective images flagged) and false-alarm rate (share of
    clean images flagged). A split without defective images misses none (recall 1), one
    without clean images raises no false alarm (0)."""
    hit, bad = np.asarray(flagged, bool), np.asarray(defective, bool)
    if hit.shape != bad.shape:
        raise ValueError(f"flagged {hit.shape} and defective {bad.shape} differ")
    return {
        "image_recall": float(hit[bad].mean()) if bad.any() else 1.0,
        "image_false_alarm": float(hit[~bad].mean()) if (~bad).any() else 0.0,
    }


def false_alarm_at_recall(scores: npt.ArrayLike, defective: npt.ArrayLike, recall: float) -> float:
    """The lowest share of clean images flagged by any cut on `scores` (higher = more likely
    defective) that flags at least `recall` of the defective ones (torchmetrics' ROC)."""
    target = torch.as_tensor(np.asarray(defective, bool)).long()
    if not target.any() or target.all():
        raise ValueError("false_alarm_at_recall needs both defective and clean images")
    values = torch.as_tensor(np.asarray(scores, np.float64))
    fpr, tpr, _ = binary_roc(values, target)
    return float(fpr[tpr >= recall - 1e-12].min())
