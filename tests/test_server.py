"""`defects serve`'s server: waitress by default, Flask's dev server with --dev, a viewer cap.

`run_server` runs in the test's main thread (where signal handlers live) while a helper
thread plays the clients and finally sends the process SIGTERM, as `docker stop` or
systemd would; the server must close the stream, end the open viewer's response and return.
"""

from __future__ import annotations

import inspect
import io
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from flask import Flask

from defects import serve as serve_module
from defects.cli import serve as serve_command
from defects.serve import STREAM_EXTENSION, create_app
from defects.server import DEFAULT_THREADS, RESERVED_THREADS, run_server, viewer_limit
from defects.stream import LiveStream, StreamConfig
from tests.servers import free_port
from tests.test_serve import png_bytes
from tests.test_stream import (
    MjpegReader,
    SquareDetector,
    boxed_square,
    decode_jpeg,
    no_leaked_threads,  # noqa: F401  (autouse fixture: no stream thread outlives a test)
    square_frame,
    stream_app,
    wait_until,
    write_square_video,
)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_square_video(tmp_path_factory.mktemp("video") / "line.mp4")


def test_viewer_limit_keeps_threads_for_the_api() -> None:
    assert viewer_limit(DEFAULT_THREADS) == DEFAULT_THREADS - RESERVED_THREADS == 12
    assert viewer_limit(RESERVED_THREADS + 1) == 1
    with pytest.raises(ValueError, match=f"--threads {RESERVED_THREADS + 1} or more"):
        viewer_limit(RESERVED_THREADS)
    assert inspect.signature(serve_command).parameters["threads"].default == DEFAULT_THREADS
    with pytest.raises(ValueError, match="at least 1"):
        create_app(SquareDetector(), max_viewers=0)


Clients = Callable[[str], Callable[[], None] | None]


def serve_in_main_thread(
    app: Flask, clients: Clients, threads: int = RESERVED_THREADS + 1, dev: bool = False
) -> float:
    """run_server in this (main) thread; `clients(base)` runs in a helper thread once /health
    answers, then the helper sends SIGTERM and runs what `clients` returned. Returns the
    seconds from SIGTERM to run_server's return; re-raises what the helper hit."""
    live: LiveStream = app.extensions[STREAM_EXTENSION]
    base = f"http://127.0.0.1:{free_port()}"
    port = int(base.rsplit(":", 1)[1])
    errors: list[BaseException] = []
    signal_at: list[float] = []
    original = signal.getsignal(signal.SIGTERM)

    def helper() -> None:
        try:
            wait_until(lambda: _up(base), 30, "the server")
            after = clients(base)
            signal_at.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGTERM)
            if after is not None:
                after()
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test
            errors.append(exc)
            if not signal_at and signal.getsignal(signal.SIGTERM) is not original:
                os.kill(os.getpid(), signal.SIGTERM)  # the server is up: stop it

    thread = threading.Thread(target=helper, name="test-server-client")
    thread.start()
    run_server(app, port=port, threads=threads, dev=dev, on_stop=live.close)
    stopped_after = time.monotonic() - (signal_at[0] if signal_at else time.monotonic())
    thread.join(30)
    assert not thread.is_alive(), "the client thread hangs"
    if errors:
        raise errors[0]
    assert signal.getsignal(signal.SIGTERM) is original  # the handler is put back
    assert live.closed and not live.alive
    return stopped_after


