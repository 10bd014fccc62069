"""The web app under load: `defects serve` on waitress for minutes, with a camera that drops.

    python benchmarks/soak.py                            # 10 minutes, 8 viewers
    python benchmarks/soak.py --minutes 1 --out /tmp/soak

The production command (`python -m defects serve`, waitress, 16 threads, one torch thread)
serves a tiny steel bundle (two EfficientNet-B0s, made as the tests make it) and streams a
camera stand-in: an MJPEG server in this process (tests/test_stream.py's MjpegSource, the
moving square at 25 fps) that the soak unplugs and plugs back in (`--source` is its URL, so
the stream's reader loses it, backs off and reconnects as with a real camera). Meanwhile:

- `--viewers` MJPEG viewers of /video_feed, each staying a random time and coming back;
- one client uploading a strip to /api/predict after every answer (plus a short pause);
- bursts of 16 concurrent uploads near the byte limit (a strip in a PNG padded with a private
  chunk PIL skips: the body is received, buffered, parsed and read like any large upload; the
  model then costs what a strip costs): one during warm-up, then one between drops;
- an open page's poll of /api/stats every second, and a monitor that scrapes /metrics and
  samples the server's resident memory (psutil, its whole process tree) every few seconds;
- hostile clients: a 64-megapixel PNG of 50 kB (over the 40 MP limit: 413 from its header)
  and a strip named `../../soak-escape.png` or by an absolute path (400) in turn every few
  seconds; a slow sender that sends its upload one byte a second for the whole run (it must
  hold no worker: the steady uploads go on) and the rest at the end (answered 200); a
  stalled sender that stops after 100 bytes (cut off by waitress' channel timeout, 30 s),
  again and again. The server runs in its own folder with TMPDIR inside it; afterwards
  nothing but its log may be there, nor where the tricky names point.

It prints one table: requests served per endpoint, errors, upload and /api/stats latency,
the hostile clients' answers, RSS at the end of warm-up, each minute, at the end and its
maximum, stream fps before / during / after the drops, how long the stream took to come
back, viewer reconnects, files written; `--out DIR` writes soak.json (the figures and the
samples), soak.csv (the table) and samples.csv (the time series).
`run_soak` is what tests/test_serve_soak.py runs for one minute in CI.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for folder in (REPO, Path(__file__).resolve().parent):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import requests  # noqa: E402
from bench_suite import tree_memory  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from defects.formats.io import atomic_write_text  # noqa: E402
from defects.server import CHANNEL_TIMEOUT_S  # noqa: E402
from tests.servers import free_port, running_server  # noqa: E402
from tests.test_predict_segmentation import H, W, make_segmentation_bundle  # noqa: E402
from tests.test_serve import png_bytes  # noqa: E402
from tests.test_serve_hostile import (  # noqa: E402
    blank_png,
    multipart_body,
    read_reply,
    request_head,
)
from tests.test_stream import MjpegReader, MjpegSource  # noqa: E402

MIB = 1024 * 1024
BURST_UPLOADS = 16
START_S = 600  # torch's import alone takes minutes on two cores that a training run also uses
ESCAPE = "soak-escape.png"  # where the path tricks point: two levels up, and by absolute path
#: what the hostile client sends in turn, and the answer each must get
HOSTILE = (("pixels", 413), ("relative path", 400), ("absolute path", 400))


@dataclass(frozen=True)
class Plan:
    """When things happen, in seconds from the start of the soak."""

    seconds: float
    viewers: int
    warmup_s: float
    drops: list[tuple[float, float]]  # (unplugged, plugged back)
    bursts: list[float]
    hold_s: tuple[float, float]  # a viewer stays this long (uniform), then leaves
    upload_pause_s: float = 0.2
    sample_s: float = 3.0
    hostile_s: float = 5.0  # between two hostile uploads


def make_plan(minutes: float, viewers: int) -> Plan:
    """Warm-up a quarter of the run (at most a minute), with the first burst in it; one drop
    in a run of up to two minutes (5 s down), three in a longer one (20 s down), spread
    over the rest, with a burst before each drop."""
    seconds = minutes * 60.0
    warmup = min(60.0, seconds / 4)
    short = minutes <= 2
    count, down = (1, 5.0) if short else (3, 20.0)
    span = seconds - warmup
    starts = [warmup + span * (k + 0.5) / (count + 0.5) for k in range(count)]
    bursts = [warmup * 0.4] + ([] if short else [s - span / (count + 0.5) / 2 for s in starts])
    return Plan(
        seconds=seconds,
        viewers=viewers,
        warmup_s=warmup,
        drops=[(s, s + down) for s in starts],
        bursts=bursts,
        hold_s=(3.0, 12.0) if short else (5.0, 40.0),
        sample_s=2.0 if short else 3.0,
        hostile_s=4.0 if short else 10.0,
    )


def padded_png(image: np.ndarray, size: int) -> bytes:
    """`image` as a PNG of `size` bytes: a private ancillary chunk ("paDd") fills it up."""
    png = png_bytes(image)
    fill = size - len(png) - 12
    if fill < 0:
        raise ValueError(f"a PNG of {len(png)} bytes does not fit in {size}")
    kind, data = b"paDd", bytes(fill)
    chunk = struct.pack(">I", fill) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return png[:-12] + chunk + png[-12:]  # before IEND


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics as {(sample name, sorted labels): value}."""
    text = requests.get(f"{base}/metrics", timeout=30).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@dataclass
