"""Score a gated segmentation predictor on a split from its own masks, tune its thresholds,
and write what people and DVC read.

Both read the images of the split at their original resolution through the predictor, and
compare with the masks as stored, so the Dice reported is the Dice of what `predict` writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchmetrics.classification import BinaryJaccardIndex, MultilabelJaccardIndex
from torchmetrics.functional.classification import binary_precision_recall_curve

from defects.examples import Candidate, Panel, Slot, pick_examples, picked_indices
from defects.kinds.base import EvalData, Report, split_prefix
from defects.kinds.gated.predictor import SegmentationPredictor
from defects.kinds.gated.thresholds import ThresholdSearch, gate_scores
from defects.metrics.segmentation import SeverstalDice, image_rates, pair_dice
from defects.progress import progress
from defects.reports import write_class_bars, write_metrics_json, write_pr_curves


def gate_pr_curve(gate: torch.Tensor, truth: torch.Tensor) -> list[dict]:
    """Image-level precision/recall of the gate over all thresholds (rows like the detector's
    PR curves, so `dvc plots` and the figure code treat both tasks alike)."""
    if not truth.any():
        return []
    precision, recall, _ = binary_precision_recall_curve(gate.float(), truth.long())
    return [
        {"class": "gate", "recall": round(float(r), 6), "precision": round(float(p), 6)}
        for p, r in zip(precision, recall, strict=True)
    ]


def tune(
    predictor: SegmentationPredictor,
    datamodule: EvalData,
    search: ThresholdSearch | None = None,
) -> tuple[dict[str, Any], dict[str, float], list[dict[str, Any]]]:
    """Gate, per-class pixel thresholds and minimum areas with the best validation score on
    the search's objective (Kaggle Dice by default); what they score on validation
    (`ThresholdSearch.summary`: Dice, IoU, image recall and false-alarm rate); and the
    curves they were chosen from (`ThresholdSearch.curves`)."""
    search = ThresholdSearch() if search is None else search
    samples = datamodule.eval_samples("valid")
    outputs = progress(
        predictor.predict_many([s.image for s in samples], step=predictor.ungated),
        "tune valid",
        len(samples),
    )
    for sample, (_, (gate, probs)) in zip(samples, outputs, strict=True):
        truth = torch.from_numpy(datamodule.truth(sample))
        search.update(gate[None], probs[None], truth[None])
    thresholds, score = search.best()
    scores = {search.objective: score, **search.summary(thresholds)}
    return thresholds.as_dict(), scores, search.curves(thresholds, predictor.class_names)


#: the example figure: the defective strips the model segments best and worst, the most
#: confident false alarm on a clean strip, and the clean strip that came closest to one
SLOTS = (
    Slot(
        "defective",
        True,
        "highest Dice of the defective strips (Dice {value:.2f})",
        "no defective strip in this split",
    ),
    Slot(
        "defective",
        False,
        "lowest Dice of the defective strips (Dice {value:.2f})",
        "no second defective strip in this split",
    ),
    Slot(
        "false_alarm",
        True,
        "false alarm on a clean strip (gate {value:.2f})",
        "no false alarm on a clean strip in this split",
    ),
    Slot(
        "clean",
        True,
        "clean strip, correctly left empty (gate {value:.2f})",
        "no clean strip left empty in this split",
    ),
)


def strip_candidate(index: int, pred: torch.Tensor, target: torch.Tensor, gate: float) -> Candidate:
    """A defective strip with its Dice (the mean over the classes in its truth or its
    prediction), else a false alarm or a clean strip left empty, with the gate's score."""
    if target.any():
        present = (pred | target).flatten(2).any(-1)[0]
        dice = float(pair_dice(pred, target)[0][present].mean())
        return Candidate(index, "", "defective", dice)
    return Candidate(index, "", "false_alarm" if pred.any() else "clean", gate)


