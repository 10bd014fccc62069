"""`defects doctor` against a live MLflow server and a live moto S3 endpoint on loopback, then
against both stopped; time-outs, local stores, folders, thresholds, and no secret printed."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import fire
import pytest

from defects.cli import COMMANDS
from defects.doctor import Check, check_dvc_remote, check_mlflow, report, run_checks
from defects.settings import load_settings, variable_names
from tests.servers import mlflow_server, moto_server

BUCKET = "defects-dvc"
SECRET = f"planted{uuid.uuid4().hex}"
TINY = {"min_disk_gb": 0.001, "min_memory_gb": 0.001}  # thresholds any machine meets
EXPECTED = {
    "settings", "python", "torch", "cuda", "yolo extra", "dvc extra", "onnxruntime",
    "mlflow store", "dvc remote", "data folder", "model folder", "output folder", "disk",
    "memory", "chromium",
}  # fmt: skip
# Generous: a loaded 2-core machine has taken over 90 s to start `mlflow server`.
STARTUP_TIMEOUT_S = 240.0
OPTIONAL = {"yolo extra", "dvc extra", "dvc remote", "chromium"}


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder, no settings or AWS configuration from this shell."""
    for name in variable_names():
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws_config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws_credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_env(root: Path, **values: str) -> None:
    (root / ".env").write_text("".join(f"{k}={v}\n" for k, v in values.items()))


def write_dvc_config(root: Path, url: str, local_url: str | None = None) -> None:
    (root / ".dvc").mkdir(exist_ok=True)
    remote = "['remote \"storage\"']"
    (root / ".dvc" / "config").write_text(
        f"[core]\n    remote = storage\n{remote}\n    url = {url}\n"
    )
    local = root / ".dvc" / "config.local"
    if local_url is None:
        local.unlink(missing_ok=True)
    else:
        local.write_text(f"{remote}\n    url = {local_url}\n")


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


def machine_env(root: Path, tracking_uri: str, s3_endpoint: str) -> None:
    write_env(
        root,
        DEFECTS_TRACKING_URI=tracking_uri,
        DEFECTS_S3_ENDPOINT_URL=s3_endpoint,
        DEFECTS_S3_ACCESS_KEY_ID="doctor-key-id",
        DEFECTS_S3_SECRET_ACCESS_KEY=SECRET,
        DEFECTS_DATA_DIR=str(root / "data"),
        DEFECTS_MODEL_DIR=str(root / "models"),
        DEFECTS_OUTPUT_DIR=str(root / "outputs"),
    )


def run_command(capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, str]:
    """`defects doctor FLAGS` through fire, as the command line runs it: (status, stdout)."""
    args = ["doctor", *flags, "--min_disk_gb", "0.001", "--min_memory_gb", "0.001"]
    try:
        fire.Fire(COMMANDS, command=args)
        status = 0
    except SystemExit as exc:
        status = int(exc.code or 0)
    printed = capsys.readouterr()
    assert SECRET not in printed.out + printed.err
    return status, printed.out


