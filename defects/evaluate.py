"""Evaluate a trained model: `python -m defects.evaluate task=weld ckpt_path=models/weld/bundle.pt`.

Accepts a model bundle or a Lightning `.ckpt`, scores the test split (`split=valid` to change),
writes `metrics/<task>/eval.json` for `dvc metrics show`, PR-curve data for `dvc plots show`,
figures, and logs all of it to an MLflow run.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from defects.bundle import load_bundle
from defects.config import ConfigError, validate_config
from defects.evaluation import evaluate_detector, write_report
from defects.models.detection import DetectionModule
from defects.models.detector import Detector
from defects.predict import model_from_bundle
from defects.runtime import (
    log_config,
    make_logger,
    offline_environment,
    restore_tracking_env,
    run_entry,
)

log = logging.getLogger("defects")


def load_detector(path: Path) -> tuple[Detector, list[str]]:
    """A detector and its class names from a `.ckpt` or a bundle."""
    if path.suffix == ".ckpt":
        module = DetectionModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)
        return module.detector, list(module.class_names)
    bundle = load_bundle(path)
    return model_from_bundle(bundle), list(bundle["class_names"])


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
    detector, class_names = load_detector(path)
    if class_names != list(cfg.class_names):
        raise ConfigError(
            f"ckpt_path: {path} was trained for {class_names}, config says {list(cfg.class_names)}"
        )
    datamodule = instantiate(cfg.data, _convert_="all")
    loader = datamodule.test_dataloader() if split == "test" else datamodule.val_dataloader()
    report = evaluate_detector(detector, loader, class_names, split)
    outputs = write_report(
        report,
        class_names,
        Path(cfg.paths.metrics_dir) / "eval.json",
        Path(cfg.paths.plots_dir),
        split,
    )
    logger = make_logger(cfg, run_name=f"evaluate-{split}")
    if logger is not None:
        log_config(logger, cfg)
        logger.log_metrics(report.metrics)
        for output in outputs:
            logger.experiment.log_artifact(logger.run_id, str(output), "evaluate")
        logger.finalize("success")
    log.info("%s", {k: round(v, 4) for k, v in report.metrics.items()})
    return report.metrics


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> None:
    run_entry(evaluate, cfg)


if __name__ == "__main__":
    main()