def evaluate(predictor: SegmentationPredictor, datamodule: EvalData, split: str) -> Report:
    """Every objective a run can tune for, whichever it tuned: Kaggle Dice (all, defective
    and clean pairs, per class), per-class IoU pooled over the split's pixels and its mean,
    image recall and false-alarm rate (an image is flagged when any mask survives), the
    gate's scores of `split`, and the strips worth looking at (`strip_candidate`)."""
    prefix = split_prefix(split)
    classes = len(predictor.class_names)
    dice = SeverstalDice(predictor.class_names)
    # a class absent from truth and prediction alike scores 1: nothing to find, none found
    # (torchmetrics' multilabel metric needs two labels or more: one class is binary IoU)
    iou = (
        MultilabelJaccardIndex(classes, average="none", zero_division=1.0)
        if classes > 1
        else BinaryJaccardIndex(zero_division=1.0)
    )
    gates, present, flagged = [], [], []
    candidates: list[Candidate] = []
    samples = datamodule.eval_samples(split)
    results = progress(predictor.predict_many([s.image for s in samples]), split, len(samples))
    for index, (sample, (_, result)) in enumerate(zip(samples, results, strict=True)):
        truth = datamodule.truth(sample)
        pred, target = torch.from_numpy(result.masks)[None], torch.from_numpy(truth)[None]
        dice.update(pred, target)
        if classes > 1:
            iou.update(pred.long(), target.long())
        else:
            iou.update(pred[:, 0].long(), target[:, 0].long())
        gates.append(result.gate)
        present.append(bool(truth.any()))
        flagged.append(bool(result.masks.any()))
        candidates.append(strip_candidate(index, pred, target, result.gate))
    metrics = {f"{prefix}/{k}": float(v) for k, v in dice.compute().items()}
    per_class = iou.compute().reshape(-1) if samples else torch.ones(classes)
    metrics[f"{prefix}/mean_iou"] = float(per_class.mean())
    for name, value in zip(predictor.class_names, per_class, strict=True):
        metrics[f"{prefix}/iou/{name}"] = float(value)
    gate_all, truth_all = np.asarray(gates), np.asarray(present)
    rates = image_rates(np.asarray(flagged, bool), truth_all.astype(bool))
    metrics.update({f"{prefix}/{k}": v for k, v in rates.items()})
    scores = gate_scores(gate_all, truth_all, predictor.tuned.gate)
    metrics.update({f"{prefix}/{k}": v for k, v in scores.items()})
    pr = gate_pr_curve(torch.as_tensor(gate_all), torch.as_tensor(truth_all))
    rows = pick_examples(candidates, [("", SLOTS)])
    picked = picked_indices(rows)  # predicted again: keeping every strip's masks costs GBs
    again = predictor.predict_many([samples[i].image for i in picked])
    pictures = {
        i: (image, datamodule.truth(samples[i]), result.masks)
        for i, (image, result) in zip(picked, again, strict=True)
    }
    extras = {
        "gate_pr": pr,
        "examples": rows,
        "pictures": pictures,
        "thresholds": predictor.thresholds,
        "tuning": list(predictor.meta.get("tuning") or []),
    }
    return Report(metrics, prefix, extras)


def write_report(
    report: Report, class_names: list[str], metrics_json: Path, plots_dir: Path
) -> list[Path]:
    """metrics JSON for `dvc metrics` (with the thresholds used), gate PR curve, per-class
    Dice and IoU bars, the threshold curves the bundle was tuned on, the picked strips."""
    from defects.plots import plot_threshold_curves

    prefix = report.prefix
    thresholds = {"thresholds": report.extras["thresholds"]}
    outputs = [
        write_metrics_json(
            report.metrics,
            prefix,
            metrics_json,
            {"dice": "dice_per_class", "iou": "iou_per_class"},
            thresholds,
        )
    ]
    outputs += write_pr_curves(report.extras["gate_pr"], plots_dir, prefix)
    groups = {"Dice (Kaggle, per image-class pair)": "dice", "IoU (pooled pixels)": "iou"}
    outputs.append(
        write_class_bars(report, groups, class_names, plots_dir, "Dice and IoU per class")
    )
    outputs.append(
        plot_threshold_curves(
            report.extras["tuning"],
            plots_dir / f"{prefix}_thresholds.png",
            "thresholds tuned on validation (each searched value, the others at their choice)",
        )
    )
    figure = plots_dir / f"{prefix}_predictions.png"
    outputs.append(plot_strip_examples(report, class_names, figure))
    return outputs


def plot_strip_examples(report: Report, class_names: list[str], out: Path) -> Path:
    """The picked strips, each as its truth above its prediction, one colour per class."""
    from matplotlib.axes import Axes

    from defects.plots import overlay_masks, plot_examples

    pictures = report.extras["pictures"]

    def draw(ax: Axes, panel: Panel) -> None:
        assert panel.candidate is not None
        image, truth, pred = pictures[panel.candidate.index]
        gap = np.full((max(image.shape[0] // 12, 2), *overlay_masks(image, truth).shape[1:]), 255)
        stacked = np.concatenate([overlay_masks(image, truth), gap, overlay_masks(image, pred)])
        ax.imshow(stacked.astype(np.uint8), interpolation="nearest")
        for name, masks, top in (("truth", truth, 0), ("found", pred, image.shape[0] + len(gap))):
            shown = [class_names[c] for c in range(len(class_names)) if masks[c].any()]
            box = {"facecolor": "black", "alpha": 0.6, "pad": 1.5, "edgecolor": "none"}
            label = f"{name}: {', '.join(shown) or 'nothing'}"
            ax.text(2, top + 2, label, va="top", fontsize=8, color="white", bbox=box)

    first = next(iter(pictures.values()), None)
    height, width = first[0].shape[:2] if first else (1, 4)
    aspect = (2 * height + max(height // 12, 2)) / width
    heading = f"{report.prefix}: strips picked by Dice (truth above, prediction below)"
    return plot_examples(
        report.extras["examples"],
        draw,
        aspect,
        out,
        heading,
        cell_width=min(max(8.0, width / 100.0), 16.0),
        columns=1,
    )
