"""Pieces the Hydra entry points share: offline env, objects from config, plain-value config."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from defects.config import ConfigError
from defects.formats.errors import FormatError
from defects.settings import SettingsError, export_environment
from defects.tracking import TrackingError, flatten_params

T = TypeVar("T")

log = logging.getLogger("defects")


def offline_environment() -> None:
    """The process environment every entry point starts from. Hubs stay untouched unless the
    user opts in (air-gapped factories, reproducible CI); the machine's S3 endpoint and
    credentials, from the environment or `.env` (defects.settings), go under the names boto3
    and MLflow read. Settings that do not read cleanly are left to fail, with their message,
    where they are used (a config's `${setting:...}`, the device, the tracking store), so
    `defects doctor` and commands that need no setting still run."""
    with suppress(SettingsError):
        export_environment()
    for name, value in (
        ("HF_HUB_OFFLINE", "1"),
        ("YOLO_OFFLINE", "1"),
        ("YOLO_AUTOINSTALL", "false"),
    ):
        os.environ.setdefault(name, value)
    # faster_coco_eval prints its whole COCO table at INFO on every validation.
    logging.getLogger("faster_coco_eval").setLevel(logging.WARNING)


def plain(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def has_target(node: Any) -> bool:
    return isinstance(node, (dict, DictConfig)) and "_target_" in node


def make_logger(cfg: DictConfig, run_name: str | None = None) -> Any:
    """The configured experiment logger, or None for `logger=none`."""
    if not has_target(cfg.get("logger")):
        return None
    return instantiate(cfg.logger, run_name=run_name or cfg.logger.get("run_name"))


def make_callbacks(cfg: DictConfig) -> list[L.Callback]:
    return [instantiate(node) for node in (cfg.get("callbacks") or {}).values() if has_target(node)]


def make_search(cfg: DictConfig) -> Any:
    """The run's threshold search from its `tune` node (`tune.objective`, ...), handed to
    the kind's `tune`; None where the config has none (the kind tunes its own way). A bad
    value raises the target's own ConfigError, not Hydra's wrapper."""
    if not has_target(cfg.get("tune")):
        return None
    try:
        return instantiate(cfg.tune, _convert_="all")
    except InstantiationException as exc:
        if isinstance(exc.__cause__, ConfigError):
            raise exc.__cause__ from None
        raise


def log_config(logger: Any, cfg: DictConfig) -> None:
    """Every resolved knob as a flat, plain-value MLflow param."""
    if logger is not None:
        logger.log_hyperparams(flatten_params(plain(cfg)))


@contextmanager
def restore_tracking_env() -> Iterator[None]:
    """Lightning's MLFlowLogger exports MLFLOW_TRACKING_URI process-wide; undo it afterwards
    so a later run in the same process (notebook, multirun) gets its own configured store."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before


class TrainingError(RuntimeError):
    """Training ended without what the next step needs (a best checkpoint, its score)."""


class MissingMetricError(KeyError):
    """The metric a run is judged by was not produced."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def metric_value(metrics: dict[str, float], name: str) -> float:
    """`metrics[name]` as a float; a missing monitored metric is an error, never a 0.0."""
    if name not in metrics:
        raise MissingMetricError(
            f"model.monitor: metric '{name}' was not produced; have {sorted(metrics)}"
        )
    return float(metrics[name])


def run_entry(function: Callable[[DictConfig], T], cfg: DictConfig) -> T:
    """Run an entry point; bad input ends it with one line naming the key or file, no traceback."""
    try:
        return function(cfg)
    except (
        ConfigError,
        FormatError,
        FileNotFoundError,
        MissingMetricError,
        SettingsError,
        TrackingError,
        TrainingError,
    ) as exc:
        raise SystemExit(f"defects: {exc}") from None
