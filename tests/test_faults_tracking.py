"""Tracking faults: the MLflow server unreachable at the start, or killed mid-run. Training
goes on, says once that tracking is off and still writes the bundle and the local metrics;
with strict tracking the first failure stops the run at once, naming the store but never its
password. MLflow's retries are cut to none (and its time-out to seconds) so each fault shows
in seconds, not after MLflow's ~4 minutes of back-off."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

import defects.train as train_module
from defects.tracking import TrackingError, TrackingLogger
from defects.train import train
from tests.servers import free_port, mlflow_server_process
from tests.test_mlflow_server import STARTUP_TIMEOUT_S, isolated_mlflow_globals  # noqa: F401

PASSWORD = "tracking-password-5e1d"
OFF = "tracking is OFF"
TINY_RUN = ("trainer.limit_train_batches=1", "trainer.limit_val_batches=1")


@pytest.fixture(autouse=True)
def bounded_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed MLflow request fails now: no retries, a short read time-out."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


def off_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if OFF in r.getMessage()]


def assert_local_outputs(out: Path, epochs: int) -> list[dict]:
    """The bundle, the validation report and one history record per epoch are on disk."""
    bundle = out / "model_dir" / "bundle.pt"
    assert bundle.is_file() and bundle.stat().st_size > 0
    assert (out / "metrics_dir" / "train.json").is_file()
    history = json.loads((out / "metrics_dir" / "history.json").read_text())
    assert [record["epoch"] for record in history] == list(range(epochs))
    assert all("val/mAP50" in record for record in history)
    return history


class KillAfterFirstValidation(L.Callback):
    """SIGKILL the tracking server once epoch 0's validation (and its logging) is done."""

    def __init__(self, server: subprocess.Popen):
        self.server = server

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.current_epoch == 0:
            os.killpg(self.server.pid, signal.SIGKILL)
            self.server.wait(timeout=30)


@pytest.mark.usefixtures("isolated_mlflow_globals")
def test_server_down_at_start_training_goes_on_and_says_so_once(
    weld_cfg: Callable[..., DictConfig], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with_login = url.replace("//", f"//ci:{PASSWORD}@")
    caplog.set_level(logging.WARNING, logger="defects")
    metrics = train(weld_cfg("logger=mlflow", f"logger.tracking_uri={with_login}", *TINY_RUN))
    assert "val/mAP50" in metrics
    history = assert_local_outputs(tmp_path, epochs=2)
    assert all(record["run_id"] is None for record in history)
    (warning,) = off_warnings(caplog)
    assert url in warning and "Connection refused" in warning
    assert PASSWORD not in caplog.text


@pytest.mark.parametrize("how", ["override", "environment"])
@pytest.mark.usefixtures("isolated_mlflow_globals")
def test_strict_tracking_fails_at_once_naming_the_store(
    how: str,
    weld_cfg: Callable[..., DictConfig],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    overrides = ["logger=mlflow", f"logger.tracking_uri={url.replace('//', f'//ci:{PASSWORD}@')}"]
    if how == "override":
        overrides.append("logger.strict=true")
    else:
        monkeypatch.setenv("DEFECTS_TRACKING_STRICT", "1")
    with pytest.raises(TrackingError) as raised:
        train(weld_cfg(*overrides, *TINY_RUN))
    message = str(raised.value)
    assert url in message and "Connection refused" in message and "logger.strict" in message
    assert PASSWORD not in message
    # At once: before the first step, so no checkpoint and no history.
    assert not (tmp_path / "model_dir").exists()
    assert not (tmp_path / "metrics_dir" / "history.json").exists()


@pytest.mark.usefixtures("isolated_mlflow_globals")
def test_server_killed_mid_run_training_goes_on_and_keeps_what_was_logged(
    weld_cfg: Callable[..., DictConfig],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = tmp_path / "server"
    root.mkdir()
    caplog.set_level(logging.WARNING, logger="defects")
    with mlflow_server_process(root, STARTUP_TIMEOUT_S) as (url, server):
        callbacks = train_module.make_callbacks
        monkeypatch.setattr(
            train_module,
            "make_callbacks",
            lambda cfg: [*callbacks(cfg), KillAfterFirstValidation(server)],
        )
        metrics = train(weld_cfg("logger=mlflow", f"logger.tracking_uri={url}", *TINY_RUN))
        assert server.poll() is not None, "the server should have been killed mid-run"
    assert "val/mAP50" in metrics
    history = assert_local_outputs(tmp_path, epochs=2)
    run_id = history[0]["run_id"]
    assert run_id and history[1]["run_id"] == run_id
    (warning,) = off_warnings(caplog)
    assert url in warning
    # What reached the store before it died is there: epoch 0's validation, not epoch 1's.
    store = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    assert len(store.get_metric_history(run_id, "val/mAP50")) == 1
    assert store.get_run(run_id).info.status == "RUNNING"  # never marked finished


@pytest.mark.usefixtures("isolated_mlflow_globals")
def test_strict_logger_raises_on_the_first_failure_mid_run(tmp_path: Path) -> None:
    with mlflow_server_process(tmp_path, STARTUP_TIMEOUT_S) as (url, server):
        logger = TrackingLogger(experiment_name="faults", tracking_uri=url, strict=True)
        logger.log_metrics({"loss": 1.0}, step=0)
        assert logger.run_id is not None
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
        with pytest.raises(TrackingError, match=f"store {url} failed \\(log_batch: "):
            logger.log_metrics({"loss": 0.5}, step=1)
        # Raised once: what Lightning calls on the way out does not raise again.
        logger.log_metrics({"loss": 0.25}, step=2)
        logger.finalize("failed")
