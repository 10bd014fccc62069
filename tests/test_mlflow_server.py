"""Training against a real `mlflow server`: experiment, run, flat params, history, artifacts."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from defects.runtime import plain
from defects.tracking import DEFAULT_TRACKING_URI, flatten_params, resolve_tracking_uri
from defects.train import train
from tests.servers import free_port, running_server

STARTUP_TIMEOUT_S = 90.0


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A local tracking server (sqlite backend, proxied artifacts); yields (url, artifacts dir)."""
    root = tmp_path_factory.mktemp("mlflow_server")
    artifacts = root / "artifacts"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    # No huey job runner (a handful of extra processes and a /dev/shm queue) and no telemetry.
    env.update(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true")
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(artifacts),
    ]
    with running_server(command, f"{url}/health", root, STARTUP_TIMEOUT_S, env):
        yield url, artifacts


@pytest.fixture
def isolated_mlflow_globals(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Lightning's MLFlowLogger calls `mlflow.set_tracking_uri`, which also exports
    MLFLOW_TRACKING_URI; undo both so later tests don't talk to a server that is gone."""
    from mlflow.tracking._tracking_service import utils as tracking_utils

    before_uri = tracking_utils._tracking_uri
    before_env = os.environ.get("MLFLOW_TRACKING_URI")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.chdir(tmp_path)  # anything written relative to the cwd stays in tmp_path
    yield
    mlflow.set_tracking_uri(before_uri)  # None also unsets MLFLOW_TRACKING_URI
    if before_env is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before_env


def artifact_files(client: MlflowClient, run_id: str, path: str | None = None) -> dict[str, int]:
    files: dict[str, int] = {}
    for info in client.list_artifacts(run_id, path):
        if info.is_dir:
            files.update(artifact_files(client, run_id, info.path))
        else:
            files[info.path] = info.file_size or 0
    return files


@pytest.mark.usefixtures("isolated_mlflow_globals")
def test_train_logs_run_to_tracking_server(
    mlflow_server: tuple[str, Path], weld_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    url, artifacts_dir = mlflow_server
    epochs = 2
    # One train batch per epoch (not `trainer.max_steps=1`: that stops fit mid-epoch, before
    # the epoch's validation, so no val/* metric would ever be logged).
    cfg = weld_cfg(
        "logger=mlflow",
        f"logger.tracking_uri={url}",
        f"trainer.max_epochs={epochs}",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
    )
    metrics = train(cfg)
    assert "val/mAP50" in metrics

    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name("defects-weld")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"

    # Params: the whole resolved config, flattened to dotted keys with plain string values.
    params = run.data.params
    expected = flatten_params(plain(cfg))
    assert set(expected) <= set(params)
    assert params["data.batch_size"] == "2"
    assert params["model.net.arch"] == cfg.model.net.arch
    assert params["trainer.max_epochs"] == str(epochs)
    assert params["task_name"] == "weld"
    assert json.loads(params["class_names"]) == list(cfg.class_names)
    assert json.loads(params["model.net.image_mean"]) == list(cfg.model.net.image_mean)
    assert "model" not in params and "model.net" not in params
    assert not [k for k, v in params.items() if v.startswith(("{", "DictConfig", "ListConfig"))]

    # Metrics: one val point per epoch, training curves, and the best model's summary.
    val_map50 = client.get_metric_history(run_id, "val/mAP50")
    assert len(val_map50) == epochs
    assert all(0.0 <= m.value <= 1.0 for m in val_map50)
    assert client.get_metric_history(run_id, "train/loss")
    assert run.data.metrics["best/val/mAP50"] == pytest.approx(metrics["val/mAP50"])

    # Artifacts: the bundle, the figures, the per-epoch history; stored by the server.
    files = artifact_files(client, run_id)
    assert files.get("model/bundle.pt", 0) > 0
    assert files.get("metrics/history.json", 0) > 0
    assert "metrics/train.json" in files
    pngs = [p for p in files if p.startswith("plots/") and p.endswith(".png")]
    assert pngs and all(files[p] > 0 for p in pngs)
    figures = ("predictions", "per_class", "thresholds", "confusion_matrix", "pr_curve")
    assert {f"plots/val_{figure}.png" for figure in figures} <= set(pngs)
    assert list(artifacts_dir.rglob("bundle.pt")), "artifacts should land in the server's store"

    local = Path(client.download_artifacts(run_id, "metrics/history.json", str(tmp_path / "dl")))
    history = json.loads(local.read_text())
    assert [r["epoch"] for r in history] == list(range(epochs))
    assert all(r["run_id"] == run_id and "val/mAP50" in r for r in history)
    # With a remote server, nothing is stored locally under the cwd.
    assert not (tmp_path / "mlartifacts").exists() and not (tmp_path / "mlruns").exists()
    assert not (tmp_path / "mlruns.db").exists()


def test_resolve_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri() == DEFAULT_TRACKING_URI == "sqlite:///mlruns.db"
    assert resolve_tracking_uri(None) == DEFAULT_TRACKING_URI
    assert resolve_tracking_uri("http://127.0.0.1:1") == "http://127.0.0.1:1"

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert resolve_tracking_uri() == "http://tracking.example:5000"
    assert resolve_tracking_uri("sqlite:///other.db") == "sqlite:///other.db"  # config wins
