"""Score a detector on a split and write what people and DVC read: metrics, PR data, figures."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from defects.formats.io import atomic_write_text
from defects.metrics.detection import make_map_metric, pr_curves, summarize_map
from defects.models.detector import Detector
from defects.plots import plot_pr_curves, plot_predictions


@dataclass
class DetectionReport:
    metrics: dict[str, float]
    pr_rows: list[dict]
    samples: list[tuple[np.ndarray, dict, dict]] = field(default_factory=list)


@torch.inference_mode()
def evaluate_detector(
    detector: Detector,
    loader: DataLoader,
    class_names: list[str],
    prefix: str = "test",
    n_samples: int = 8,
) -> DetectionReport:
    """mAP over every detection (no score cut), PR curves at IoU 0.5, a few samples to plot."""
    detector.eval()
    metric = make_map_metric(extended=True)
    samples: list[tuple[np.ndarray, dict, dict]] = []
    for images, targets in loader:
        preds = detector(images)
        metric.update(
            [{"boxes": p["boxes"], "scores": p["scores"], "labels": p["labels"]} for p in preds],
            [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets],
        )
        for image, target, pred in zip(images, targets, preds, strict=True):
            if len(samples) < n_samples:
                keep = pred["scores"] >= 0.3
                samples.append(
                    (
                        (image[0].numpy() * 255).astype(np.uint8),
                        {
                            "boxes": target["boxes"].numpy(),
                            "class_ids": (target["labels"] - 1).tolist(),
                        },
                        {
                            "boxes": pred["boxes"][keep].numpy(),
                            "class_ids": (pred["labels"][keep] - 1).tolist(),
                            "scores": pred["scores"][keep].tolist(),
                        },
                    )
                )
    result = metric.compute()
    return DetectionReport(
        summarize_map(result, class_names, prefix), pr_curves(result, class_names), samples
    )


def write_pr_curves(rows: list[dict], plots_dir: Path, prefix: str) -> list[Path]:
    """`<prefix>_pr_curve.csv` for `dvc plots` and its PNG; written whole (temp + rename)."""
    plots_dir.mkdir(parents=True, exist_ok=True)
    csv_path = plots_dir / f"{prefix}_pr_curve.csv"
    tmp = csv_path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["class", "recall", "precision"])
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(csv_path)
    return [csv_path, plot_pr_curves(rows, plots_dir / f"{prefix}_pr_curve.png")]


def write_report(
    report: DetectionReport,
    class_names: list[str],
    metrics_json: Path,
    plots_dir: Path,
    prefix: str,
) -> list[Path]:
    """metrics JSON for `dvc metrics`, PR CSV for `dvc plots`, PNGs for people and MLflow."""
    strip = len(prefix) + 1
    nested: dict[str, Any] = {"AP": {}}
    for key, value in report.metrics.items():
        name = key[strip:]
        if name.startswith("AP/"):
            nested["AP"][name[3:]] = round(value, 6)
        else:
            nested[name] = round(value, 6)
    metrics_json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(metrics_json, json.dumps(nested, indent=2))
    outputs = [metrics_json, *write_pr_curves(report.pr_rows, plots_dir, prefix)]
    if report.samples:
        images, truths, preds = zip(*report.samples, strict=True)
        outputs.append(
            plot_predictions(
                images, truths, preds, class_names, plots_dir / f"{prefix}_predictions.png"
            )
        )
    return outputs
