"""Evaluate a trained model: `python -m defects.evaluate task=weld ckpt_path=models/weld/bundle.pt`.

Accepts a model bundle, an ONNX export folder (`defects export`) or a Lightning `.ckpt`,
scores the test split (`split=valid` to change) through the kind's predictor on the original
images — the numbers are those of `defects predict` — and writes `metrics/<task>/eval.json`
for `dvc metrics show`, PR-curve data for `dvc plots show`, figures, and an MLflow run.
`registry.register=true registry.alias=staging` also registers the bundle (or export) as a
new version in MLflow's Model Registry, loadable as `defects.load("models:/weld@staging")`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from hydra.utils import get_class, instantiate
from lightning.pytorch.loggers import MLFlowLogger
from omegaconf import DictConfig

from defects.config import ConfigError, validate_config
from defects.formats.layout import SPLITS
from defects.kinds import get_kind, kind_of
from defects.kinds.base import Predictor
from defects.predict import load, stored_kind
from defects.runtime import (
    has_target,
    log_config,
    make_logger,
    make_search,
    offline_environment,
    restore_tracking_env,
    run_entry,
)
from defects.settings import start_app
from defects.tracking import TrackingLogger

log = logging.getLogger("defects")


def checkpoint_predictor(path: Path, cfg: DictConfig, datamodule: Any) -> Predictor:
    """A Lightning .ckpt has no tuned thresholds: its kind tunes them on validation first."""
    module_class = get_class(cfg.model._target_)
    module = module_class.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    kind = kind_of(module)
    bundle = kind.bundle(module, cfg)
    bundle.update(task=cfg.task_name, name=cfg.dataset)
    return kind.predictor(kind.tuned_bundle(bundle, datamodule, make_search(cfg)))


def registry_request(cfg: DictConfig, path: Path) -> DictConfig | None:
    """The `registry` node when this run is to register its model, checked before the
    scoring so a bad name or alias fails in a second; None when it is not to."""
    node = cfg.get("registry")
    if not node or not node.get("register"):
        return None
    from defects.registry import alias_problem, name_problem

    if not has_target(cfg.get("logger")):
        raise ConfigError(
            "registry.register: a model version belongs to the evaluate run's MLflow store; "
            "it needs the MLflow logger (logger=none is set)"
        )
    if path.suffix == ".ckpt":
        raise ConfigError(
            f"registry.register: {path} is a Lightning checkpoint; register the bundle "
            "defects.train wrote (models/<dataset>/bundle.pt) or an export folder"
        )
    problem = name_problem(node.get("name"))
    if problem:
        raise ConfigError(f"registry.name: {problem}")
    alias = node.get("alias")
    problem = alias_problem(alias) if alias is not None else None
    if problem:
        raise ConfigError(f"registry.alias: {problem}")
    return node


def register_scored(
    logger: Any, node: DictConfig, cfg: DictConfig, path: Path, kind: str, metrics: dict
) -> Any:
    """Register the scored model as a version of the evaluate run, tagged with its metrics,
    task, dataset, kind and the run's git commit (when MLflow found one)."""
    from mlflow.exceptions import MlflowException

    from defects import __version__
    from defects.registry import RegistryError, register_model, version_tags

    if not isinstance(logger, MLFlowLogger):
        raise ConfigError(f"registry.register: needs the MLflow logger, not {type(logger)}")
    client = logger.experiment  # starts the run, which gives it its id
    if isinstance(logger, TrackingLogger):
        client = logger.client  # a store failure while registering is an error, not skipped
    run_id = logger.run_id
    if run_id is None:
        raise RegistryError("registry: the evaluate run got no MLflow run id")
    run_tags = client.get_run(run_id).data.tags
    tags = version_tags(
        metrics,
        task=cfg.task_name,
        dataset=cfg.dataset,
        kind=kind,
        split=cfg.split,
        git_commit=run_tags.get("mlflow.source.git.commit"),
        defects_version=__version__,
    )
    description = f"{kind} model for {cfg.task_name} ({cfg.dataset}), scored on {cfg.split}"
    try:
        version = register_model(
            client, run_id, path, node.name, node.alias, tags, description=description
        )
    except MlflowException as exc:
        raise RegistryError(
            f"registry: MLflow refused to register {path} as '{node.name}' ({exc.message})"
        ) from None
    at = f" (@{node.alias})" if node.alias else ""
    log.info("registered %s as models:/%s/%s%s", path, node.name, version.version, at)
    return version


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
    registry = registry_request(cfg, path)
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
        if registry is not None:
            try:
                register_scored(logger, registry, cfg, path, predictor.kind, report.metrics)
            except BaseException:
                logger.finalize("failed")
                raise
        logger.finalize("success")
    log.info("%s", {k: round(v, 4) for k, v in report.metrics.items()})
    return report.metrics


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> None:
    run_entry(evaluate, cfg)


if __name__ == "__main__":
    start_app(main)
