"""The pipe task's stages: boxes -> cleaned labels -> baselines -> refined masks -> models.

``python -m defects.pipe STAGE [overrides]`` (or ``stage=STAGE``; ``all`` runs them in
order), each stage a function of the composed config (``task=pipe``) that reads what the
stage before it wrote under ``pipe.work_dir`` and never writes into ``pipe.source``:

1. ``import``    ``source`` (a box-labelled YOLO dataset, e.g. ``defects.prepare task=pipe``)
                 -> ``work/imported`` (a copy: the raw data is only read).
2. ``clean``     `clean_dataset` -> ``work/clean`` (+ ``report.json``/``report.csv``), then
                 ``{split}/coarse_masks`` from the cleaned boxes (`coarse_masks`): masks are
                 made after cleaning, so a false box never becomes a mask.
3. ``layouts``   ``work/layouts/{fine,box,oracle}`` in the ``masks`` layout
                 (`defects.pipe.layout`; valid/test hold the true masks) and, per class,
                 a binary layout of box crops ``work/crops/<class>`` (`write_crop_layout`,
                 ``pipe.crop``): the fine subset's boxes of that class.
4. ``baselines`` one binary segmenter per class on its crops, the steel segmentation path
                 (`defects.train.train`) with ``class_names=[<class>]`` and ``pipe.baseline``
                 merged in: ``models/pipe/baselines/<class>/bundle.pt``.
5. ``refine``    every train image: each box is cut out as in training, its class
                 baseline's probability (ungated) scaled back into the box replaces it
                 (`refine_boxes`, ``pipe.refine``), falling back to the box;
                 ``work/refined/train/refined_masks`` and, for comparison,
                 ``work/refined/train/grabcut_masks``; then ``work/layouts/refined``.
6. ``final``     the multi-class models of ``pipe.models`` (name -> layout): ``baseline`` on
                 the fine subset alone, ``final`` on ``refined``, and ``box`` and ``oracle``
                 to compare: ``models/pipe/segmenters/<name>/``.
7. ``evaluate``  per-class IoU (`mask_iou_per_class`) on ``split`` (test) against the true
                 masks, of the written predictions (``work/predictions/<model>/<split>/``),
                 and of the training masks (box, GrabCut, refined) on the train images
                 outside the fine subset: ``metrics/pipe/pipe_iou.json`` and ``pipe_iou.md``,
                 and as bars per class ``plots/pipe/<split>_iou_per_class.png``.

Tracking: with an MLflow logger, every model the stages train is a child run (tag
``mlflow.parentRunId``) of one parent run per work folder, whose id is kept in
``work/mlflow_parent.json``; the evaluate stage logs its IoUs, tables and figure to the
parent.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from defects.config import ConfigError
from defects.data.images import list_images, read_image
from defects.formats.io import atomic_directory, atomic_write_text
from defects.formats.mask_folder import read_index_mask, write_index_mask
from defects.formats.yolo import read_class_names, read_yolo_labels
from defects.pipe.clean import CleanConfig, clean_dataset
from defects.pipe.coarse import box_pixels, coarse_masks
from defects.pipe.layout import read_fine, write_crop_layout, write_mask_layout
from defects.pipe.refine import (
    crop_image,
    crop_window,
    grabcut_mask,
    mask_iou_per_class,
    refine_boxes,
    uncrop,
)
from defects.progress import progress
from defects.runtime import has_target, offline_environment, restore_tracking_env

if TYPE_CHECKING:
    from defects.kinds.gated.predictor import SegmentationPredictor

log = logging.getLogger("defects")

__all__ = [
    "STAGES",
    "PipePaths",
    "baselines_stage",
    "clean_stage",
    "evaluate_stage",
    "final_stage",
    "import_stage",
    "iou_table",
    "layouts_stage",
    "refine_stage",
    "run_stage",
]

BASELINE = "baseline"  # the model of pipe.models the table's "baseline" column reads
TRAINING_MASKS = {"box": "coarse_masks", "grabcut": "grabcut_masks", "refined": "refined_masks"}
REFINE_OUTPUTS = ("refined_masks", "grabcut_masks")


@dataclass(frozen=True)
class PipePaths:
    """Where every stage reads and writes, from ``pipe.*`` and ``paths.*``."""

    source: Path
    work: Path
    model_dir: Path
    metrics_dir: Path
    plots_dir: Path

    @classmethod
    def from_cfg(cls, cfg: DictConfig) -> PipePaths:
        return cls(
            Path(cfg.pipe.source),
            Path(cfg.pipe.work_dir),
            Path(cfg.paths.model_dir),
            Path(cfg.paths.metrics_dir),
            Path(cfg.paths.plots_dir),
        )

    @property
    def imported(self) -> Path:
        return self.work / "imported"

    @property
    def clean(self) -> Path:
        return self.work / "clean"

    @property
    def refined(self) -> Path:
        """Where the refine stage writes ``train/{refined,grabcut}_masks``: beside the
        cleaned dataset, not inside it (each stage owns its folders)."""
        return self.work / "refined"

    def layout(self, variant: str) -> Path:
        return self.work / "layouts" / variant

    def crops(self, class_name: str) -> Path:
        return self.work / "crops" / class_name

    def mask_root(self, folder: str) -> Path:
        """The dataset root holding ``{split}/<folder>`` of a training-mask folder."""
        return self.refined if folder in REFINE_OUTPUTS else self.clean

    def predictions(self, model: str, split: str) -> Path:
        return self.work / "predictions" / model / split

    def baseline(self, class_name: str) -> Path:
        return self.model_dir / "baselines" / class_name

    def model(self, name: str) -> Path:
        return self.model_dir / "segmenters" / name

    def class_names(self) -> list[str]:
        """Classes of the cleaned dataset (rare ones dropped): what every model learns."""
        path = self.clean / "data.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no cleaned dataset (run the clean stage first)")
        return read_class_names(path)


def _write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")
    return path


# --------------------------------------------------------------------------- data stages


def import_stage(cfg: DictConfig) -> dict:
    """Copy the raw box-labelled dataset into ``work/imported`` (the source is only read)."""
    p = PipePaths.from_cfg(cfg)
    src, dst = p.source.resolve(), p.imported.resolve()
    if not (src / "data.yaml").is_file():
        raise FileNotFoundError(
            f"{src / 'data.yaml'}: no dataset here (defects.prepare task=pipe?)"
        )
    if src == dst or src.is_relative_to(dst) or dst.is_relative_to(src):
        raise ConfigError(f"pipe.work_dir {p.work} must lie outside pipe.source {p.source}")
    with atomic_directory(p.imported) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
    counts = {
        split: len(list_images(p.imported / split / "images"))
        for split in ("train", "valid", "test")
        if (p.imported / split / "images").is_dir()
    }
    log.info("imported %s -> %s: %s", src, p.imported, counts)
    return {"source": str(src), "images": counts}


def clean_stage(cfg: DictConfig) -> dict:
    """`clean_dataset` -> ``work/clean`` and its report, then coarse masks of the kept boxes."""
    p = PipePaths.from_cfg(cfg)
    config = CleanConfig(**OmegaConf.to_container(cfg.pipe.clean, resolve=True))  # type: ignore[arg-type]
    report = clean_dataset(p.imported, p.clean, config)
    masks = coarse_masks(p.clean)
    summary = {"counts": report["counts"], "classes": report["classes"], "coarse_masks": masks}
    _write_json(p.metrics_dir / "clean.json", summary)
    log.info("cleaned: %s; classes %s", report["counts"], report["classes"]["after"])
    return summary


def layouts_stage(cfg: DictConfig) -> dict:
    """The ``fine``, ``box`` and ``oracle`` layouts and one binary crop layout per class."""
    p = PipePaths.from_cfg(cfg)
    names = p.class_names()
    size, context = int(cfg.pipe.crop.size), float(cfg.pipe.crop.context)
    counts = {
        v: write_mask_layout(p.clean, p.layout(v), v, names) for v in ("fine", "box", "oracle")
    }
    for k, name in enumerate(names):
        crops = write_crop_layout(p.clean, p.crops(name), names, k, size, context)
        counts[f"baseline_{name}"] = crops
        if not crops.get("train"):
            raise ConfigError(
                f"class {name!r} has no box in the fine subset ({p.clean / 'fine.txt'}): "
                "its baseline has nothing to learn from"
            )
    log.info("layouts: %s", counts)
    return counts


# --------------------------------------------------------------------------- training


def _parent_run(cfg: DictConfig, p: PipePaths) -> str | None:
    """The id of the pipeline's parent MLflow run (created once per work folder), or None
    without an MLflow logger."""
    if not has_target(cfg.get("logger")):
        return None
    from defects.tracking import resolve_tracking_uri

    record_path = p.work / "mlflow_parent.json"
    uri = resolve_tracking_uri(cfg.logger.get("tracking_uri"))
    experiment = str(cfg.logger.experiment_name)
    if record_path.is_file():
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if record.get("tracking_uri") == uri and record.get("experiment_name") == experiment:
            from mlflow.exceptions import MlflowException
            from mlflow.tracking import MlflowClient

            try:
                MlflowClient(uri).get_run(record["run_id"])
                return str(record["run_id"])
            except MlflowException:
                log.warning("parent run %s is gone; starting a new one", record["run_id"])
    from hydra.utils import instantiate

    parent = instantiate(cfg.logger, run_name=f"{cfg.dataset}-pipeline", _convert_="all")
    run_id = parent.run_id
    if run_id is None:  # the store failed: tracking is off (said once), training goes on
        return None
    parent.experiment.set_tag(run_id, "pipe.work_dir", str(p.work))
    parent.experiment.set_terminated(run_id)
    _write_json(record_path, {"tracking_uri": uri, "experiment_name": experiment, "run_id": run_id})
    return run_id


def _train_one(
    cfg: DictConfig,
    name: str,
    layout: Path,
    class_names: Sequence[str],
    model_dir: Path,
    extra: Mapping[str, Any] | None,
    parent: str | None,
) -> dict[str, float]:
    """`defects.train.train` on one layout: the same config with data, classes and output
    folders swapped (and ``extra`` merged in); a child run of ``parent`` when tracking."""
    from defects.train import train

    sub = copy.deepcopy(cfg)
    sub.class_names = list(class_names)
    sub.paths.data_dir = str(layout)
    sub.paths.model_dir = str(model_dir)
    rel = model_dir.relative_to(Path(cfg.paths.model_dir))
    sub.paths.metrics_dir = str(Path(cfg.paths.metrics_dir) / rel)
    sub.paths.plots_dir = str(Path(cfg.paths.plots_dir) / rel)
    if extra:
        sub = OmegaConf.merge(sub, OmegaConf.create(dict(extra)))  # type: ignore[assignment]
    if parent is not None:
        sub.logger.run_name = f"{cfg.dataset}-{name}"
        sub.logger.tags = {
            **_container(sub.logger.get("tags")),
            "mlflow.parentRunId": parent,
            "pipe.model": name,
        }
    shutil.rmtree(model_dir / "checkpoints", ignore_errors=True)  # a rerun starts afresh
    log.info("training %s on %s (%s)", name, layout, ", ".join(class_names))
    return train(sub)


def _container(node: Any) -> dict[str, Any]:
    return OmegaConf.to_container(node, resolve=True) if node else {}  # type: ignore[return-value]


def baselines_stage(cfg: DictConfig) -> dict[str, dict[str, float]]:
    """One binary segmenter per class on the fine subset (``pipe.baseline`` merged in)."""
    p = PipePaths.from_cfg(cfg)
    parent = _parent_run(cfg, p)
    extra = _container(cfg.pipe.get("baseline"))
    return {
        name: _train_one(
            cfg,
            f"baseline-{name}",
            p.crops(name),
            [name],
            p.baseline(name),
            extra,
            parent,
        )  # fmt: skip
        for name in p.class_names()
    }


def final_stage(cfg: DictConfig) -> dict[str, dict[str, float]]:
    """The multi-class models of ``pipe.models`` (name: layout), ``pipe.final`` merged in."""
    p = PipePaths.from_cfg(cfg)
    names = p.class_names()
    parent = _parent_run(cfg, p)
    extra = _container(cfg.pipe.get("final"))
    out = {}
    for model, variant in cfg.pipe.models.items():
        if not (p.layout(variant) / "classes.txt").is_file():
            raise FileNotFoundError(f"{p.layout(variant)}: no '{variant}' layout (run its stage)")
        out[str(model)] = _train_one(
            cfg, str(model), p.layout(variant), names, p.model(str(model)), extra, parent
        )
    return out


# --------------------------------------------------------------------------- refinement


def _load_predictor(bundle: Path) -> SegmentationPredictor:
    """The segmentation predictor of a pipe model; any other kind is refused by name."""
    import defects
    from defects.kinds.gated.predictor import SegmentationPredictor

    if not bundle.is_file():
        raise FileNotFoundError(f"{bundle}: model bundle not found (run the stage that trains it)")
    predictor = defects.load(bundle)
    if not isinstance(predictor, SegmentationPredictor):
        raise ValueError(
            f"{bundle}: a {predictor.kind} model; the pipe's models are gated segmenters "
            "(model=steel in the pipe config)"
        )
    return predictor


def _box_probabilities(
    predictors: Sequence[SegmentationPredictor],
    image: np.ndarray,
    boxes: Sequence[Any],
    size: int,
    context: float,
    cuts: Sequence[float] | None,
) -> list[np.ndarray | None]:
    """Each box's baseline probability over the box (None: an empty box): the box cut out
    as `write_crop_layout` cut the training crops, the map scaled back. With ``cuts`` each
    map is binarised at its baseline's tuned pixel threshold first."""
    height, width = image.shape[:2]
    out: list[np.ndarray | None] = [None] * len(boxes)
    by_class: dict[int, list[tuple[int, tuple, tuple]]] = {}
    for i, box in enumerate(boxes):
        rect = box_pixels(box, width, height)
        if rect[2] > rect[0] and rect[3] > rect[1]:
            by_class.setdefault(box.class_id, []).append(
                (i, rect, crop_window(rect, width, height, context))
            )
    for k, items in by_class.items():
        crops = [crop_image(image, window, size) for _, _, window in items]
        for (i, rect, window), (_, probs) in zip(items, predictors[k].ungated(crops), strict=True):
            prob = uncrop(probs[0].numpy(), window, rect)
            out[i] = (prob >= cuts[k]).astype(np.float32) if cuts is not None else prob
    return out


