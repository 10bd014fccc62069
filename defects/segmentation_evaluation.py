"""Score a gated segmenter on a split, tune its thresholds, write what people and DVC read."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchmetrics.functional.classification import binary_precision_recall_curve

from defects.evaluation import write_pr_curves
from defects.formats.io import atomic_write_text
from defects.metrics.segmentation import SeverstalDice
from defects.models.segmenter import Segmenter
from defects.pipelines.gated import GatedFlow, Thresholds, ThresholdSearch, binarize, gate_scores


@dataclass
class SegmentationReport:
    metrics: dict[str, float]
    thresholds: Thresholds
    samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    gate_pr: list[dict] = field(default_factory=list)


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


@torch.inference_mode()
def tune_thresholds(net: Segmenter, loader: DataLoader) -> tuple[Thresholds, float]:
    """Gate threshold, per-class pixel thresholds and minimum areas with the best Dice."""
    flow = GatedFlow.eager(net)
    search = ThresholdSearch()
    for images, masks in loader:
        gate, probs = flow(images, gate_threshold=None)
        search.update(gate, probs, masks)
    return search.best()


@torch.inference_mode()
def evaluate_segmenter(
    net: Segmenter,
    loader: DataLoader,
    class_names: list[str],
    thresholds: Thresholds,
    prefix: str = "test",
    n_samples: int = 4,
    flow: GatedFlow | None = None,
) -> SegmentationReport:
    """Kaggle Dice (all pairs, defective pairs, per class) and gate scores, through the same
    gated flow the predictor runs (eager by default; pass an ONNX flow to score that)."""
    flow = flow or GatedFlow.eager(net)
    dice = SeverstalDice(class_names)
    gates, truths = [], []
    samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for images, masks in loader:
        gate, probs = flow(images, gate_threshold=thresholds.gate)
        pred = binarize(gate, probs, thresholds)
        dice.update(pred, masks.bool())
        gates.append(gate.max(1).values)
        truths.append(masks.flatten(1).any(1))
        for image, truth, mask in zip(images, masks, pred, strict=True):
            if len(samples) < n_samples:
                grey = (image[0].numpy() * 255).astype(np.uint8)
                samples.append((grey, truth.bool().numpy(), mask.numpy()))
    metrics = {f"{prefix}/{k}": float(v) for k, v in dice.compute().items()}
    gate_all, truth_all = torch.cat(gates), torch.cat(truths)
    scores = gate_scores(gate_all.numpy(), truth_all.numpy(), thresholds.gate)
    metrics.update({f"{prefix}/{k}": v for k, v in scores.items()})
    return SegmentationReport(metrics, thresholds, samples, gate_pr_curve(gate_all, truth_all))


def write_segmentation_report(
    report: SegmentationReport,
    class_names: list[str],
    metrics_json: Path,
    plots_dir: Path,
    prefix: str,
) -> list[Path]:
    """metrics JSON for `dvc metrics` (with the thresholds used) and an overlay figure."""
    strip = len(prefix) + 1
    nested: dict[str, Any] = {"dice_per_class": {}}
    for key, value in report.metrics.items():
        name = key[strip:]
        if name.startswith("dice/"):
            nested["dice_per_class"][name[5:]] = round(value, 6)
        else:
            nested[name] = round(value, 6)
    nested["thresholds"] = report.thresholds.as_dict()
    metrics_json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(metrics_json, json.dumps(nested, indent=2))
    outputs = [metrics_json, *write_pr_curves(report.gate_pr, plots_dir, prefix)]
    if report.samples:
        figure = plots_dir / f"{prefix}_predictions.png"
        outputs.append(plot_mask_predictions(report.samples, class_names, figure))
    return outputs


def plot_mask_predictions(
    samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]], class_names: list[str], out: Path
) -> Path:
    """Truth above prediction for each sample, one colour per class."""
    from defects.plots import image_grid, overlay_masks, save_figure

    height, width = samples[0][0].shape
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
