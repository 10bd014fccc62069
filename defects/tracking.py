"""Experiment tracking: MLflow logger set-up, flat params, per-epoch history, artifacts.

Tracking is a record of training, not a part of it: when the store cannot be reached (the
server down at the start, or gone mid-run) the logger says so once and turns itself off, and
training goes on to write its bundle and local metrics. `logger.strict=true` (or
DEFECTS_TRACKING_STRICT=1) makes the first failure an error instead, naming the store.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import lightning as L
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment

from defects.formats.io import atomic_write_text
from defects.settings import DEFAULT_TRACKING_URI, load_settings, redact

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
    strict: bool = False,
    connect_timeout: float = 5.0,
) -> TrackingLogger:
    """An MLFlowLogger whose local artifacts land in a known folder, not MLflow's cwd default,
    and which outlives its store unless `strict` (see TrackingLogger)."""
    uri = resolve_tracking_uri(tracking_uri)
    local_store = uri.startswith(("sqlite:", "file:")) or "://" not in uri
    location = (
        Path(artifact_location).resolve().as_uri() if artifact_location and local_store else None
    )
    return TrackingLogger(
        experiment_name=experiment_name,
        tracking_uri=uri,
        artifact_location=location,
        run_name=run_name,
        tags=dict(tags or {}),
        log_model=False,
        strict=bool(strict),
        connect_timeout=float(connect_timeout),
    )


class TrackingError(RuntimeError):
    """The tracking store failed and the run asked for strict tracking."""


def store_faults() -> tuple[type[BaseException], ...]:
    """What a store that is down, unreachable or refusing raises; anything else (a bug in a
    call) is left to raise."""
    from mlflow.exceptions import MlflowException

    return (OSError, MlflowException)


def failure_reason(exc: BaseException) -> str:
    """The innermost system error behind `exc` (MLflow wraps requests, which wraps urllib3,
    which wraps the socket's), e.g. "Connection refused"; else the first line of `exc`."""
    reason, seen = "", set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, TimeoutError):
            reason = "timed out"
        elif isinstance(current, OSError) and current.strerror:
            reason = current.strerror
        current = current.__cause__ or current.__context__
    lines = str(exc).strip().splitlines()
    return reason or (f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__)


def unreachable(uri: str, timeout: float) -> str | None:
    """Why a tracking server's address takes no connection within `timeout` s, or None when it
    does (or the store is not a server): a run finds out in seconds, not after MLflow's
    retries of every request (MLFLOW_HTTP_REQUEST_MAX_RETRIES, ~4 min by default)."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as exc:
        return failure_reason(exc)
    return None


class _Guarded:
    """An MlflowClient whose every call goes through `guard` (which turns failures off)."""

    def __init__(self, client: Any, guard: Callable[[str, Callable[[], Any]], Any]):
        self._client, self._guard = client, guard

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._client, name)
        if not callable(found):
            return found
        return lambda *args, **kwargs: self._guard(name, lambda: found(*args, **kwargs))


class TrackingLogger(MLFlowLogger):
    """Lightning's MLFlowLogger that training outlives: the first call the store fails (its
    server unreachable at the start, or gone mid-run) logs one warning naming the store and
    turns tracking off; every later call, Lightning's and ours (`log_artifact`), is skipped.
    With `strict`, that first failure raises TrackingError instead (at the start: before
    training, as `log_config` starts the run). Errors that are not the store's (a bug in a
    call) still raise."""

    def __init__(self, *args: Any, strict: bool = False, connect_timeout: float = 5.0, **kw: Any):
        super().__init__(*args, **kw)
        self.strict = strict
        self.connect_timeout = connect_timeout
        self.off: str | None = None  # why tracking is off, once it is

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The client (calls guarded); starting the run first, unless tracking is off."""
        if self.off is None and not self._initialized:
            problem = unreachable(self._tracking_uri, self.connect_timeout)
            if problem is not None:
                self._fail("connect", problem)
            else:
                start = MLFlowLogger.experiment.fget  # type: ignore[attr-defined]
                self._guard("start of the run", lambda: start(self))
        return _Guarded(self._mlflow_client, self._guard)

    @property
    def client(self) -> Any:
        """The MlflowClient itself, unguarded: for what must fail loudly rather than be
        skipped (registering a model the user asked for)."""
        return self._mlflow_client

    def _guard(self, action: str, call: Callable[[], Any]) -> Any:
        if self.off is not None:
            return None
        try:
            return call()
        except store_faults() as exc:
            self._fail(action, failure_reason(exc))
            return None

    def _fail(self, action: str, reason: str) -> None:
        """Turn tracking off, saying so once; raise instead when strict."""
        if self.off is not None:
            return
        for secret in (
            os.environ.get("MLFLOW_TRACKING_PASSWORD"),
            urlsplit(self._tracking_uri).password,
        ):
            reason = reason.replace(secret, "***") if secret else reason
        self.off = reason
        store = redact(self._tracking_uri)
        if self.strict:
            raise TrackingError(
                f"tracking: the MLflow store {store} failed ({action}: {reason}), and "
                "logger.strict=true stops the run; start the store, point logger.tracking_uri "
                "(MLFLOW_TRACKING_URI) at one, or set logger.strict=false to train without it"
            ) from None
        log.warning(
            "tracking is OFF for the rest of this run: the MLflow store %s failed (%s: %s). "
            "Training goes on; the bundle and the local metrics are still written. "
            "logger.strict=true (DEFECTS_TRACKING_STRICT=1) stops the run instead.",
            store,
            action,
            reason,
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