def refine_stage(cfg: DictConfig) -> dict:
    """Refined and GrabCut masks of every train image, then the ``refined`` layout."""
    p = PipePaths.from_cfg(cfg)
    names = p.class_names()
    predictors = [_load_predictor(p.baseline(name) / "bundle.pt") for name in names]
    # null: each baseline's own tuned pixel threshold (its map is binarised with it first)
    tuned = cfg.pipe.refine.threshold is None
    threshold = 0.5 if tuned else float(cfg.pipe.refine.threshold)
    cuts = [float(pr.tuned.pixel[0]) for pr in predictors]
    min_fraction = float(cfg.pipe.refine.min_fraction)
    iterations = int(cfg.pipe.refine.grabcut_iterations)
    size, context = int(cfg.pipe.crop.size), float(cfg.pipe.crop.context)
    train_dir = p.clean / "train"
    images = list_images(train_dir / "images")
    stats: dict[str, Any] = {"images": len(images), "boxes": 0, "fallbacks": 0}
    stats["thresholds"] = dict(zip(names, cuts, strict=True)) if tuned else threshold
    with atomic_directory(p.refined) as out:
        refined_dir, grabcut_dir = (out / "train" / folder for folder in REFINE_OUTPUTS)
        refined_dir.mkdir(parents=True)
        grabcut_dir.mkdir(parents=True)
        for path in progress(images, "refine"):
            image = read_image(path, 3)
            height, width = image.shape[:2]
            boxes = read_yolo_labels(train_dir / "labels" / f"{path.stem}.txt", len(names))
            per_box = _box_probabilities(
                predictors, image, boxes, size, context, cuts if tuned else None
            )
            refined, fallbacks = refine_boxes(
                boxes, per_box, height, width, threshold, min_fraction
            )
            stats["boxes"] += len(boxes)
            stats["fallbacks"] += fallbacks
            write_index_mask(refined_dir / f"{path.stem}.png", refined)
            grabcut = grabcut_mask(image, boxes, iterations)
            write_index_mask(grabcut_dir / f"{path.stem}.png", grabcut)
    stats["layout"] = write_mask_layout(
        p.clean,
        p.layout("refined"),
        "refined",
        names,
        mask_roots={f: p.refined for f in REFINE_OUTPUTS},
    )
    log.info("refined: %s", stats)
    return stats


