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

from defects.kinds.base import EvalData, Report, split_prefix
from defects.kinds.gated.predictor import SegmentationPredictor
from defects.kinds.gated.thresholds import ThresholdSearch, gate_scores
from defects.metrics.segmentation import SeverstalDice, image_rates
from defects.progress import progress
from defects.reports import write_metrics_json, write_pr_curves


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
) -> tuple[dict[str, Any], dict[str, float]]:
    """Gate, per-class pixel thresholds and minimum areas with the best validation score on
    the search's objective (Kaggle Dice by default); also what they score on validation
    (`ThresholdSearch.summary`: Dice, IoU, image recall and false-alarm rate)."""
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
    return thresholds.as_dict(), {search.objective: score, **search.summary(thresholds)}


def evaluate(
    predictor: SegmentationPredictor, datamodule: EvalData, split: str, n_samples: int = 4
) -> Report:
    """Every objective a run can tune for, whichever it tuned: Kaggle Dice (all, defective
    and clean pairs, per class), per-class IoU pooled over the split's pixels and its mean,
    image recall and false-alarm rate (an image is flagged when any mask survives), and the
    gate's scores of `split`."""
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
    pictures: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    samples = datamodule.eval_samples(split)
    results = progress(predictor.predict_many([s.image for s in samples]), split, len(samples))
    for sample, (image, result) in zip(samples, results, strict=True):
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
        if len(pictures) < n_samples:
            pictures.append((image, truth, result.masks))
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
    return Report(
        metrics, prefix, {"gate_pr": pr, "pictures": pictures, "thresholds": predictor.thresholds}
    )


def write_report(
    report: Report, class_names: list[str], metrics_json: Path, plots_dir: Path
) -> list[Path]:
    """metrics JSON for `dvc metrics` (with the thresholds used), gate PR curve, overlays."""
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
    if report.extras["pictures"]:
        figure = plots_dir / f"{prefix}_predictions.png"
        outputs.append(plot_mask_predictions(report.extras["pictures"], class_names, figure))
    return outputs


def plot_mask_predictions(
    samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]], class_names: list[str], out: Path
) -> Path:
    """Truth above prediction for each sample, one colour per class."""
    from defects.plots import image_grid, overlay_masks, save_figure

    height, width = samples[0][0].shape[:2]
    fig, axes = image_grid(
        2 * len(samples), height / width, cell_width=max(6.0, width / 100.0), columns=1
    )
    for k, (image, truth, pred) in enumerate(samples):
        for ax, masks, label in ((axes[2 * k], truth, "truth"), (axes[2 * k + 1], pred, "pred")):
            ax.imshow(overlay_masks(image, masks), interpolation="nearest")
            present = [class_names[c] for c in range(len(class_names)) if masks[c].any()]
            ax.set_title(f"#{k} {label}: {', '.join(present) or 'no defects'}", fontsize=8)
    out.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, out)
