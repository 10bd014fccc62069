"""The model registry round trip: train tiny -> evaluate with `registry.register=true` ->
load `models:/weld@staging` -> the same predictions as the bundle; with the default sqlite
store and with a real `mlflow server` on loopback; and the errors of a URI naming nothing."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

import defects
from defects.cli import main
from defects.config import ConfigError
from defects.evaluate import evaluate
from defects.registry import CACHE_FOLDER, RegistryError, fetch, parse_model_uri
from defects.train import train
from tests.conftest import compose_config, torch_threads, weld_overrides
from tests.servers import free_port, mlflow_server

# A loaded 2-core machine has taken over 90 s to start `mlflow server` (tests/test_doctor.py).
STARTUP_TIMEOUT_S = 240.0
NAME = "weld"  # registry.name defaults to the dataset


@pytest.fixture(scope="module")
def mlflow_globals() -> Iterator[None]:
    """Lightning's MLFlowLogger sets MLflow's process-wide tracking URI (and exports it);
    put both back after the module so later tests talk to their own stores."""
    from mlflow.tracking._tracking_service import utils as tracking_utils

    before_uri = tracking_utils._tracking_uri
    before_env = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    yield
    mlflow.set_tracking_uri(before_uri)  # type: ignore[arg-type]  # None unsets it
    if before_env is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before_env


@pytest.fixture(scope="module")
def trained(weld_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One tiny epoch of the weld detector: its bundle and the overrides that made it."""
    out = tmp_path_factory.mktemp("registry_run")
    base = [
        *weld_overrides(weld_root, out),
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
    ]
    with torch_threads(1):
        train(compose_config(base))
    return {"base": base, "bundle": out / "model_dir" / "bundle.pt"}


@pytest.fixture(scope="module")
def from_bundle(trained: dict) -> Any:
    """The predictor of the bundle file itself: what every registry load must match."""
    return defects.load(trained["bundle"])


def evaluate_and_register(trained: dict, store: str, root: Path, *extra: str) -> dict:
    """`python -m defects.evaluate ... registry.register=true` against `store`."""
    cfg = compose_config(
        [
            *trained["base"],
            f"ckpt_path={trained['bundle']}",
            "logger=mlflow",
            f"logger.tracking_uri={store}",
            f"logger.artifact_location={root / 'mlartifacts'}",
            "registry.register=true",
            *extra,
        ]
    )
    with torch_threads(1):
        return evaluate(cfg)


@pytest.fixture(scope="module")
def sqlite_registry(
    trained: dict, mlflow_globals: None, tmp_path_factory: pytest.TempPathFactory
) -> dict:
    """The default kind of store (a sqlite file) holding weld version 1 at @staging."""
    root = tmp_path_factory.mktemp("sqlite_store")
    store = f"sqlite:///{root / 'mlruns.db'}"
    metrics = evaluate_and_register(trained, store, root, "registry.alias=staging")
    return {"store": store, "root": root, "metrics": metrics}


