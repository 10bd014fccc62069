"""Storage faults: `defects data pull/push` against an S3 remote (moto on loopback) that is
down, refuses the credentials or lacks the bucket ends in one line naming the endpoint and
what to check, leaves the workspace as it was and never shows the secret key; so does a
remote that dies mid-pull. A pull killed part-way (its downloads held by a proxy, then
SIGKILL) followed by a pull restores the data, fetching only what was missing."""

from __future__ import annotations

import http.client
import io
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import (
    AbstractContextManager,
    contextmanager,
    nullcontext,
    redirect_stdout,
    suppress,
)
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from defects.cli import main
from defects.settings import load_settings
from tests.servers import free_port, moto_server
from tests.test_dvc_remote import (
    COMMITTED_DVC_CONFIG,
    bucket_client,
    committed_remote,
    file_digests,
    sandbox_environment,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SECRET = "storage-secret-9f3c1a77e2"
KEY_ID = "storage-key-id"
DATA = Path("data") / "parts"
N_FILES = 12
CLI_TIMEOUT_S = 600.0
NO_SCM = "[core]\n    no_scm = True\n"  # the committed remote, in a repo without git
# Generous: on a loaded machine a server takes long to start; on an idle one, seconds.
STARTUP_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto"), STARTUP_TIMEOUT_S) as url:
        yield url


def machine(tmp: Path, endpoint: str) -> dict[str, str]:
    """A sandboxed environment whose S3 endpoint and keys are this machine's settings
    (DEFECTS_S3_*), as a user would set them; the AWS_* names come from those."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DEFECTS_"))}
    env.update(sandbox_environment(tmp))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        del env[name]
    env.update(
        DEFECTS_ENV_FILE=os.devnull,
        DEFECTS_S3_ENDPOINT_URL=endpoint,
        DEFECTS_S3_ACCESS_KEY_ID=KEY_ID,
        DEFECTS_S3_SECRET_ACCESS_KEY=SECRET,
        PYTHONPATH=str(REPO_ROOT),  # this checkout's package, run from the repo below
    )
    return env


def start_cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "defects", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


def cli(*args: str, cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """`defects ARGS`: exit status and output (stdout and stderr together)."""
    proc = start_cli(*args, cwd=cwd, env=env)
    try:
        output, _ = proc.communicate(timeout=CLI_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"defects {' '.join(args)} timed out:\n{proc.communicate()[0]}")
    return proc.returncode, output


def workspace(repo: Path) -> dict[str, str]:
    """Every file of the checkout but git's and DVC's own stores (their cache and lock)."""
    skip = (".git/", ".dvc/cache/", ".dvc/tmp/")
    return {k: v for k, v in file_digests(repo).items() if not k.startswith(skip)}


def files_holding(root: Path, secret: str) -> list[str]:
    needle = secret.encode()
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.fixture(scope="module")
def pushed(s3: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], str]:
    """A DVC repo whose data/parts is tracked and pushed with `defects data push`; returns the
    repo (copy it before use), the data's digests and the push's output. Set up with DVC's
    API in this process: no git (DVC needs none), no interpreter started per step."""
    from dvc.repo import Repo

    tmp = tmp_path_factory.mktemp("pushed")
    env = machine(tmp, s3)
    repo = tmp / "repo"
    with pytest.MonkeyPatch.context() as patch:
        for name, value in sandbox_environment(tmp).items():
            patch.setenv(name, value)
        Repo.init(str(repo), no_scm=True).close()
        committed = COMMITTED_DVC_CONFIG.read_text()
        assert committed.startswith("[core]\n")
        (repo / ".dvc" / "config").write_text(committed.replace("[core]\n", NO_SCM, 1))
        rng = random.Random(7)
        (repo / DATA).mkdir(parents=True)
        for i in range(N_FILES):
            (repo / DATA / f"part{i:02d}.bin").write_bytes(rng.randbytes(20_000))
        patch.chdir(repo)  # DVC takes paths as from the working folder
        with Repo(str(repo)) as dvc:
            dvc.add(DATA.as_posix())
    bucket_client(s3, committed_remote()[0])
    output = run_main(["data", "push"], env, repo)
    return repo, file_digests(repo / DATA), output


def clone(pushed: tuple[Path, dict[str, str], str], tmp_path: Path, with_data: bool) -> Path:
    """The pushed repo, as the machine that pushed it has it (`with_data`) or as a new
    machine has it: data and cache not there yet."""
    repo = tmp_path / "repo"
    shutil.copytree(pushed[0], repo, symlinks=True)
    if not with_data:
        shutil.rmtree(repo / DATA)
        shutil.rmtree(repo / ".dvc" / "cache", ignore_errors=True)
    return repo


def test_push_then_pull_through_the_settings_endpoint(
    pushed: tuple[Path, dict[str, str], str], s3: str, tmp_path: Path
) -> None:
    _, digests, push_output = pushed
    assert len(digests) == N_FILES
    assert f"dvc push (storage): {N_FILES + 1} files pushed" in push_output  # and the .dir
    assert SECRET not in push_output
    repo = clone(pushed, tmp_path, with_data=False)
    output = run_main(["data", "pull"], machine(tmp_path, s3), repo)
    (line,) = output.strip().splitlines()  # DVC's and boto3's chatter kept out
    assert line == f"dvc pull (storage): {N_FILES + 1} files fetched and {N_FILES} files added"
    assert file_digests(repo / DATA) == digests


def as_machine(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], repo: Path) -> None:
    """This process as `machine` sets it, in `repo`; undone after the test. The names the CLI
    exports for boto3 (AWS_*) are set here first, so that they are undone too."""
    for name in [n for n in os.environ if n.startswith(("AWS_", "DEFECTS_")) and n not in env]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name, value in load_settings().environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(repo)


def run_main(args: list[str], env: dict[str, str], repo: Path) -> str:
    """`defects ARGS` through the CLI's main() in this process (no interpreter and torch to
    start each time), as `machine` sets it, in `repo`: what it printed."""
    with pytest.MonkeyPatch.context() as patch, redirect_stdout(io.StringIO()) as out:
        as_machine(patch, env, repo)
        main(args)
    return out.getvalue()


@contextmanager
def credentials_refused(endpoint: str) -> Iterator[None]:
    """moto checks every request's keys against its IAM users (there are none) in the block."""

    def set_auth(count: str) -> None:
        request = urllib.request.Request(
            f"{endpoint}/moto-api/reset-auth", data=count.encode(), method="POST"
        )
        request.add_header("Content-Type", "text/plain")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    set_auth("0")
    try:
        yield
    finally:
        set_auth("inf")