class Seen:
    """Everything the clients saw, with times in seconds from the soak's start."""

    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)  # connection errors, bad answers
    uploads: list[tuple[float, float, int]] = field(default_factory=list)  # t, s, status
    bursts: list[tuple[float, float, int, str | None]] = field(default_factory=list)
    frames: list[list[float]] = field(default_factory=list)  # per viewer: new frames' times
    parts: list[int] = field(default_factory=list)  # per viewer: parts incl. keep-alives
    connections: list[int] = field(default_factory=list)
    max_gap_s: list[float] = field(default_factory=list)
    states: list[tuple[float, str, int]] = field(default_factory=list)  # t, state, seq
    samples: list[dict[str, float]] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)
    stats_s: list[float] = field(default_factory=list)  # /api/stats latencies
    hostile: list[tuple[float, str, int]] = field(default_factory=list)  # t, kind, status
    slow: dict[str, Any] = field(default_factory=dict)  # the slow sender's bytes and answer
    stalled_cut_s: list[float] = field(default_factory=list)  # stalled senders cut off after


class Clients:
    """The soak's client threads against one server; `stop` ends them all."""

    def __init__(self, base: str, plan: Plan, server_pid: int, upload_mb: int, root: Path) -> None:
        self.base, self.plan, self.root = base, plan, root
        self.server = psutil.Process(server_pid)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.t0 = time.monotonic()
        n = plan.viewers
        self.seen = Seen(frames=[[] for _ in range(n)], parts=[0] * n, connections=[0] * n)
        self.seen.max_gap_s = [0.0] * n
        rng = np.random.default_rng(0)
        self.strips = [png_bytes(rng.integers(0, 256, (H, W), dtype=np.uint8)) for _ in range(4)]
        # near the byte limit, room left for the multipart envelope
        self.large = padded_png(
            rng.integers(0, 256, (H, W), dtype=np.uint8), upload_mb * MIB - 4096
        )
        self.bomb = blank_png(8000, 8000)  # 64 MP in 50 kB

    def now(self) -> float:
        return time.monotonic() - self.t0

    def _status(self, endpoint: str, code: int) -> None:
        with self.lock:
            self.seen.statuses[(endpoint, code)] += 1

    def _failed(self, who: str, exc: BaseException | str) -> None:
        text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        with self.lock:
            self.seen.failures.append(f"{self.now():.1f}s {who}: {text}"[:500])

    def threads(self) -> list[threading.Thread]:
        jobs = [(f"soak-viewer-{k}", self.viewer, (k,)) for k in range(self.plan.viewers)]
        jobs += [("soak-uploader", self.uploader, ()), ("soak-page", self.page, ())]
        jobs += [("soak-monitor", self.monitor, ()), ("soak-hostile", self.hostile, ())]
        jobs += [("soak-slow", self.slow_sender, ()), ("soak-stalled", self.stalled_senders, ())]
        return [threading.Thread(target=f, args=a, name=name) for name, f, a in jobs]

    def viewer(self, k: int) -> None:
        """Watch for a random time, leave, come back after up to 2 s; until stopped."""
        rng = np.random.default_rng(100 + k)
        last_part = time.monotonic()
        while not self.stop.is_set():
            hold = rng.uniform(*self.plan.hold_s)
            try:
                with requests.get(f"{self.base}/video_feed", stream=True, timeout=30) as r:
                    self._status("/video_feed", r.status_code)
                    if r.status_code != 200:
                        self._failed(f"viewer {k}", f"status {r.status_code}")
                        self.stop.wait(1.0)
                        continue
                    self.seen.connections[k] += 1
                    reader, joined, previous = MjpegReader(r), time.monotonic(), b""
                    while not self.stop.is_set() and time.monotonic() - joined < hold:
                        jpeg = reader.next_jpeg()
                        now = time.monotonic()
                        self.seen.max_gap_s[k] = max(self.seen.max_gap_s[k], now - last_part)
                        last_part = now
                        self.seen.parts[k] += 1
                        if jpeg != previous:  # the keep-alive re-sends the last frame
                            self.seen.frames[k].append(self.now())
                            previous = jpeg
            except Exception as exc:  # noqa: BLE001 - counted, then the viewer comes back
                self._failed(f"viewer {k}", exc)
                self.stop.wait(1.0)
            self.stop.wait(rng.uniform(0.0, 2.0))
            last_part = time.monotonic()  # time away is not a gap in the stream

    def upload(
        self, data: bytes, name: str, endpoint: str = "/api/predict"
    ) -> tuple[float, int, str | None, Any]:
        """(seconds, status, Retry-After, JSON or None) of one POST to /api/predict;
        `endpoint` is what its status is counted under."""
        started = time.monotonic()
        r = requests.post(
            f"{self.base}/api/predict", files={"image": (name, io.BytesIO(data))}, timeout=120
        )
        seconds = time.monotonic() - started
        self._status(endpoint, r.status_code)
        body = r.json() if r.headers.get("Content-Type") == "application/json" else None
        return seconds, r.status_code, r.headers.get("Retry-After"), body

    def uploader(self) -> None:
        n = 0
        while not self.stop.is_set():
            name, t = f"strip{n}.png", self.now()
            try:
                seconds, status, _, body = self.upload(self.strips[n % len(self.strips)], name)
                self.seen.uploads.append((t, seconds, status))
                if status != 200 or body is None or body.get("image") != name:
                    self._failed("uploader", f"{name}: status {status}, {str(body)[:200]}")
            except Exception as exc:  # noqa: BLE001 - counted as unanswered
                self.seen.uploads.append((t, float("nan"), 0))
                self._failed("uploader", exc)
            n += 1
            self.stop.wait(self.plan.upload_pause_s)

    def burst(self) -> None:
        """BURST_UPLOADS large uploads at once; 200, or 503 with Retry-After, are answers."""

        def one(k: int) -> None:
            t = self.now()
            try:
                seconds, status, retry, _ = self.upload(self.large, f"large{k}.png")
                with self.lock:
                    self.seen.bursts.append((t, seconds, status, retry))
                if not (status == 200 or (status == 503 and retry)):
                    self._failed(f"burst upload {k}", f"status {status}")
            except Exception as exc:  # noqa: BLE001 - counted as unanswered
                with self.lock:
                    self.seen.bursts.append((t, float("nan"), 0, None))
                self._failed(f"burst upload {k}", exc)

        self.seen.events.append((self.now(), "burst"))
        workers = [threading.Thread(target=one, args=(k,)) for k in range(BURST_UPLOADS)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(300)

    def page(self) -> None:
        """An open page: /api/stats once a second (the stream's state, with its time)."""
        while not self.stop.wait(1.0):
            try:
                started = time.monotonic()
                r = requests.get(f"{self.base}/api/stats", timeout=30)
                self.seen.stats_s.append(time.monotonic() - started)
                self._status("/api/stats", r.status_code)
                stats = r.json()
                self.seen.states.append((self.now(), stats["state"], int(stats["seq"])))
            except Exception as exc:  # noqa: BLE001 - counted
                self._failed("page", exc)

    def hostile(self) -> None:
        """Every hostile_s, the next of HOSTILE: a pixel bomb or a strip with a tricky name."""
        names = {
            "pixels": "bomb.png",
            "relative path": f"../../{ESCAPE}",
            "absolute path": str(self.root.parent / ESCAPE),
        }
        n = 0
        while not self.stop.wait(self.plan.hostile_s):
            kind, expected = HOSTILE[n % len(HOSTILE)]
            data = self.bomb if kind == "pixels" else self.strips[0]
            try:
                _, status, _, body = self.upload(data, names[kind], "/api/predict (hostile)")
                self.seen.hostile.append((self.now(), kind, status))
                if status != expected:
                    self._failed("hostile", f"{kind}: status {status}, {str(body)[:200]}")
            except Exception as exc:  # noqa: BLE001 - counted
                self.seen.hostile.append((self.now(), kind, 0))
                self._failed("hostile", exc)
            n += 1

    def slow_sender(self) -> None:
        """An upload sent one byte a second until the soak ends, then the rest at once: it
        holds a connection all along, and must be answered like any other."""
        body = multipart_body(self.strips[1], "slow.png")
        sent, status, name = 0, 0, None
        try:
            sock, head = request_head(self.base, len(body))
            with sock:
                sock.sendall(head)
                while sent < len(body) - 1 and not self.stop.wait(1.0):
                    sock.sendall(body[sent : sent + 1])
                    sent += 1
                trickled = sent
                sock.sendall(body[sent:])
                sock.settimeout(120)
                reply = read_reply(sock)
            head_line, _, rest = reply.partition(b"\r\n")
            status = int(head_line.split()[1]) if head_line else 0
            body_text = rest.partition(b"\r\n\r\n")[2]
            name = json.loads(body_text).get("image") if status == 200 else None
            self._status("/api/predict (slow sender)", status)
            if status != 200 or name != "slow.png":
                self._failed("slow sender", f"status {status}, {reply[:300]!r}")
            self.seen.slow = {"bytes_trickled": trickled, "status": status, "image": name}
        except Exception as exc:  # noqa: BLE001 - counted
            self.seen.slow = {"bytes_trickled": sent, "status": status, "image": name}
            self._failed("slow sender", exc)

    def stalled_senders(self) -> None:
        """Again and again: an upload that stops after 100 bytes; the server must close the
        connection after its channel timeout, without an answer."""
        body = multipart_body(self.strips[2], "stalled.png")
        limit = CHANNEL_TIMEOUT_S + 20
        while not self.stop.is_set():
            try:
                sock, head = request_head(self.base, len(body))
                with sock:
                    sock.sendall(head + body[:100])
                    started = time.monotonic()
                    sock.settimeout(1.0)
                    reply = None
                    while reply is None and not self.stop.is_set():
                        if time.monotonic() - started > limit:
                            self._failed("stalled sender", f"still open after {limit} s")
                            break
                        try:
                            reply = sock.recv(65536)
                        except TimeoutError:
                            continue
                        except ConnectionResetError:
                            reply = b""
                    if reply is None:  # the soak ended, or the server kept it too long
                        return
                    self.seen.stalled_cut_s.append(round(time.monotonic() - started, 1))
                    if reply:
                        self._failed("stalled sender", f"answered: {reply[:200]!r}")
            except Exception as exc:  # noqa: BLE001 - counted
                self._failed("stalled sender", exc)
                self.stop.wait(5.0)

    def monitor(self) -> None:
        """Every sample_s: the server tree's memory and the stream's figures from /metrics."""
        while True:
            sample: dict[str, float] = {"t": round(self.now(), 2)}
            pss, rss, _ = tree_memory(self.server)
            sample.update(rss_mib=rss / MIB, pss_mib=pss / MIB)
            try:
                metrics = scrape(self.base)
                self._status("/metrics", 200)
                sample.update(
                    up=metrics[("defects_stream_up", ())],
                    fps=metrics[("defects_stream_fps", (("stage", "published"),))],
                    published=metrics[("defects_stream_frames_total", (("outcome", "published"),))],
                    losses=metrics[("defects_stream_source_losses_total", ())],
                    viewers=metrics[("defects_stream_viewers", ())],
                )
            except Exception as exc:  # noqa: BLE001 - counted
                self._failed("monitor", exc)
            self.seen.samples.append(sample)
            if self.stop.wait(self.plan.sample_s):
                return


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 2) if values else None