def test_live_then_stopped_services(machine: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import boto3

    write_dvc_config(machine, f"s3://{BUCKET}/store")
    servers = machine / "servers"
    (servers / "mlflow").mkdir(parents=True)
    (servers / "moto").mkdir()
    with (
        mlflow_server(servers / "mlflow", STARTUP_TIMEOUT_S) as tracking,
        moto_server(servers / "moto", STARTUP_TIMEOUT_S) as s3,
    ):
        machine_env(machine, tracking, s3)
        boto3.client(
            "s3",
            endpoint_url=s3,
            region_name="us-east-1",
            aws_access_key_id="doctor-key-id",
            aws_secret_access_key=SECRET,
        ).create_bucket(Bucket=BUCKET)

        live = by_name(run_checks(machine, timeout=3, **TINY))
        assert set(live) == EXPECTED
        assert live["mlflow store"].ok, live["mlflow store"]
        assert live["mlflow store"].detail == f"{tracking} answers (200)"
        assert live["dvc remote"].ok, live["dvc remote"]
        assert live["dvc remote"].detail == (
            f"storage: s3://{BUCKET}/store at {s3}: bucket {BUCKET} reachable"
        )
        for name in ("data folder", "model folder", "output folder", "settings"):
            assert live[name].ok, live[name]
        assert live["settings"].detail == str(machine / ".env")
        status, text = run_command(capsys)
        assert status == 0, text
        lines = text.splitlines()
        assert len(lines) == len(EXPECTED) + 1 and lines[-1].startswith("all required checks")
        assert f"✔ mlflow store  {tracking} answers (200)" in lines

        # .dvc/config.local overrides the remote, as in DVC: a bucket that is not there.
        write_dvc_config(machine, f"s3://{BUCKET}/store", local_url="s3://no-such-bucket/x")
        missing = check_dvc_remote(load_settings(), machine, timeout=3)
        assert not missing.ok and not missing.required
        assert missing.detail.endswith("no bucket no-such-bucket")
        assert missing.fix.startswith("create bucket no-such-bucket")
        write_dvc_config(machine, f"s3://{BUCKET}/store")

    stopped = by_name(run_checks(machine, timeout=3, **TINY))
    mlflow, remote = stopped["mlflow store"], stopped["dvc remote"]
    assert not mlflow.ok and mlflow.required
    assert mlflow.detail == f"{tracking} unreachable (Connection refused)"
    port = tracking.rsplit(":", 1)[1]
    assert f"mlflow server --host 127.0.0.1 --port {port}" in mlflow.fix
    assert not remote.ok and not remote.required
    assert remote.detail.startswith(f"storage: s3://{BUCKET}/store at {s3}: unreachable (")
    assert "DEFECTS_S3_ENDPOINT_URL" in remote.fix and "endpointurl" in remote.fix

    status, text = run_command(capsys)
    assert status == 1
    line = next(li for li in text.splitlines() if li.startswith("✖ mlflow store"))
    assert line == f"✖ mlflow store  {mlflow.detail} (required); fix: {mlflow.fix}"
    assert text.splitlines()[-1].startswith("1 required check failed")

    status, text = run_command(capsys, "--json")
    assert status == 1
    checks = json.loads(text)
    assert isinstance(checks, list) and {c["name"] for c in checks} == EXPECTED
    for check in checks:
        assert set(check) == {"name", "ok", "detail", "fix", "required"}
        assert isinstance(check["ok"], bool) and isinstance(check["required"], bool)
        assert all(isinstance(check[k], str) for k in ("name", "detail", "fix"))
        assert check["ok"] or check["fix"], check
    assert {c["name"] for c in checks if not c["required"]} >= OPTIONAL
    failed = {c["name"] for c in checks if not c["ok"] and c["required"]}
    assert failed == {"mlflow store"}


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def test_network_checks_give_up_after_the_timeout(machine: Path, silent_port: int) -> None:
    hung = f"http://127.0.0.1:{silent_port}"
    machine_env(machine, hung, hung)
    write_dvc_config(machine, f"s3://{BUCKET}/store")
    settings = load_settings()
    for check in (check_mlflow, lambda s, t: check_dvc_remote(s, machine, t)):
        started = time.monotonic()
        result = check(settings, 1.0)
        elapsed = time.monotonic() - started
        assert not result.ok, result
        assert elapsed < 5.0, f"{result.name} took {elapsed:.1f}s with a 1 s time-out"
        assert "timed out" in result.detail or "Timeout" in result.detail, result.detail


def test_local_store_folders_and_thresholds(machine: Path) -> None:
    write_env(machine, MLFLOW_TRACKING_URI=f"sqlite:///{machine / 'runs' / 'mlruns.db'}")
    checks = by_name(run_checks(machine, timeout=1, **TINY))
    assert checks["mlflow store"].ok and checks["mlflow store"].detail.endswith("writable")
    remote = checks["dvc remote"]  # no DVC repository in an empty folder: optional
    assert not remote.ok and not remote.required and "dvc init" in remote.fix

    (machine / "runs").mkdir()
    (machine / "runs" / "mlruns.db").write_text("not a database")
    blocker = machine / "a-file"
    blocker.write_text("")
    write_env(
        machine,
        MLFLOW_TRACKING_URI=f"sqlite:///{machine / 'runs' / 'mlruns.db'}",
        DEFECTS_DATA_DIR=str(blocker / "data"),
    )
    write_dvc_config(machine, str(machine / "remote"))
    checks = by_name(run_checks(machine, timeout=1, min_disk_gb=1e9, min_memory_gb=1e9))
    assert checks["mlflow store"].detail.endswith("mlruns.db is not a sqlite database")
    data = checks["data folder"]
    assert not data.ok and data.required and data.detail == f"{blocker} is not a folder"
    assert "DEFECTS_DATA_DIR" in data.fix
    assert checks["model folder"].ok and checks["dvc remote"].ok  # a local remote folder
    for name in ("disk", "memory"):
        assert not checks[name].ok and checks[name].required and checks[name].fix


def test_bad_settings_are_a_failed_check_not_a_crash(
    machine: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_env(machine, DEFECTS_DEVICE=SECRET, DEFECTS_S3_SECRET_ACCESS_KEY=SECRET)
    checks = by_name(run_checks(machine, timeout=1, **TINY))
    settings = checks["settings"]
    assert not settings.ok and settings.required
    assert "DEFECTS_DEVICE: Input should be" in settings.detail
    assert set(checks) == EXPECTED  # every other check still ran
    status, text = run_command(capsys, "--json")
    assert status == 1 and SECRET not in text
    assert SECRET not in report(list(checks.values()))


def test_cuda_is_required_only_when_the_device_says_cuda(machine: Path) -> None:
    import torch

    assert not by_name(run_checks(machine, timeout=1, **TINY))["cuda"].required
    write_env(machine, DEFECTS_DEVICE="cuda")
    cuda = by_name(run_checks(machine, timeout=1, **TINY))["cuda"]
    assert cuda.required and cuda.ok == torch.cuda.is_available()
    if not cuda.ok:
        assert "DEFECTS_DEVICE=cpu" in cuda.fix