def _up(base: str) -> bool:
    try:
        return requests.get(f"{base}/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def upload_square(base: str) -> dict:
    response = requests.post(
        f"{base}/api/predict",
        files={"image": ("sq.png", io.BytesIO(png_bytes(square_frame(5))))},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("dev", [False, True], ids=["waitress", "dev"])
def test_sigterm_closes_the_stream_and_stops_the_server(video: Path, dev: bool) -> None:
    seen: dict = {}

    def clients(base: str) -> Callable[[], None]:
        viewer = requests.get(f"{base}/video_feed", stream=True, timeout=10)
        reader = MjpegReader(viewer)
        boxed_square(decode_jpeg(reader.next_jpeg()))
        seen["upload"] = upload_square(base)
        seen["server"] = requests.get(f"{base}/health", timeout=5).headers.get("Server")

        def after_sigterm() -> None:
            try:  # the open viewer's response ends rather than hanging
                for _ in range(1000):
                    reader.next_jpeg()
                seen["viewer_ended"] = False
            except (StopIteration, requests.RequestException, AssertionError):
                seen["viewer_ended"] = True
            viewer.close()

        return after_sigterm

    stopped_after = serve_in_main_thread(stream_app(video), clients, dev=dev)
    assert seen["upload"]["detections"][0]["label"] == "defect"
    if dev:
        assert "Werkzeug" in seen["server"]
    else:
        assert seen["server"] == "defects"  # waitress, with the ident run_server gives it
    assert seen["viewer_ended"]
    # waitress waits up to 5 s for its threads: a viewer still held would show as >= 5 s
    assert stopped_after < 3, stopped_after


def test_viewers_over_the_limit_get_503_and_a_left_slot_is_reused(
    video: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On waitress with 6 threads: 2 viewers, a third refused after waiting, the API still
    answers, and a viewer that reconnects at once (a page reload) gets the slot just left."""
    monkeypatch.setattr(serve_module, "VIEWER_WAIT_S", 2.0)
    threads = RESERVED_THREADS + 2
    app = create_app(
        SquareDetector(), stream=StreamConfig(source=str(video)), max_viewers=viewer_limit(threads)
    )
    seen: dict = {}

    def clients(base: str) -> None:
        url = f"{base}/video_feed"
        first = requests.get(url, stream=True, timeout=10)
        second = requests.get(url, stream=True, timeout=10)
        # the readers stay referenced: a collected one closes its connection (the viewer left)
        readers = [MjpegReader(first), MjpegReader(second)]
        for reader in readers:
            reader.next_jpeg()
        start = time.monotonic()
        refused = requests.get(url, stream=True, timeout=10)
        seen["waited"] = time.monotonic() - start
        seen["refused"] = (refused.status_code, refused.headers.get("Retry-After"))
        if refused.status_code == 503:
            seen["refused"] += (refused.text,)
        refused.close()
        seen["upload"] = upload_square(base)  # viewers hold their threads, not the API's
        seen["viewers"] = requests.get(f"{base}/health", timeout=5).json()["stream"]["viewers"]
        for reader in readers:
            reader.next_jpeg()  # both still watching
        first.close()  # and straight back, as a page reload does
        with requests.get(url, stream=True, timeout=10) as again:
            seen["again"] = again.status_code
            boxed_square(decode_jpeg(MjpegReader(again).next_jpeg()))
        second.close()
        seen["metrics"] = requests.get(f"{base}/metrics", timeout=5).text

    serve_in_main_thread(app, clients, threads=threads)
    assert seen["refused"][:2] == (503, "5")
    text = seen["refused"][2]
    assert "all 2 viewer slots are taken" in text and "--threads" in text
    assert seen["waited"] >= 2.0  # it waited for a slot before giving up
    assert seen["upload"]["detections"][0]["label"] == "defect"
    assert seen["viewers"] == 2 and seen["again"] == 200
    line = 'defects_http_requests_total{endpoint="/video_feed",method="GET",status="503"} 1.0'
    assert line in seen["metrics"]


def test_threads_must_be_positive() -> None:
    app = create_app(SquareDetector())
    with pytest.raises(ValueError, match="--threads must be at least 1"):
        run_server(app, port=free_port(), threads=0)


def test_cli_refuses_too_few_threads_before_loading_the_model(video: Path, tmp_path: Path) -> None:
    import fire

    from defects.cli import COMMANDS

    command = ["serve", "--model", str(tmp_path / "none.pt"), "--source", str(video)]
    with pytest.raises(ValueError, match="--threads 4 leaves no thread for /video_feed viewers"):
        fire.Fire(COMMANDS, command=[*command, "--threads", "4"])
