"""Train a task: `python -m defects.train task=weld data.batch_size=4 trainer.max_epochs=2`.

Composes the Hydra config, checks it before touching data, fits with Lightning, keeps the
best checkpoint by the model's monitor metric, and lets the model's kind finish: tune its
thresholds, score validation through its predictor, write the bundle. Returns the monitored
metric to Hydra, so a multirun sweep (`-m optimizer.lr=0.001,0.01`) compares real numbers.
Under DDP only rank 0 finishes (thresholds, bundle, reports, plots).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

from defects.bundle import save_bundle
from defects.checkpoints import LatestCheckpoint
from defects.config import ConfigError, validate_config
from defects.kinds import kind_of
from defects.kinds.base import ModelKind
from defects.launch import rank_overrides
from defects.runtime import (
    TrainingError,
    log_config,
    make_callbacks,
    make_logger,
    make_search,
    metric_value,
    offline_environment,
    restore_tracking_env,
    run_entry,
)
from defects.settings import start_app
from defects.tracking import log_artifact

log = logging.getLogger("defects")


def checkpoint_callback(trainer: L.Trainer) -> ModelCheckpoint:
    checkpoint = next(
        (
            c
            for c in trainer.callbacks
            if isinstance(c, ModelCheckpoint) and not isinstance(c, LatestCheckpoint)
        ),
        None,
    )
    if checkpoint is None:
        raise ConfigError(
            "callbacks.model_checkpoint: training needs a ModelCheckpoint to pick the best model"
        )
    return checkpoint


def best_checkpoint(trainer: L.Trainer) -> tuple[str, float]:
    """The best checkpoint's path and monitored score (known on every rank).

    No fallback to the last checkpoint: a missing best means the monitor was never logged
    (or training stopped before the first validation), which must not pass silently.
    """
    checkpoint = checkpoint_callback(trainer)
    best, score = checkpoint.best_model_path, checkpoint.best_model_score
    if not best or score is None:
        raise TrainingError(
            f"no best checkpoint: ModelCheckpoint(monitor='{checkpoint.monitor}') saved none; "
            f"logged metrics were {sorted(trainer.callback_metrics)} (did validation run?)"
        )
    return best, float(score)


def load_best(module: L.LightningModule, path: str) -> None:
    """Put the best checkpoint's weights into `module` (rank 0 only: on a cluster without a
    shared filesystem the other nodes never see the file)."""
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)


def finish(
    kind: ModelKind, module: L.LightningModule, datamodule: Any, cfg: DictConfig
) -> tuple[dict[str, float], list[Path], Path]:
    """Tune thresholds, score validation through the kind's predictor, write the bundle."""
    paths = cfg.paths
    bundle = kind.tuned_bundle(kind.bundle(module, cfg), datamodule, make_search(cfg))
    report = kind.evaluate(kind.predictor(bundle), datamodule, "valid")
    outputs = kind.write_report(
        report, bundle["class_names"], Path(paths.metrics_dir) / "train.json", Path(paths.plots_dir)
    )
    path = save_bundle(
        Path(paths.model_dir) / "bundle.pt",
        task=cfg.task_name,
        name=cfg.dataset,
        metrics=report.metrics,
        **bundle,
    )
    return report.metrics, outputs, path


@restore_tracking_env()
def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the configured task; return the best model's metrics, the monitored one included."""
    offline_environment()
    validate_config(cfg)
    make_search(cfg)  # a bad tune value fails now, not after training
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data, _convert_="all")
    module = instantiate(cfg.model, _convert_="all")
    kind = kind_of(module)
    logger = make_logger(cfg)
    trainer = instantiate(cfg.trainer, callbacks=make_callbacks(cfg), logger=logger or False)
    log_config(logger, cfg)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    if trainer.fast_dev_run:
        log.info("fast_dev_run: the whole path ran once; no bundle or report written")
        return {k: float(v) for k, v in trainer.callback_metrics.items()}

    best, score = best_checkpoint(trainer)
    monitor = checkpoint_callback(trainer).monitor
    if trainer.world_size > 1:
        # Rank 0 finishes alone: end the process group on every rank first, so the metrics
        # that tune/evaluate compute stay local instead of waiting on ranks that returned.
        trainer.strategy.barrier("defects.train.finish")
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if not trainer.is_global_zero:  # rank 0 writes; the others only report the score
        return {monitor: score}
    load_best(module, best)
    metrics, outputs, bundle = finish(kind, module, datamodule, cfg)
    metrics = {**metrics, monitor: score}
    paths = cfg.paths
    log.info("best checkpoint %s (%s %.4f); bundle %s", best, monitor, score, bundle)
    log.info("%s", {k: round(v, 4) for k, v in metrics.items()})
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
    return run_entry(lambda c: metric_value(metrics, c.model.monitor), cfg)


if __name__ == "__main__":
    sys.argv += rank_overrides(sys.argv)  # torchrun/srun ranks past 0: their own log name
    start_app(main)
