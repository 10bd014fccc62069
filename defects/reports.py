"""Report files every kind writes: a metrics JSON for `dvc metrics`, PR curves for `dvc plots`,
per-class bars."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from defects.formats.io import atomic_write_text

if TYPE_CHECKING:
    from defects.kinds.base import Report


def write_metrics_json(
    metrics: Mapping[str, float],
    prefix: str,
    path: Path,
    nest: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """`{prefix}/name` metrics as a JSON object without the prefix; `{prefix}/AP/x` goes under
    `nest["AP"]` (e.g. {"AP": "AP"} or {"dice": "dice_per_class"}). Written whole."""
    nest = dict(nest or {})
    nested: dict[str, Any] = {key: {} for key in nest.values()}
    strip = len(prefix) + 1
    for key, value in metrics.items():
        name = key[strip:] if key.startswith(f"{prefix}/") else key
        group, _, leaf = name.partition("/")
        if leaf and group in nest:
            nested[nest[group]][leaf] = round(float(value), 6)
        else:
            nested[name] = round(float(value), 6)
    nested.update(extra or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(nested, indent=2))
    return path


def write_pr_curves(rows: Sequence[dict], plots_dir: Path, prefix: str) -> list[Path]:
    """`<prefix>_pr_curve.csv` ({class, recall, precision} rows) and its PNG, written whole."""
    from defects.plots import plot_pr_curves

    plots_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=["class", "recall", "precision"], lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    csv_path = plots_dir / f"{prefix}_pr_curve.csv"
    atomic_write_text(csv_path, buffer.getvalue())
    return [csv_path, plot_pr_curves(rows, plots_dir / f"{prefix}_pr_curve.png")]


def write_confusion_matrix(
    matrix: Any, class_names: Sequence[str], plots_dir: Path, prefix: str
) -> list[Path]:
    """`<prefix>_confusion_matrix.csv` (counts, rows predicted, columns true, background
    last) and `<prefix>_confusion_matrix.png` (normalized per true class), written whole."""
    from defects.metrics.detection import normalize_columns
    from defects.plots import plot_confusion_matrix

    plots_dir.mkdir(parents=True, exist_ok=True)
    names = [*class_names, "background"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["predicted \\ true", *names])
    for name, row in zip(names, matrix, strict=True):
        writer.writerow([name, *(int(v) for v in row)])
    csv_path = plots_dir / f"{prefix}_confusion_matrix.csv"
    atomic_write_text(csv_path, buffer.getvalue())
    png = plot_confusion_matrix(
        normalize_columns(matrix), matrix, names, plots_dir / f"{prefix}_confusion_matrix.png"
    )
    return [csv_path, png]


def write_class_bars(
    report: Report,
    groups: Mapping[str, str],
    class_names: Sequence[str],
    plots_dir: Path,
    title: str,
) -> Path:
    """`<prefix>_per_class.png`: bars of the report's `{prefix}/{group}/{class}` metrics, one
    series per entry of `groups` (legend label -> metric group, e.g. {"AP50": "AP50"})."""
    from defects.plots import plot_class_bars

    series = {}
    for label, group in groups.items():
        head = f"{report.prefix}/{group}/"
        series[label] = {k[len(head) :]: v for k, v in report.metrics.items() if k.startswith(head)}
    out = plots_dir / f"{report.prefix}_per_class.png"
    return plot_class_bars(series, class_names, out, f"{report.prefix}: {title}")


def threshold_curve(
    parameter: str,
    group: str,
    objective: str,
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    chosen: float,
) -> dict[str, Any]:
    """One threshold a tuning searched, as plain values a bundle stores and
    `defects.plots.plot_threshold_curves` draws: the `series` against the searched values
    `x`, the one maximised named by `objective`, the value taken `chosen`; rounded to 6
    places. `group`: the class it is for, "" for all."""
    return {
        "parameter": parameter,
        "group": group,
        "objective": objective,
        "x": [round(float(v), 6) for v in x],
        "series": {name: [round(float(v), 6) for v in values] for name, values in series.items()},
        "chosen": round(float(chosen), 6),
    }