@pytest.mark.parametrize("direction", ["pull", "push"])
@pytest.mark.parametrize("fault", ["endpoint down", "credentials refused", "no bucket"])
def test_a_faulty_remote_ends_in_one_line_naming_it(
    fault: str,
    direction: str,
    pushed: tuple[Path, dict[str, str], str],
    s3: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Through the CLI's main() in this process (see `run_main`); the subprocess tests below
    cover what a shell sees."""
    repo = clone(pushed, tmp_path, with_data=direction == "push")
    endpoint = f"http://127.0.0.1:{free_port()}" if fault == "endpoint down" else s3
    env = machine(tmp_path, endpoint)
    if fault == "no bucket":
        (repo / ".dvc" / "config.local").write_text(
            "['remote \"storage\"']\n    url = s3://no-such-bucket/store\n"
        )
    before = workspace(repo)
    as_machine(monkeypatch, env, repo)
    refused: AbstractContextManager = (
        credentials_refused(s3) if fault == "credentials refused" else nullcontext()
    )
    with refused, pytest.raises(SystemExit) as stopped:
        main(["data", direction])
    line = str(stopped.value.code)
    printed = capsys.readouterr()
    output = line + printed.out + printed.err + caplog.text
    assert "\n" not in line and not printed.out.strip() and not printed.err.strip()
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert line.startswith(f"defects: dvc {direction}: storage: s3://"), line
    assert f" at {endpoint}: " in line, line
    expected = {
        "endpoint down": (
            "unreachable",
            "start the S3 service, or correct DEFECTS_S3_ENDPOINT_URL",
        ),
        "credentials refused": ("refused (403)", "check the S3 credentials"),
        "no bucket": ("no bucket no-such-bucket", "create bucket no-such-bucket"),
    }[fault]
    assert all(part in line for part in expected), line
    assert SECRET not in output
    assert workspace(repo) == before, "the workspace should be as it was"
    assert not files_holding(repo, SECRET)


class HoldingProxy(ThreadingHTTPServer):
    """An HTTP proxy to `upstream` that lets the first `admit` data objects (and any number of
    `.dir` listings) download, and holds every request for a further one (no answer) until
    `release` is set: a pull stuck part-way, on cue."""

    daemon_threads = True

    def __init__(self, upstream: str, admit: int):
        super().__init__(("127.0.0.1", 0), ForwardOrHold)
        self.upstream = urlsplit(upstream)
        self.admit = admit
        self.admitted: set[str] = set()
        self.lock = threading.Lock()
        self.holding = threading.Event()
        self.release = threading.Event()
        self.connections: list[socket.socket] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def die(self) -> None:
        """Go away as a crashed server does: no more connections, the open ones cut."""
        self.release.set()
        self.shutdown()
        self.server_close()
        for connection in self.connections:
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def holds(self, path: str) -> bool:
        """Whether a GET of `path` waits: a data object beyond the first `admit`."""
        key = urlsplit(path).path
        if "/files/md5/" not in key or key.endswith(".dir"):  # a listing, or the .dir
            return False
        with self.lock:
            if key not in self.admitted and len(self.admitted) < self.admit:
                self.admitted.add(key)
            return key not in self.admitted


class ForwardOrHold(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HoldingProxy

    def setup(self) -> None:
        super().setup()
        self.server.connections.append(self.connection)

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.server.holds(self.path):
            self.server.holding.set()
            self.server.release.wait(CLI_TIMEOUT_S)
            self.close_connection = True
            return
        self.forward()

    def do_HEAD(self) -> None:
        self.forward()

    def forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        upstream = http.client.HTTPConnection(
            str(self.server.upstream.hostname), self.server.upstream.port, timeout=30
        )
        try:
            upstream.request(self.command, self.path, body, dict(self.headers))
            response = upstream.getresponse()
            data = response.read()
        finally:
            upstream.close()
        self.send_response_only(response.status, response.reason)
        headers = [(k, v) for k, v in response.getheaders() if k.lower() != "transfer-encoding"]
        for name, value in headers:
            self.send_header(name, value)
        if not any(k.lower() == "content-length" for k, _ in headers):
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


@contextmanager
def holding_proxy(upstream: str, admit: int) -> Iterator[HoldingProxy]:
    proxy = HoldingProxy(upstream, admit)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.release.set()
        proxy.shutdown()
        proxy.server_close()
        thread.join(10)


def cached_objects(repo: Path) -> list[Path]:
    cache = repo / ".dvc" / "cache" / "files" / "md5"
    return [p for p in cache.rglob("*") if p.is_file()] if cache.is_dir() else []


def start_pull_and_wait_part_way(
    repo: Path, env: dict[str, str], proxy: HoldingProxy
) -> subprocess.Popen:
    """`defects data pull` through `proxy`, once its admitted parts are in the cache and a
    further download is held."""
    proc = start_cli("data", "pull", cwd=repo, env=env)
    deadline = time.monotonic() + CLI_TIMEOUT_S
    while not (proxy.holding.is_set() and len(cached_objects(repo)) >= proxy.admit):
        assert proc.poll() is None, proc.communicate()[0]
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(
                f"the pull never got part-way: {len(proxy.admitted)} parts admitted, "
                f"{len(cached_objects(repo))} objects cached; its output:\n" + proc.communicate()[0]
            )
        time.sleep(0.2)
    return proc


def test_a_pull_killed_part_way_then_pulled_again_restores_everything(
    pushed: tuple[Path, dict[str, str], str], s3: str, tmp_path: Path
) -> None:
    _, digests, _ = pushed
    repo = clone(pushed, tmp_path, with_data=False)
    before = workspace(repo)
    admit = 2  # two parts arrive; the rest hang
    with holding_proxy(s3, admit) as proxy:
        proc = start_pull_and_wait_part_way(repo, machine(tmp_path, proxy.url), proxy)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # Part-way: some objects in the cache, none of the data in the workspace, nothing torn.
    assert admit <= len(cached_objects(repo)) < N_FILES + 1
    assert workspace(repo) == before and not (repo / DATA).exists()

    status, output = cli("data", "pull", cwd=repo, env=machine(tmp_path, s3))
    assert status == 0, output
    assert f"{N_FILES + 1 - admit} files fetched" in output, output  # only what was missing
    assert file_digests(repo / DATA) == digests


def test_a_remote_that_dies_mid_pull_ends_in_one_line(
    pushed: tuple[Path, dict[str, str], str], s3: str, tmp_path: Path
) -> None:
    repo = clone(pushed, tmp_path, with_data=False)
    before = workspace(repo)
    with holding_proxy(s3, admit=2) as proxy:
        # boto3 gives up after two tries (of its default five), the rest is the same
        env = {**machine(tmp_path, proxy.url), "AWS_MAX_ATTEMPTS": "2"}
        proc = start_pull_and_wait_part_way(repo, env, proxy)
        proxy.die()
        output, _ = proc.communicate(timeout=CLI_TIMEOUT_S)
    assert proc.returncode == 1, output
    (line,) = output.strip().splitlines()
    assert line.startswith(f"defects: dvc pull: storage: s3://defects-dvc/store at {proxy.url}: ")
    assert "unreachable" in line and "DEFECTS_S3_ENDPOINT_URL" in line, line
    assert SECRET not in output
    assert workspace(repo) == before and not (repo / DATA).exists()
