"""The committed DVC remote round-trips data through S3 (moto), with endpoint/creds kept local."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from configobj import ConfigObj

from defects.data.synthetic import generate_weld_dataset
from tests.servers import free_port, running_server

REPO_ROOT = Path(__file__).resolve().parents[1]
COMMITTED_DVC_CONFIG = REPO_ROOT / ".dvc" / "config"
REMOTE = "storage"
FAKE_KEY = "testing"
STARTUP_TIMEOUT_S = 30.0
DVC_TIMEOUT_S = 120.0
# Config keys that must only ever live in `.dvc/config.local` or the environment.
LOCAL_ONLY_KEYS = (
    "endpointurl",
    "access_key_id",
    "secret_access_key",
    "session_token",
    "credentialpath",
    "configpath",
    "profile",
)


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 for this module; yields its endpoint URL."""
    root = tmp_path_factory.mktemp("moto")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with running_server(command, f"{url}/moto-api/", root, STARTUP_TIMEOUT_S):
        yield url


def sandbox_environment(tmp_path: Path) -> dict[str, str]:
    """Variables for git/dvc/boto3: fake AWS creds, no analytics, every config/cache in tmp."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {
        "HOME": str(home),
        "AWS_ACCESS_KEY_ID": FAKE_KEY,
        "AWS_SECRET_ACCESS_KEY": FAKE_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(home / "aws_config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws_credentials"),
        "DVC_NO_ANALYTICS": "1",
        "DVC_STUDIO_OFFLINE": "1",
        "DVC_SITE_CACHE_DIR": str(tmp_path / "dvc_site_cache"),
        "DVC_GLOBAL_CONFIG_DIR": str(home / "dvc_global"),
        "DVC_SYSTEM_CONFIG_DIR": str(home / "dvc_system"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_AUTHOR_NAME": "defects tests",
        "GIT_AUTHOR_EMAIL": "tests@defects.invalid",
        "GIT_COMMITTER_NAME": "defects tests",
        "GIT_COMMITTER_EMAIL": "tests@defects.invalid",
    }


# Variables of the developer's machine that would point boto3 elsewhere.
FOREIGN_AWS = ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


@pytest.fixture
def sandbox_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The sandbox's variables in this process's environment too (boto3 runs here)."""
    for name in FOREIGN_AWS:
        monkeypatch.delenv(name, raising=False)
    for name, value in sandbox_environment(tmp_path).items():
        monkeypatch.setenv(name, value)
    return dict(os.environ)


def run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Run a command, failing the test with its output when it fails or hangs."""
    try:
        done = subprocess.run(
            args,
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=DVC_TIMEOUT_S,
            check=True,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.CalledProcessError as err:
        pytest.fail(
            f"{args} exited with {err.returncode}\n"
            f"--- stdout\n{err.stdout}\n--- stderr\n{err.stderr}"
        )
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"{args} timed out\n--- stdout\n{err.stdout}\n--- stderr\n{err.stderr}")
    return done.stdout


def dvc(*args: str, cwd: Path, env: dict[str, str]) -> str:
    return run([sys.executable, "-m", "dvc", *args], cwd, env)


def git(*args: str, cwd: Path, env: dict[str, str]) -> str:
    return run(["git", *args], cwd, env)


def file_digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def committed_remote() -> tuple[str, str]:
    """(bucket, prefix) of the remote that the committed `.dvc/config` defines."""
    url = ConfigObj(str(COMMITTED_DVC_CONFIG))[f'remote "{REMOTE}"']["url"]
    parsed = urlparse(url)
    assert parsed.scheme == "s3", url
    return parsed.netloc, parsed.path.strip("/")


def bucket_client(endpoint: str, bucket: str) -> Any:
    """A boto3 S3 client of `endpoint` (moto takes any keys), once `bucket` is made there."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=FAKE_KEY,
        aws_secret_access_key=FAKE_KEY,
    )
    client.create_bucket(Bucket=bucket)
    return client


def test_committed_dvc_config_has_no_endpoint_or_credentials() -> None:
    config = ConfigObj(str(COMMITTED_DVC_CONFIG))
    assert config["core"]["remote"] == REMOTE
    assert committed_remote() == ("defects-dvc", "store")
    for section, values in config.items():
        leaked = [key for key in values if key.lower() in LOCAL_ONLY_KEYS]
        assert not leaked, f"{section} in {COMMITTED_DVC_CONFIG} sets {leaked}"
    text = COMMITTED_DVC_CONFIG.read_text().lower()
    assert not [key for key in LOCAL_ONLY_KEYS if key in text]
    # ...and the place they do belong is ignored by git.
    ignored = (REPO_ROOT / ".dvc" / ".gitignore").read_text().split()
    assert "/config.local" in ignored


def test_push_then_pull_restores_data(
    s3_endpoint: str, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    env = sandbox_env
    repo = tmp_path / "repo"
    repo.mkdir()
    git("init", "-q", cwd=repo, env=env)
    dvc("init", "-q", cwd=repo, env=env)
    shutil.copyfile(COMMITTED_DVC_CONFIG, repo / ".dvc" / "config")
    bucket, prefix = committed_remote()

    s3 = bucket_client(s3_endpoint, bucket)
    for key, value in (
        ("endpointurl", s3_endpoint),
        ("access_key_id", FAKE_KEY),
        ("secret_access_key", FAKE_KEY),
    ):
        dvc("remote", "modify", "--local", REMOTE, key, value, cwd=repo, env=env)
    # --local kept the endpoint and keys out of the config that gets committed.
    assert (repo / ".dvc" / "config").read_text() == COMMITTED_DVC_CONFIG.read_text()
    assert s3_endpoint in (repo / ".dvc" / "config.local").read_text()

    data = repo / "data" / "weld"
    generate_weld_dataset(data, n_train=3, n_valid=2, n_test=1, width=128, height=96, seed=5)
    before = file_digests(data)
    assert len(before) >= 10 and any(name.endswith(".png") for name in before)

    dvc("add", "data/weld", cwd=repo, env=env)
    git("add", "-A", cwd=repo, env=env)
    git("commit", "-q", "-m", "track weld data", cwd=repo, env=env)
    tracked = git("ls-files", cwd=repo, env=env).split()
    assert "data/weld.dvc" in tracked and ".dvc/config" in tracked
    assert ".dvc/config.local" not in tracked
    assert not [name for name in tracked if name.startswith("data/weld/")]

    dvc("push", cwd=repo, env=env)
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/")
    keys = {obj["Key"] for obj in listing.get("Contents", [])}
    stored = {key.split("/")[-2] + key.split("/")[-1] for key in keys if "/files/md5/" in key}
    assert set(before.values()) <= stored, "every file's content should be in the bucket"

    shutil.rmtree(data)
    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(env["DVC_SITE_CACHE_DIR"], ignore_errors=True)
    dvc("pull", cwd=repo, env=env)
    assert file_digests(data) == before
    cloud_status = json.loads(dvc("status", "--cloud", "--json", cwd=repo, env=env))
    assert cloud_status == {}, "cache and remote should be in sync"
