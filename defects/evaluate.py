"""Evaluate a trained model: `python -m defects.evaluate task=weld ckpt_path=models/weld/bundle.pt`.

Accepts a model bundle, an ONNX export folder (`defects export`) or a Lightning `.ckpt`,
scores the test split (`split=valid` to change) through the kind's predictor on the original
images — the numbers are those of `defects predict` — and writes `metrics/<task>/eval.json`
for `dvc metrics show`, PR-curve data for `dvc plots show`, figures, and an MLflow run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig

from defects.config import ConfigError, validate_config
from defects.formats.layout import SPLITS
from defects.kinds import get_kind, kind_of
from defects.kinds.base import Predictor
from defects.predict import load, stored_kind
from defects.runtime import (
    log_config,
    make_logger,
    make_search,
    offline_environment,
    restore_tracking_env,
    run_entry,
)
from defects.settings import start_app

log = logging.getLogger("defects")


def checkpoint_predictor(path: Path, cfg: DictConfig, datamodule: Any) -> Predictor:
    """A Lightning .ckpt has no tuned thresholds: its kind tunes them on validation first."""
    module_class = get_class(cfg.model._target_)
    module = module_class.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    kind = kind_of(module)
    bundle = kind.bundle(module, cfg)
    bundle.update(task=cfg.task_name, name=cfg.dataset)
    bundle["thresholds"] = kind.tune(bundle, datamodule, make_search(cfg))
    return kind.predictor(bundle)


@restore_tracking_env()
def evaluate(cfg: DictConfig) -> dict[str, float]:
    offline_environment()
    validate_config(cfg)
    split = cfg.split
    if split not in SPLITS[1:]:
        raise ConfigError(f"split: '{split}' is not one of {', '.join(SPLITS[1:])}")
    if not cfg.get("ckpt_path"):
        raise ConfigError(
            "ckpt_path: evaluate needs a model bundle, export or .ckpt (ckpt_path=...)"
        )
    path = Path(cfg.ckpt_path)
    if not path.exists():
        raise FileNotFoundError(f"ckpt_path: {path} does not exist")
    expected = kind_of(get_class(cfg.model._target_)).name
    if path.suffix != ".ckpt" and stored_kind(path) != expected:
        raise ConfigError(
            f"ckpt_path: {path} holds a {stored_kind(path)} model, but this config's model "
            f"({cfg.model._target_}) is {expected}: pick the matching task"
        )
    datamodule = instantiate(cfg.data, _convert_="all")
    if path.suffix == ".ckpt":
        predictor = checkpoint_predictor(path, cfg, datamodule)
    else:
        predictor = load(path, backend=cfg.backend)
    if predictor.class_names != list(cfg.class_names):
        raise ConfigError(
            f"ckpt_path: {path} was trained for {predictor.class_names}, "
            f"config says {list(cfg.class_names)}"
        )
    kind = get_kind(predictor.kind)
    report = kind.evaluate(predictor, datamodule, split)
    outputs = kind.write_report(
        report,
        predictor.class_names,
        Path(cfg.paths.metrics_dir) / "eval.json",
        Path(cfg.paths.plots_dir),
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
    start_app(main)