def _quantile(values: list[float], q: float) -> float | None:
    return round(float(np.quantile(values, q)), 3) if values else None


def _went_down_and_up(ups: list[float]) -> bool:
    """Whether the up gauge went 1 -> 0 -> 1 (the drop seen in /metrics, then the return)."""
    text = "".join(str(int(u)) for u in ups)
    return "10" in text and "1" in text[text.index("10") + 2 :]


def summarize(
    seen: Seen, plan: Plan, metrics: dict[Any, float], written: list[str]
) -> dict[str, Any]:
    """The figures of the table (and of the CI test's assertions); `written`: the files the
    server left behind (see `files_written`)."""
    # when the stream was live again after each drop: first "live" poll after plugging back
    recovered: list[float | None] = []
    for _, back in plan.drops:
        live = [t for t, state, _ in seen.states if t >= back and state == "live"]
        recovered.append(live[0] if live else None)
    down_windows = [
        (start, again if again is not None else plan.seconds)
        for (start, _), again in zip(plan.drops, recovered, strict=True)
    ]

    def phase(t: float) -> str | None:
        if t < plan.warmup_s:
            return None
        if any(a <= t < b for a, b in down_windows):
            return "during"
        return "before" if t < plan.drops[0][0] else "after"

    fps: dict[str, list[float]] = {"before": [], "during": [], "after": []}
    for s in seen.samples:
        if "fps" in s and (p := phase(s["t"])) is not None:
            fps[p].append(s["fps"])
    seconds = dict.fromkeys(fps, 0.0)  # each phase's length, for the viewers' frame rates
    step = 0.5
    for t in np.arange(plan.warmup_s, plan.seconds, step):
        if (p := phase(float(t))) is not None:
            seconds[p] += step
    frames = Counter(p for times in seen.frames for t in times if (p := phase(t)) is not None)
    viewer_fps = {
        p: round(frames[p] / seconds[p] / plan.viewers, 2) if seconds[p] else None for p in fps
    }

    rss = [(s["t"], s["rss_mib"]) for s in seen.samples if s.get("rss_mib")]
    warm = next((v for t, v in rss if t >= plan.warmup_s), rss[-1][1])
    end, peak = rss[-1][1], max(v for _, v in rss)
    half = next(v for t, v in rss if t >= max(plan.warmup_s, plan.seconds / 2))
    # the last sample before each full minute (and the end): RSS over time
    marks = [*np.arange(60.0, plan.seconds, 60.0), plan.seconds + 1]
    by_minute = [round(next(v for t, v in reversed(rss) if t <= m), 1) for m in marks]
    ups = [s["up"] for s in seen.samples if "up" in s]

    served: Counter[str] = Counter()
    server_errors: Counter[str] = Counter()
    for (name, labels), value in metrics.items():
        if name == "defects_http_requests_total":
            label = dict(labels)
            served[f"{label['method']} {label['endpoint']}"] += int(value)
            if label["status"].startswith("5"):
                server_errors[f"{label['status']} {label['endpoint']}"] += int(value)
    steady = [s for _, s, status in seen.uploads if status == 200]
    burst_codes = Counter(status for _, _, status, _ in seen.bursts)
    expected = dict(HOSTILE)
    hostile = {
        kind: f"{sum(1 for _, k, c in seen.hostile if k == kind and c == expected[kind])}"
        f"/{sum(1 for _, k, _ in seen.hostile if k == kind)}"
        for kind in expected
    }
    ordinary = [(e, c) for (e, c) in seen.statuses if "(" not in e]
    return {
        "served": dict(sorted(served.items())),
        "server_5xx": dict(server_errors),
        "client_statuses": {f"{e} {c}": n for (e, c), n in sorted(seen.statuses.items())},
        # the hostile clients' refusals are expected, not errors: counted apart
        "client_4xx": sum(seen.statuses[k] for k in ordinary if 400 <= k[1] < 500),
        "client_5xx": sum(seen.statuses[k] for k in ordinary if k[1] >= 500),
        "failures": len(seen.failures),
        "failure_examples": seen.failures[:10],
        "uploads": len(seen.uploads),
        "uploads_ok": len(steady),
        "upload_p50_s": _quantile(steady, 0.5),
        "upload_p99_s": _quantile(steady, 0.99),
        "upload_max_s": round(max(steady), 3) if steady else None,
        "bursts": len(plan.bursts),
        "burst_uploads": len(seen.bursts),
        "burst_statuses": {str(k): v for k, v in sorted(burst_codes.items())},
        "burst_p50_s": _quantile([s for _, s, c, _ in seen.bursts if c == 200], 0.5),
        "burst_max_s": _quantile([s for _, s, c, _ in seen.bursts if c == 200], 1.0),
        "stats_p50_s": _quantile(seen.stats_s, 0.5),
        "stats_p99_s": _quantile(seen.stats_s, 0.99),
        "hostile_expected_of_sent": hostile,
        "hostile_sent": len(seen.hostile),
        "hostile_as_expected": sum(1 for _, k, c in seen.hostile if c == expected[k]),
        "slow_sender": seen.slow,
        "stalled_cut_s": seen.stalled_cut_s,
        "files_written": written,
        "rss_warm_mib": round(warm, 1),
        "rss_end_mib": round(end, 1),
        "rss_max_mib": round(peak, 1),
        "rss_growth_mib": round(end - warm, 1),
        "rss_growth_pct": round(100.0 * (end - warm) / warm, 1),
        "rss_by_minute_mib": by_minute,
        "rss_second_half_growth_mib": round(end - half, 1),
        "fps_before": _mean(fps["before"]),
        "fps_during": _mean(fps["during"]),
        "fps_after": _mean(fps["after"]),
        "viewer_fps": viewer_fps,
        "drops": len(plan.drops),
        "drops_seen_down_in_metrics": _went_down_and_up(ups),
        "up_at_end": ups[-1] if ups else None,
        "source_losses": int(metrics.get(("defects_stream_source_losses_total", ()), -1)),
        "recovery_s": [
            None if r is None else round(r - b, 1)
            for (_, b), r in zip(plan.drops, recovered, strict=True)
        ],
        "viewer_connections": sum(seen.connections),
        "viewer_connections_server": int(
            metrics.get(("defects_stream_viewer_connections_total", ()), -1)
        ),
        "viewer_reconnects": sum(seen.connections) - plan.viewers,
        "viewer_max_gap_s": round(max(seen.max_gap_s), 2),
        "viewer_new_frames": [len(f) for f in seen.frames],
        "published": int(
            metrics.get(("defects_stream_frames_total", (("outcome", "published"),)), 0)
        ),
    }