# --------------------------------------------------------------------------- evaluation


def _per_class(iou: np.ndarray, names: Sequence[str]) -> dict[str, float | None]:
    """{class: IoU or None (absent from both sides), "mean": over the classes present}."""
    values = {
        name: (None if math.isnan(v) else float(v)) for name, v in zip(names, iou, strict=True)
    }
    present = [v for v in values.values() if v is not None]
    return {**values, "mean": float(np.mean(present)) if present else None}


def _read_masks(folder: Path, stems: Sequence[str], num_classes: int) -> list[np.ndarray]:
    return [read_index_mask(folder / f"{stem}.png", num_classes) for stem in stems]


def _predict_split(predictor: SegmentationPredictor, images: Sequence[Path], out: Path) -> None:
    """Write each image's predicted index mask to ``out/<stem>.png`` (folder swapped whole)."""
    with atomic_directory(out) as tmp:
        results = progress(
            predictor.predict_many(images), f"predict {out.parent.name}/{out.name}", len(images)
        )
        for path, (_, result) in zip(images, results, strict=True):
            write_index_mask(tmp / f"{path.stem}.png", result.index_mask())


def _fmt(value: float | None, sign: bool = False, percent: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    text = f"{value:+.3f}" if sign else f"{value:.3f}"
    return f"{value:+.1f}%" if percent else text


def iou_table(report: dict) -> str:
    """Markdown: the project's table (class | baseline | final | increase | %) and every
    row of training masks and models against the true masks."""
    names = report["classes"]
    models, masks, counts = report["models"], report["training_masks"], report["counts"]
    lines = [
        f"# Pipe: per-class IoU on {report['split']} (true masks)",
        "",
        "| class | baseline | final | increase | % |",
        "|---|---|---|---|---|",
    ]
    base, final = models.get(BASELINE, {}), models.get("final", {})
    for name in [*names, "mean"]:
        b, f = base.get(name), final.get(name)
        gain = f - b if b is not None and f is not None else None
        pct = 100.0 * gain / b if gain is not None and b else None
        label = f"**{name}**" if name == "mean" else name
        lines.append(
            f"| {label} | {_fmt(b)} | {_fmt(f)} | {_fmt(gain, sign=True)} "
            f"| {_fmt(pct, percent=True)} |"
        )
    lines += [
        "",
        "## Every row",
        "",
        f"Training masks: the {counts['train_masks']} train images outside the fine subset; "
        f"models: the {counts['eval_images']} {report['split']} images.",
        "",
        "| row | " + " | ".join(names) + " | mean |",
        "|---" * (len(names) + 2) + "|",
    ]
    rows = [(f"training masks: {k}", v) for k, v in masks.items()]
    rows += [(f"model: {k}", v) for k, v in models.items()]
    for label, values in rows:
        cells = " | ".join(_fmt(values.get(n)) for n in [*names, "mean"])
        lines.append(f"| {label} | {cells} |")
    return "\n".join(lines) + "\n"


def evaluate_stage(cfg: DictConfig) -> dict:
    """Per-class IoU of the training masks and of every model's written predictions."""
    p = PipePaths.from_cfg(cfg)
    names = p.class_names()
    k = len(names)
    split = str(cfg.split)
    fine = set(read_fine(p.clean))
    train_stems = [i.stem for i in list_images(p.clean / "train" / "images") if i.stem not in fine]
    train_truth = _read_masks(p.clean / "train" / "true_masks", train_stems, k)
    training_masks = {}
    for label, folder in TRAINING_MASKS.items():
        masks_dir = p.mask_root(folder) / "train" / folder
        if not masks_dir.is_dir():
            raise FileNotFoundError(f"{masks_dir}: run the refine stage first")
        pred = _read_masks(masks_dir, train_stems, k)
        training_masks[label] = _per_class(mask_iou_per_class(pred, train_truth, k), names)

    images = list_images(p.clean / split / "images")
    stems = [i.stem for i in images]
    truth = _read_masks(p.clean / split / "true_masks", stems, k)
    predictors = {
        str(model): _load_predictor(p.model(str(model)) / "bundle.pt") for model in cfg.pipe.models
    }
    models = {}
    for model, predictor in predictors.items():
        out = p.predictions(model, split)
        _predict_split(predictor, images, out)
        pred = _read_masks(out, stems, k)  # the IoU of what was written
        models[model] = _per_class(mask_iou_per_class(pred, truth, k), names)
    report = {
        "split": split,
        "classes": names,
        "training_masks": training_masks,
        "models": models,
        "counts": {"train_masks": len(train_stems), "eval_images": len(stems)},
        "predictions": {m: str(p.predictions(m, split)) for m in models},
    }
    json_path = _write_json(p.metrics_dir / "pipe_iou.json", report)
    md_path = p.metrics_dir / "pipe_iou.md"
    atomic_write_text(md_path, iou_table(report))
    figure = plot_iou_rows(report, p.plots_dir / f"{split}_iou_per_class.png")
    _log_to_parent(cfg, p, report, [json_path, md_path, figure])
    log.info("\n%s", iou_table(report))
    return report


def plot_iou_rows(report: dict, out: Path) -> Path:
    """Per class, a bar for each row of `iou_table`: every model on the split, then every
    kind of training mask on the train images outside the fine subset."""
    from defects.plots import plot_class_bars

    rows = {f"model: {k}": v for k, v in report["models"].items()}
    rows |= {f"training masks: {k}": v for k, v in report["training_masks"].items()}
    series = {
        label: {name: v for name, v in values.items() if v is not None}
        for label, values in rows.items()
    }
    title = f"IoU per class against the true masks ({report['split']} for models, train for masks)"
    return plot_class_bars(series, [*report["classes"], "mean"], out, title)


def _log_to_parent(cfg: DictConfig, p: PipePaths, report: dict, files: Sequence[Path]) -> None:
    parent = _parent_run(cfg, p)
    if parent is None:
        return
    from mlflow.tracking import MlflowClient

    from defects.tracking import resolve_tracking_uri

    client = MlflowClient(resolve_tracking_uri(cfg.logger.get("tracking_uri")))
    for group in ("training_masks", "models"):
        for row, values in report[group].items():
            for name, value in values.items():
                if value is not None:
                    client.log_metric(parent, f"{report['split']}_iou/{group}/{row}/{name}", value)
    for path in files:
        client.log_artifact(parent, str(path), "plots" if path.suffix == ".png" else "metrics")


# --------------------------------------------------------------------------- entry

STAGES: dict[str, Callable[[DictConfig], Any]] = {
    "import": import_stage,
    "clean": clean_stage,
    "layouts": layouts_stage,
    "baselines": baselines_stage,
    "refine": refine_stage,
    "final": final_stage,
    "evaluate": evaluate_stage,
}


@restore_tracking_env()
def run_stage(cfg: DictConfig, stage: str | None = None) -> Any:
    """Run ``stage`` (default ``cfg.stage``); ``all`` runs every stage in order."""
    offline_environment()
    stage = str(stage or cfg.stage)
    if stage == "all":
        stages = progress(STAGES.items(), "pipe", len(STAGES), unit="stage")
        return {name: function(cfg) for name, function in stages}
    if stage not in STAGES:
        raise ConfigError(f"stage: unknown pipe stage {stage!r}; one of {', '.join(STAGES)}, all")
    return STAGES[stage](cfg)
