"""Train a task: `python -m defects.train task=weld data.batch_size=4 trainer.max_epochs=2`.

Composes the Hydra config, checks it before touching data, fits with Lightning, keeps the
best checkpoint by the task's monitor metric, and leaves a model bundle plus figures in
MLflow and under `paths`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

from defects.bundle import save_bundle
from defects.config import validate_config
from defects.evaluation import evaluate_detector, write_report
from defects.models.detection import DetectionModule
from defects.models.segmentation import SegmentationModule
from defects.runtime import (
    log_config,
    make_callbacks,
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
from defects.tracking import log_artifact

log = logging.getLogger("defects")


def finish_detection(
    module: DetectionModule, datamodule: L.LightningDataModule, cfg: DictConfig
) -> tuple[dict[str, float], list[Path], Path]:
    """Score the best detector on validation; write report, figures and the bundle."""
    paths = cfg.paths
    report = evaluate_detector(
        module.detector, datamodule.val_dataloader(), module.class_names, "val"
    )
    outputs = write_report(
        report,
        module.class_names,
        Path(paths.metrics_dir) / "train.json",
        Path(paths.plots_dir),
        "val",
    )
    hp = module.hparams
    bundle = save_bundle(
        Path(paths.model_dir) / "bundle.pt",
        task=cfg.task_name,
        model={"kind": "detector", "kwargs": {"num_classes": len(hp.class_names) + 1, **hp.net}},
        state_dict=module.detector.state_dict(),
        class_names=list(hp.class_names),
        thresholds={"score": float(hp.score_threshold)},
        input={"channels": int(cfg.data.channels)},
        metrics=report.metrics,
    )
    return report.metrics, outputs, bundle


def finish_segmentation(
    module: SegmentationModule, datamodule: L.LightningDataModule, cfg: DictConfig
) -> tuple[dict[str, float], list[Path], Path]:
    """Tune gate/pixel/area thresholds on validation Dice, score with them, write the bundle.

    Tuning happens here, on the best checkpoint, so the train stage's bundle already carries
    the thresholds the evaluate stage and the predictor apply (DVC lets one stage own a file).
    """
    paths = cfg.paths
    loader = datamodule.val_dataloader()
    thresholds, tuned_dice = tune_thresholds(module.net, loader)
    log.info("tuned thresholds %s (val dice %.4f)", thresholds.as_dict(), tuned_dice)
    report = evaluate_segmenter(module.net, loader, module.class_names, thresholds, "val")
    outputs = write_segmentation_report(
        report,
        module.class_names,
        Path(paths.metrics_dir) / "train.json",
        Path(paths.plots_dir),
        "val",
    )
    hp = module.hparams
    bundle = save_bundle(
        Path(paths.model_dir) / "bundle.pt",
        task=cfg.task_name,
        model={
            "kind": "segmenter",
            "kwargs": {"num_classes": len(hp.class_names), "design": hp.design, **hp.net},
        },
        state_dict=module.net.state_dict(),
        class_names=list(hp.class_names),
        thresholds=thresholds.as_dict(),
        input={
            "channels": int(cfg.data.channels),
            "resize": [int(v) for v in cfg.data.resize] if cfg.data.get("resize") else None,
        },
        metrics=report.metrics,
    )
    return report.metrics, outputs, bundle


def load_best(module: L.LightningModule, trainer: L.Trainer) -> str | None:
    """Put the best checkpoint's weights into `module`; return its path."""
    checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    best = checkpoint and (checkpoint.best_model_path or checkpoint.last_model_path)
    if best:
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    return best


@restore_tracking_env()
def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the configured task; return the best model's validation metrics."""
    offline_environment()
    validate_config(cfg)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data, _convert_="all")
    module = instantiate(cfg.model, _convert_="all")
    logger = make_logger(cfg)
    trainer = instantiate(cfg.trainer, callbacks=make_callbacks(cfg), logger=logger or False)
    log_config(logger, cfg)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    if trainer.fast_dev_run:
        log.info("fast_dev_run: the whole path ran once; no bundle or report written")
        return {k: float(v) for k, v in trainer.callback_metrics.items()}

    best = load_best(module, trainer)
    finish = finish_segmentation if isinstance(module, SegmentationModule) else finish_detection
    metrics, outputs, bundle = finish(module, datamodule, cfg)
    paths = cfg.paths
    log.info(
        "best checkpoint %s; bundle %s; %s",
        best,
        bundle,
        {k: round(v, 4) for k, v in metrics.items()},
    )
    if logger is not None:
        logger.log_metrics({f"best/{k}": v for k, v in metrics.items()})
        for path in [
            *outputs,
            Path(paths.plots_dir) / "data_samples.png",
            Path(paths.metrics_dir) / "history.json",
        ]:
            if path.exists():
                log_artifact(trainer, path, "plots" if path.suffix == ".png" else "metrics")
        log_artifact(trainer, bundle, "model")
    return metrics


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> float:
    metrics = run_entry(train, cfg)
    return float(metrics.get(cfg.model.monitor, 0.0))


if __name__ == "__main__":
    main()