def table(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(figure, value) rows of the printed table and of soak.csv."""
    s, c = report["summary"], report["conditions"]

    def join(*values: Any) -> str:
        return " / ".join("-" if v is None else str(v) for v in values)

    rows = [
        ("run", f"{c['minutes']} min, {c['viewers']} viewers, {c['started_utc']} UTC"),
        ("machine", f"{c['cpus']} CPUs, load average {join(c['load_start'], c['load_end'])}"),
        ("server up (torch import, model load) after, s", join(c.get("server_start_s"))),
    ]
    rows += [(f"requests served: {k}", str(v)) for k, v in s["served"].items()]
    errors = sum(s["server_5xx"].values())
    rows += [
        (
            "errors: server 5xx / client-seen 4xx / 5xx / connection or bad answers",
            join(errors, s["client_4xx"], s["client_5xx"], s["failures"]),
        ),
        ("steady uploads: sent / answered 200", join(s["uploads"], s["uploads_ok"])),
        (
            "steady upload latency p50 / p99 / max, s",
            join(s["upload_p50_s"], s["upload_p99_s"], s["upload_max_s"]),
        ),
        (
            f"bursts of {BURST_UPLOADS} large uploads: bursts, statuses",
            f"{s['bursts']}, {s['burst_statuses']}",
        ),
        ("burst upload latency p50 / max, s", join(s["burst_p50_s"], s["burst_max_s"])),
        ("/api/stats latency p50 / p99, s", join(s["stats_p50_s"], s["stats_p99_s"])),
        (
            "hostile uploads answered as expected / sent: "
            + ", ".join(f"{k} {c}" for k, c in HOSTILE),
            ", ".join(s["hostile_expected_of_sent"].values()),
        ),
        (
            "slow sender (1 byte/s all along): bytes trickled / status at the end",
            join(s["slow_sender"].get("bytes_trickled"), s["slow_sender"].get("status")),
        ),
        (
            f"stalled senders closed after, s (channel timeout {CHANNEL_TIMEOUT_S} s)",
            join(*s["stalled_cut_s"]) if s["stalled_cut_s"] else "-",
        ),
        ("files left by the server outside its log", str(len(s["files_written"]))),
        (
            "server RSS (process tree) end of warm-up / end / max, MiB",
            join(s["rss_warm_mib"], s["rss_end_mib"], s["rss_max_mib"]),
        ),
        ("RSS growth after warm-up", f"{s['rss_growth_mib']} MiB ({s['rss_growth_pct']} %)"),
        ("RSS growth over the second half, MiB", str(s["rss_second_half_growth_mib"])),
        ("server RSS at the end of each minute, MiB", join(*s["rss_by_minute_mib"])),
        (
            "stream fps (published) before / during / after drops",
            join(s["fps_before"], s["fps_during"], s["fps_after"]),
        ),
        (
            "new frames per viewer per s before / during / after",
            join(*(s["viewer_fps"][p] for p in ("before", "during", "after"))),
        ),
        (
            "source drops / losses counted / live again after plug-in, s",
            join(s["drops"], s["source_losses"], s["recovery_s"]),
        ),
        (
            "viewer connections / reconnects / longest gap between parts, s",
            join(s["viewer_connections"], s["viewer_reconnects"], s["viewer_max_gap_s"]),
        ),
        ("server exit status after SIGTERM", join(report["exit_code"])),
    ]
    return rows


def print_table(rows: list[tuple[str, str]]) -> None:
    print("| figure | value |\n|---|---|")
    for figure, value in rows:
        print(f"| {figure} | {value} |")


def _rounded(value: Any) -> Any:
    """`value` with every float to the millisecond (or 3 decimals), for a smaller JSON."""
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


def write_out(out: Path, report: dict[str, Any], rows: list[tuple[str, str]]) -> None:
    """soak.json, soak.csv and samples.csv under `out`, each written whole or not at all."""
    kept = {k: v for k, v in report.items() if k != "frames"}  # 100 kB of times; counted
    text = json.dumps(_rounded(kept), indent=1, default=str)
    atomic_write_text(out / "soak.json", text + "\n")
    for name, header, data in (
        ("soak.csv", ["figure", "value"], rows),
        ("samples.csv", None, report["samples"]),
    ):
        buffer = io.StringIO()
        if header is not None:
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(data)
        else:
            keys = sorted({k for row in data for k in row}, key=lambda k: (k != "t", k))
            dict_writer = csv.DictWriter(buffer, keys, lineterminator="\n")
            dict_writer.writeheader()
            dict_writer.writerows(data)
        atomic_write_text(out / name, buffer.getvalue())


def run_soak(
    minutes: float = 10.0,
    viewers: int = 8,
    workdir: Path | None = None,
    upload_mb: int = 32,
) -> dict[str, Any]:
    """The whole soak against a fresh `defects serve`; the report (conditions, summary,
    samples, client failures, the server's exit status and log path)."""
    plan = make_plan(minutes, viewers)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        bundle = make_segmentation_bundle(root / "bundle.pt")
        camera = MjpegSource(free_port()).start()
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        command = [
            sys.executable, "-m", "defects", "serve", "--model", str(bundle),
            "--source", camera.url, "--port", str(port), "--max-upload-mb", str(upload_mb),
        ]  # fmt: skip
        server_tmp = root / "server-tmp"  # waitress and werkzeug spool large bodies here
        server_tmp.mkdir(exist_ok=True)
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "OMP_NUM_THREADS": "1",
            "TMPDIR": str(server_tmp),
        }
        before = _files(root, root.parent)
        conditions = {
            "minutes": minutes,
            "viewers": viewers,
            "started_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
            "cpus": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(),
            "load_start": round(os.getloadavg()[0], 2),
            "server": "waitress, 16 threads, OMP_NUM_THREADS=1",
            "upload_mb": upload_mb,
            "plan": asdict(plan),
        }
        started = time.monotonic()
        try:
            with running_server(command, f"{base}/health", root, START_S, env) as proc:
                conditions["server_start_s"] = round(time.monotonic() - started, 1)
                clients = Clients(base, plan, proc.pid, upload_mb, root)
                code = _soak(clients, plan, camera)
                metrics = scrape(base)
                health = requests.get(f"{base}/health", timeout=30).json()
                proc.send_signal(signal.SIGTERM)
                try:  # the interpreter's teardown (torch) takes a minute on a starved machine
                    code = proc.wait(timeout=180)
                except subprocess.TimeoutExpired:
                    code = None
        finally:
            camera.stop()
        seen = clients.seen
        conditions["load_end"] = round(os.getloadavg()[0], 2)
        log = (root / "server.log").read_text(errors="replace")
        written = sorted(str(f) for f in _files(root, root.parent) - before)
        return {
            "conditions": conditions,
            "summary": summarize(seen, plan, metrics, written),
            "health": health,
            "exit_code": code,
            "server_log_tail": log[-3000:],
            "events": seen.events,
            "failures": seen.failures,
            "samples": seen.samples,
            "states": seen.states,
            "statuses": {f"{e} {c}": n for (e, c), n in seen.statuses.items()},
            "parts": seen.parts,
            "frames": seen.frames,
            "connections": seen.connections,
            "uploads": seen.uploads,
            "bursts": seen.bursts,
        }


def _files(root: Path, parent: Path) -> set[Path]:
    """Every file under the server's folder but its log, and where the tricky names point
    (ESCAPE two levels up from it, and next to it: its parent)."""
    files = {f for f in root.rglob("*") if f.is_file() and f.name != "server.log"}
    return files | {f for f in (parent / ESCAPE, root.parents[1] / ESCAPE) if f.exists()}


def _soak(clients: Clients, plan: Plan, camera: MjpegSource) -> None:
    """Run the clients for plan.seconds, unplugging the camera and bursting on schedule."""
    threads = clients.threads()
    for thread in threads:
        thread.start()
    events = [(t, "burst") for t in plan.bursts]
    events += [(t, "unplug") for t, _ in plan.drops] + [(t, "plug") for _, t in plan.drops]
    bursts: list[threading.Thread] = []
    for at, what in sorted(events):
        if clients.stop.wait(max(0.0, at - clients.now())):
            break
        if what == "burst":
            bursts.append(threading.Thread(target=clients.burst, name="soak-burst"))
            bursts[-1].start()
            continue
        clients.seen.events.append((clients.now(), what))
        camera.stop() if what == "unplug" else camera.start()
    clients.stop.wait(max(0.0, plan.seconds - clients.now()))
    clients.stop.set()
    for thread in threads + bursts:
        thread.join(300)
    hanging = [t.name for t in threads + bursts if t.is_alive()]
    if hanging:
        raise RuntimeError(f"soak client threads hang: {hanging}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length (default 10)")
    parser.add_argument("--viewers", type=int, default=8, help="MJPEG viewers (default 8)")
    parser.add_argument("--upload-mb", type=int, default=32, help="server's byte limit")
    parser.add_argument("--out", type=Path, help="write soak.json, soak.csv, samples.csv here")
    args = parser.parse_args(argv)
    report = run_soak(args.minutes, args.viewers, upload_mb=args.upload_mb)
    rows = table(report)
    print_table(rows)
    if args.out is not None:
        write_out(args.out, report, rows)
        print(f"written to {args.out}/soak.json, soak.csv, samples.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
