"""Evaluate a trained model: `python -m defects.evaluate task=weld ckpt_path=models/weld/bundle.pt`.

Accepts a model bundle or a Lightning `.ckpt`, scores the test split (`split=valid` to change),
writes `metrics/<task>/eval.json` for `dvc metrics show`, PR-curve data for `dvc plots show`,
figures, and logs all of it to an MLflow run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from defects.bundle import load_bundle
from defects.config import ConfigError, validate_config
from defects.evaluation import evaluate_detector, write_report
from defects.models.detection import DetectionModule
from defects.models.detector import Detector
from defects.models.segmentation import SegmentationModule
from defects.models.segmenter import Segmenter
from defects.pipelines.gated import Thresholds
from defects.predict import model_from_bundle
from defects.runtime import (
    log_config,
    make_logger,
    offline_environment,
    restore_tracking_env,
    run_entry,
)
from defects.segmentation_evaluation import (
    evaluate_segmenter,
    tune_thresholds,
    write_segmentation_report,
)

log = logging.getLogger("defects")


def load_network(path: Path, segmentation: bool) -> tuple[torch.nn.Module, list[str], dict | None]:
    """The network, its class names and (bundles only) its thresholds, from a bundle or .ckpt."""
    if path.suffix == ".ckpt":
        module_class = SegmentationModule if segmentation else DetectionModule
        module = module_class.load_from_checkpoint(path, map_location="cpu", weights_only=True)
        net = module.net if segmentation else module.detector
        return net, list(module.class_names), None
    bundle = load_bundle(path)
    if (bundle["model"]["kind"] == "segmenter") != segmentation:
        raise ConfigError(
            f"ckpt_path: {path} holds a {bundle['model']['kind']}, but task '{bundle['task']}' "
            "does not match this config's model"
        )
    return model_from_bundle(bundle), list(bundle["class_names"]), bundle["thresholds"]


def score_segmenter(
    net: Segmenter,
    class_names: list[str],
    thresholds: dict | None,
    datamodule: Any,
    cfg: DictConfig,
) -> tuple[dict[str, float], list[Path]]:
    """Dice with the bundle's thresholds (a raw .ckpt is tuned on validation first)."""
    if thresholds is None:
        tuned, _ = tune_thresholds(net, datamodule.val_dataloader())
    else:
        tuned = Thresholds.from_dict(thresholds, len(class_names))
    loader = datamodule.test_dataloader() if cfg.split == "test" else datamodule.val_dataloader()
    report = evaluate_segmenter(net, loader, class_names, tuned, cfg.split)
    outputs = write_segmentation_report(
        report,
        class_names,
        Path(cfg.paths.metrics_dir) / "eval.json",
        Path(cfg.paths.plots_dir),
        cfg.split,
    )
    return report.metrics, outputs


def score_detector(
    detector: Detector, class_names: list[str], datamodule: Any, cfg: DictConfig
) -> tuple[dict[str, float], list[Path]]:
    """COCO mAP over every detection, PR curves and figures."""
    loader = datamodule.test_dataloader() if cfg.split == "test" else datamodule.val_dataloader()
    report = evaluate_detector(detector, loader, class_names, cfg.split)
    outputs = write_report(
        report,
        class_names,
        Path(cfg.paths.metrics_dir) / "eval.json",
        Path(cfg.paths.plots_dir),
        cfg.split,
    )
    return report.metrics, outputs


@restore_tracking_env()
def evaluate(cfg: DictConfig) -> dict[str, float]:
    offline_environment()
    validate_config(cfg)
    split = cfg.split
    if split not in ("test", "valid"):
        raise ConfigError(f"split: '{split}' is not one of test, valid")
    if not cfg.get("ckpt_path"):
        raise ConfigError("ckpt_path: evaluate needs a model bundle or .ckpt (ckpt_path=...)")
    path = Path(cfg.ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path: {path} does not exist")
    segmentation = cfg.model._target_.endswith("SegmentationModule")
    net, class_names, thresholds = load_network(path, segmentation)
    if class_names != list(cfg.class_names):
        raise ConfigError(
            f"ckpt_path: {path} was trained for {class_names}, config says {list(cfg.class_names)}"
        )
    datamodule = instantiate(cfg.data, _convert_="all")
    if segmentation:
        metrics, outputs = score_segmenter(net, class_names, thresholds, datamodule, cfg)
    else:
        metrics, outputs = score_detector(net, class_names, datamodule, cfg)
    logger = make_logger(cfg, run_name=f"evaluate-{split}")
    if logger is not None:
        log_config(logger, cfg)
        logger.log_metrics(metrics)
        for output in outputs:
            logger.experiment.log_artifact(logger.run_id, str(output), "evaluate")
        logger.finalize("success")
    log.info("%s", {k: round(v, 4) for k, v in metrics.items()})
    return metrics


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> None:
    run_entry(evaluate, cfg)


if __name__ == "__main__":
    main()
