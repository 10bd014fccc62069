"""`defects serve` on waitress under load: 8 video viewers and uploads for 60 s on loopback.

The real command line in a child process (`python -m defects serve --source VIDEO`, default
threads) with a tiny segmentation bundle (two EfficientNet-B0s, ~80 ms a frame on one CPU
thread: the stream and the uploads compete for the model as in a factory). Eight viewers
read /video_feed, all leaving and coming back together every 5 s (a page reload: the
viewers' threads and slots must come back); one client uploads images to /api/predict in a
loop; one polls /api/stats and /metrics once a second as an open page and Prometheus would.
Afterwards: no 5xx, every upload answered, every viewer kept receiving frames, /health
still "ok", and SIGTERM ends the server with status 0.

DEFECTS_SOAK_S shortens the run while developing (the issue asks for 60 s).
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import free_port, running_server
from tests.test_predict_segmentation import H, W, make_segmentation_bundle
from tests.test_serve import png_bytes
from tests.test_stream import MjpegReader, write_square_video

REPO = Path(__file__).resolve().parents[1]
SOAK_S = float(os.environ.get("DEFECTS_SOAK_S", "60"))
VIEWERS = 8
RECONNECT_S = 5.0  # a viewer leaves and comes back this often, all of them at once
MAX_GAP_S = 10.0  # longest a viewer may wait for a part (the stream re-sends every 1 s)
START_S = 300  # torch's import alone takes minutes on two cores a training run also uses


class Soak:
    """What the client threads saw; any exception they hit is kept for the test to report."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.errors: list[str] = []
        self.statuses: list[int] = []
        self.frames = [0] * VIEWERS
        self.connections = [0] * VIEWERS
        self.max_gap = [0.0] * VIEWERS
        self.uploads: list[float] = []  # seconds per answered upload

    def failed(self, who: str, exc: BaseException) -> None:
        with self.lock:
            self.errors.append(f"{who}: {type(exc).__name__}: {exc}")

    def status(self, code: int) -> None:
        with self.lock:
            self.statuses.append(code)

    def viewer(self, k: int) -> None:
        try:
            last = time.monotonic()
            while not self.stop.is_set():
                with requests.get(f"{self.base}/video_feed", stream=True, timeout=30) as r:
                    self.status(r.status_code)
                    self.connections[k] += 1
                    reader = MjpegReader(r)
                    connected, n = time.monotonic(), 0
                    while not self.stop.is_set() and time.monotonic() - connected < RECONNECT_S:
                        jpeg = reader.next_jpeg()
                        now = time.monotonic()
                        self.max_gap[k] = max(self.max_gap[k], now - last)
                        last = now
                        self.frames[k] += 1
                        if n % 10 == 0:  # decode some: whole JPEGs, not just bytes
                            image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
                            assert image is not None and image.shape[:2] == (120, 160)
                        n += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.failed(f"viewer {k}", exc)

    def uploader(self) -> None:
        images = [
            png_bytes(np.random.default_rng(seed).integers(0, 256, (H, W), dtype=np.uint8))
            for seed in range(4)
        ]
        try:
            n = 0
            while not self.stop.is_set():
                start = time.monotonic()
                r = requests.post(
                    f"{self.base}/api/predict",
                    files={"image": (f"strip{n}.png", io.BytesIO(images[n % len(images)]))},
                    timeout=60,
                )
                self.status(r.status_code)
                assert r.status_code == 200, r.text[:300]
                body = r.json()
                assert body["image"] == f"strip{n}.png" and body["shape"] == [H, W], body
                self.uploads.append(time.monotonic() - start)
                n += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.failed("uploader", exc)

    def poller(self) -> None:
        try:
            while not self.stop.wait(1.0):
                for path in ("/api/stats", "/metrics"):
                    r = requests.get(f"{self.base}{path}", timeout=30)
                    self.status(r.status_code)
                    assert r.status_code == 200, (path, r.status_code)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.failed("poller", exc)


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = requests.get(f"{base}/metrics", timeout=30).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_waitress_survives_8_viewers_and_uploads(tmp_path: Path) -> None:
    bundle = make_segmentation_bundle(tmp_path / "bundle.pt")
    video = write_square_video(tmp_path / "line.mp4")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [
        sys.executable,
        "-m",
        "defects",
        "serve",
        "--model",
        str(bundle),
        "--source",
        str(video),
        "--port",
        str(port),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with running_server(command, f"{base}/health", tmp_path, timeout=START_S, env=env) as proc:
        soak = Soak(base)
        threads = [
            threading.Thread(target=soak.viewer, args=(k,), name=f"soak-viewer-{k}")
            for k in range(VIEWERS)
        ]
        threads += [
            threading.Thread(target=soak.uploader, name="soak-uploader"),
            threading.Thread(target=soak.poller, name="soak-poller"),
        ]
        for thread in threads:
            thread.start()
        time.sleep(SOAK_S)
        soak.stop.set()
        for thread in threads:
            thread.join(120)
        assert not [t.name for t in threads if t.is_alive()], "client threads hang"

        health = requests.get(f"{base}/health", timeout=10).json()
        metrics = scrape(base)
        proc.send_signal(signal.SIGTERM)
        try:  # the interpreter's own teardown (torch) takes a minute on a starved machine
            code: int | None = proc.wait(timeout=180)
        except subprocess.TimeoutExpired:
            code = None
    log = (tmp_path / "server.log").read_text()
    report: dict[str, Any] = {
        "frames": soak.frames,
        "connections": soak.connections,
        "max_gap_s": [round(g, 2) for g in soak.max_gap],
        "uploads": len(soak.uploads),
        "upload_s_p50_max": (
            round(float(np.median(soak.uploads)), 3) if soak.uploads else None,
            round(max(soak.uploads), 3) if soak.uploads else None,
        ),
    }
    print(f"soak {SOAK_S:.0f} s: {report}")
    assert not soak.errors, (soak.errors, report, log[-3000:])
    assert not [s for s in soak.statuses if s >= 500], report
    assert set(soak.statuses) == {200}, sorted(set(soak.statuses))
    # every upload answered, steadily: at least one every 10 s of the run
    assert len(soak.uploads) >= max(2, SOAK_S / 10), report
    # every viewer kept receiving frames, and came back after each time it left
    assert min(soak.frames) >= SOAK_S / 4, report
    assert max(soak.max_gap) < MAX_GAP_S, report
    assert min(soak.connections) >= min(2, int(SOAK_S // RECONNECT_S)), report
    assert health["status"] == "ok" and health["stream"]["state"] == "live", health
    assert health["task"] == "steel" and health["dataset"] == "steel"
    served = {
        labels: value
        for (name, labels), value in metrics.items()
        if name == "defects_http_requests_total"
    }
    assert not [k for k, v in served.items() if dict(k)["status"].startswith("5") and v], served
    predicted = (("endpoint", "/api/predict"), ("method", "POST"), ("status", "200"))
    assert served[predicted] == len(soak.uploads)
    assert metrics[("defects_stream_viewer_connections_total", ())] == sum(soak.connections)
    published = metrics[("defects_stream_frames_total", (("outcome", "published"),))]
    assert published >= SOAK_S / 4, published  # new frames, not the keep-alive's repeats
    assert code == 0, f"exit status {code} after SIGTERM:\n{log[-3000:]}"
    assert "SIGTERM: stopping" in log and "stopped" in log.splitlines()[-1], log[-2000:]
