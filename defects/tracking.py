"""Experiment tracking: MLflow logger set-up, flat params, per-epoch history, artifacts."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import MLFlowLogger

from defects.formats.io import atomic_write_text
from defects.settings import DEFAULT_TRACKING_URI, load_settings  # noqa: F401 (re-exported)

log = logging.getLogger("defects")


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """Config beats the machine's setting (MLFLOW_TRACKING_URI or DEFECTS_TRACKING_URI in the
    environment, then `.env`), which beats the local sqlite default.

    MLflow refuses plain file stores now, so the default is a sqlite database that
    `mlflow ui --backend-store-uri sqlite:///mlruns.db` shows.
    """
    return tracking_uri or load_settings().tracking_uri or DEFAULT_TRACKING_URI


def make_mlflow_logger(
    experiment_name: str,
    tracking_uri: str | None = None,
    artifact_location: str | None = "mlartifacts",
    run_name: str | None = None,
    tags: Mapping[str, Any] | None = None,
) -> MLFlowLogger:
    """An MLFlowLogger whose local artifacts land in a known folder, not MLflow's cwd default."""
    uri = resolve_tracking_uri(tracking_uri)
    local_store = uri.startswith(("sqlite:", "file:")) or "://" not in uri
    location = (
        Path(artifact_location).resolve().as_uri() if artifact_location and local_store else None
    )
    return MLFlowLogger(
        experiment_name=experiment_name,
        tracking_uri=uri,
        artifact_location=location,
        run_name=run_name,
        tags=dict(tags or {}),
        log_model=False,
    )


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> `a.b.c: value` with plain values only (lists become strings)."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(value) if len(str(value)) <= 500 else f"<{len(value)} items>"
        else:
            flat[name] = value
    return flat


def mlflow_loggers(trainer: L.Trainer) -> list[MLFlowLogger]:
    return [lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)]


def log_artifact(trainer: L.Trainer, path: str | Path, artifact_path: str | None = None) -> None:
    """Attach a file to the run of every MLflow logger of `trainer`."""
    for logger in mlflow_loggers(trainer):
        logger.experiment.log_artifact(logger.run_id, str(path), artifact_path)


class MetricsHistory(L.Callback):
    """Append each epoch's logged metrics to a JSON list, readable by `dvc plots` and people.

    Runs at train-epoch end, which Lightning calls after that epoch's validation, so the
    validation metrics are already there. The file is the trajectory of the model being
    trained: a record for epoch E drops earlier records of epochs >= E, so a resumed run
    (which replays the end of its last epoch) or a fresh run never leaves a mixed history.
    """

    def __init__(self, path: str):
        self.path = Path(path)
        self._start: float | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.monotonic()

    def _append(self, record: dict) -> None:
        history = json.loads(self.path.read_text()) if self.path.exists() else []
        history = [r for r in history if r["epoch"] < record["epoch"]] + [record]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(history, indent=1))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run or trainer.global_rank != 0:
            return
        if trainer.fit_loop.restarted_on_epoch_end:
            return  # a resumed run replaying the end of the epoch it resumed from: recorded
        metrics = {
            k: round(float(v), 6) for k, v in trainer.callback_metrics.items() if v.numel() == 1
        }
        run_ids = [lg.run_id for lg in mlflow_loggers(trainer)]
        self._append(
            {
                "epoch": trainer.current_epoch,
                "step": trainer.global_step,
                "run_id": run_ids[0] if run_ids else None,
                # Wall seconds since training started: what a time budget buys, epoch by epoch.
                "elapsed_s": round(time.monotonic() - self._start, 1) if self._start else None,
                **metrics,
            }
        )