@pytest.fixture
def machine(sqlite_registry: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This machine's settings point at the sqlite store; models go under tmp_path/models."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_registry["store"])
    monkeypatch.setenv("DEFECTS_MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "models" / CACHE_FOLDER


def assert_same_detections(a: Any, b: Any, images: list[Path]) -> None:
    """Every detection the network keeps, identical: same weights, same code, same device."""
    assert a.class_names == b.class_names and a.thresholds == b.thresholds
    total = 0
    for image in images:
        x, y = a.detect_all([image])[0], b.detect_all([image])[0]
        np.testing.assert_array_equal(x.boxes, y.boxes)
        np.testing.assert_array_equal(x.scores, y.scores)
        assert x.labels == y.labels
        total += len(x)
    assert total > 0  # the comparison saw real boxes


def test_evaluate_registers_the_bundle_with_its_metrics(trained: dict, sqlite_registry: dict):
    client = MlflowClient(sqlite_registry["store"])
    version = client.get_model_version_by_alias(NAME, "staging")
    assert str(version.version) == "1"
    metrics = sqlite_registry["metrics"]
    assert {"test/mAP", "test/mAP50"} <= set(metrics)
    tags = version.tags
    for key, value in metrics.items():
        assert float(tags[key]) == pytest.approx(value, abs=1e-6), key
    assert {k: tags[k] for k in ("task", "dataset", "kind", "split")} == {
        "task": "weld",
        "dataset": "weld",
        "kind": "fasterrcnn",
        "split": "test",
    }
    assert tags["defects_version"] == defects.__version__
    # The version belongs to the evaluate run, which holds the same numbers and the bundle.
    assert version.run_id is not None
    run = client.get_run(version.run_id)
    assert run.info.run_name == "evaluate-test" and run.info.status == "FINISHED"
    assert run.data.metrics["test/mAP50"] == pytest.approx(metrics["test/mAP50"])
    assert [a.path for a in client.list_artifacts(version.run_id, "model")] == ["model/bundle.pt"]


def test_load_by_alias_predicts_as_the_bundle(
    trained: dict, from_bundle: Any, machine: Path, weld_root: Path
) -> None:
    images = sorted((weld_root / "test" / "images").glob("*.png"))
    registered = defects.load(f"models:/{NAME}@staging")
    assert_same_detections(from_bundle, registered, images)
    # Downloaded whole into <model root>/.registry/NAME/VERSION, nothing half-written beside it.
    cached = machine / NAME / "1" / "model" / "bundle.pt"
    assert cached.read_bytes() == trained["bundle"].read_bytes()
    assert [p.name for p in (machine / NAME).iterdir()] == ["1"]
    # By version, from the cache: the same file, not downloaded again.
    before = cached.stat().st_mtime_ns
    assert fetch(f"models:/{NAME}/1") == cached
    assert cached.stat().st_mtime_ns == before


def test_cli_predict_and_serve_take_a_registry_uri(
    trained: dict, machine: Path, weld_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    images = weld_root / "test" / "images"
    outputs = {}
    for label, model in (
        ("bundle", str(trained["bundle"])),
        ("registry", f"models:/{NAME}@staging"),
    ):
        with torch_threads(1):
            main(
                [
                    "predict",
                    "--model",
                    model,
                    "--input",
                    str(images),
                    "--output",
                    str(tmp_path / label),
                    "--overlays",
                    "false",
                ]
            )
        outputs[label] = json.loads((tmp_path / label / "detections.json").read_text())
    assert outputs["registry"] == outputs["bundle"] and len(outputs["bundle"]) == 4
    # serve loads the model before it binds a port: an unknown alias ends it with one line.
    with pytest.raises(SystemExit) as ended:
        main(["serve", "--model", f"models:/{NAME}@production", "--port", str(free_port())])
    message = str(ended.value.code)
    assert message.startswith(f"defects: models:/{NAME}@production: ")
    assert "no alias 'production'" in message and "@staging = version 1" in message


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (f"models:/{NAME}@production", f"registered model '{NAME}' has no alias 'production'"),
        (
            f"models:/{NAME}/7",
            f"registered model '{NAME}' has no version 7 "
            "(aliases: @staging = version 1; versions: 1)",
        ),
        ("models:/steel@staging", "no registered model 'steel' in sqlite:///"),
    ],
)
def test_a_uri_naming_nothing_is_a_clear_error(machine: Path, uri: str, expected: str) -> None:
    with pytest.raises(RegistryError) as raised:
        defects.load(uri)
    assert str(raised.value).startswith(f"{uri}: ") and expected in str(raised.value)
    assert not machine.exists() or not any(machine.rglob("*.pt"))


def test_a_missing_sqlite_store_is_named_not_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "nowhere.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    with pytest.raises(RegistryError, match=f"models:/weld@staging: no model store at .*{db.name}"):
        fetch("models:/weld@staging", cache_root=tmp_path / "cache")
    assert not db.exists()


def test_an_unreachable_server_is_an_error_within_the_timeout(tmp_path: Path) -> None:
    """Nothing listens on the port; the login in the URI never reaches the message."""
    secret = f"planted{uuid.uuid4().hex}"
    store = f"http://reader:{secret}@127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(RegistryError) as raised:
        fetch("models:/weld@production", tracking_uri=store, cache_root=tmp_path, timeout=3)
    assert time.monotonic() - start < 15
    message = str(raised.value)
    assert message.startswith("models:/weld@production: the model store http://127.0.0.1:")
    assert "does not answer (Connection refused)" in message
    assert secret not in message and "reader" not in message
    assert not list(tmp_path.iterdir())


def test_a_server_that_never_answers_times_out(tmp_path: Path) -> None:
    """A port that accepts connections and says nothing: the time-out ends the wait."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        store = f"http://127.0.0.1:{silent.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(RegistryError, match=r"does not answer \(no answer within 1 s\)"):
            fetch("models:/weld@production", tracking_uri=store, cache_root=tmp_path, timeout=1)
        assert time.monotonic() - start < 10


@pytest.mark.parametrize(
    "uri", ["models:/weld", "models:/weld@", "models:/weld/v2", "runs:/x/model"]
)
def test_a_malformed_uri_is_refused(uri: str) -> None:
    with pytest.raises(ValueError, match="expected models:/NAME@ALIAS or models:/NAME/VERSION"):
        parse_model_uri(uri)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("registry.alias=latest", "registry.alias: 'latest' is reserved"),
        ("registry.alias=v2", "registry.alias: 'v2' is reserved"),
        ("registry.name=a/b", "registry.name: 'a/b' holds /"),
        ("logger=none", "registry.register: .* needs the MLflow logger"),
    ],
)
def test_bad_registry_settings_fail_before_scoring(
    trained: dict, tmp_path: Path, override: str, message: str
) -> None:
    store = tmp_path / "mlruns.db"
    cfg = compose_config(
        [
            *trained["base"],
            f"ckpt_path={trained['bundle']}",
            "registry.register=true",
            *(
                [override]  # the logger group's own choice
                if override.startswith("logger=")
                else ["logger=mlflow", f"logger.tracking_uri=sqlite:///{store}", override]
            ),
        ]
    )
    report = Path(cfg.paths.metrics_dir) / "eval.json"
    before = report.stat().st_mtime_ns if report.exists() else None
    with pytest.raises(ConfigError, match=message):
        evaluate(cfg)
    # Refused before the scoring (no report written) and before any MLflow run.
    assert (report.stat().st_mtime_ns if report.exists() else None) == before
    assert not store.exists()


def test_server_round_trip(
    trained: dict,
    from_bundle: Any,
    mlflow_globals: None,
    weld_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Register through a real tracking server (artifacts proxied into its store), load by
    alias through it; once it is stopped, the alias cannot be resolved: a clear error."""
    monkeypatch.setenv("DEFECTS_MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.chdir(tmp_path)
    server_root = tmp_path / "server"
    server_root.mkdir()
    images = sorted((weld_root / "test" / "images").glob("*.png"))
    with mlflow_server(server_root, STARTUP_TIMEOUT_S) as url:
        evaluate_and_register(trained, url, tmp_path, "registry.alias=production")
        assert list((server_root / "artifacts").rglob("bundle.pt")), "stored by the server"
        assert not (tmp_path / "mlartifacts").exists() and not (tmp_path / "mlruns.db").exists()
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        registered = defects.load(f"models:/{NAME}@production")
        assert_same_detections(from_bundle, registered, images)
    start = time.monotonic()
    with pytest.raises(RegistryError, match="does not answer"):
        defects.load(f"models:/{NAME}@production")
    assert time.monotonic() - start < 30
