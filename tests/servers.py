"""Loopback servers for tests: a free port, and a stop that leaves no process behind."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process_group(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM the server's process group, wait, then SIGKILL whatever is left of it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)


@contextmanager
def running_server(
    command: list[str], health_url: str, root: Path, timeout: float, env: dict | None = None
) -> Iterator[subprocess.Popen]:
    """Start `command` in its own session (log in root/server.log), wait until `health_url`
    answers 200, yield the process, and stop its whole group afterwards."""
    log_path = root / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command,
            cwd=root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{command[2]} exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(health_url, timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{command[2]} not up after {timeout:.0f}s:\n{log_path.read_text()}")
            time.sleep(0.3)
        yield proc
    finally:
        stop_process_group(proc)


@contextmanager
def mlflow_server(root: Path, timeout: float = 90.0) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1 (sqlite store and proxied artifacts under `root`); yields
    its URL and stops it afterwards."""
    with mlflow_server_process(root, timeout) as (url, _):
        yield url


@contextmanager
def mlflow_server_process(
    root: Path, timeout: float = 90.0
) -> Iterator[tuple[str, subprocess.Popen]]:
    """`mlflow_server`, yielding its process too (for tests that kill it)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    # No huey job runner (a handful of extra processes and a /dev/shm queue) and no telemetry.
    env.update(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true")
    command = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
    ]  # fmt: skip
    with running_server(command, f"{url}/health", root, timeout, env) as proc:
        yield url, proc


@contextmanager
def moto_server(root: Path, timeout: float = 30.0) -> Iterator[str]:
    """A moto S3 server on 127.0.0.1; yields its endpoint URL and stops it afterwards."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with running_server(command, f"{url}/moto-api/", root, timeout):
        yield url


@contextmanager
def waitress_serving(app: Any, **options: Any) -> Iterator[str]:
    """`app` on the production server (defects.server.make_waitress, `options` passed on) on
    a free 127.0.0.1 port in a thread of this process; yields its URL and stops it after."""
    from defects.server import make_waitress

    server = make_waitress(app, host="127.0.0.1", port=0, **options)
    thread = threading.Thread(target=server.run, name="test-waitress", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        # waitress stops serving when its socket map is empty (as webtest stops it)
        while server._map:
            for dispatcher in list(server._map.values()):
                dispatcher.handle_close()
        server.task_dispatcher.shutdown()
        thread.join(10)
