"""Hostile uploads against the production server (waitress, defects.server's settings) on
127.0.0.1: huge images within the byte limit, slow and stalled senders, a burst of large
uploads, path tricks in file names. The toy detector of tests/test_stream.py stands in for a
model (no torch), and each server runs in a thread of the test process.
"""

from __future__ import annotations

import inspect
import io
import os
import socket
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import requests

from defects import serve as serve_module
from defects.cli import serve as serve_command
from defects.serve import UPLOAD_SLOTS, create_app
from defects.serve_uploads import DEFAULT_MAX_PIXELS, MAX_NAME_CHARS, upload_name
from defects.server import CHANNEL_TIMEOUT_S, make_waitress
from tests.servers import waitress_serving
from tests.test_serve import png_bytes
from tests.test_stream import SquareDetector, square_frame

MB = 1024 * 1024


def blank_png(width: int, height: int, truncated: bool = False) -> bytes:
    """A valid 1-bit black PNG of any size, made without the pixels in memory (a 20000 x
    20000 one is 50 kB); `truncated`: its image data cut short, so only the header is sound."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then the row's bits
    packer = zlib.compressobj(9)
    pixels = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    if truncated:
        pixels = pixels[: len(pixels) // 2]
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, grey
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def post(base: str, data: bytes, name: str = "strip.png", path: str = "/api/predict", **kw):
    return requests.post(
        f"{base}{path}", files={"image": (name, io.BytesIO(data))}, timeout=30, **kw
    )


def test_production_settings() -> None:
    """The CLI's defaults are the library's, and waitress gets the timeout and body cap."""
    params = inspect.signature(serve_command).parameters
    assert params["max_pixels"].default == DEFAULT_MAX_PIXELS == 40_000_000
    app = create_app(SquareDetector(), max_upload_mb=3)
    server = make_waitress(app, port=0, threads=1)
    try:
        assert server.adj.channel_timeout == CHANNEL_TIMEOUT_S == 30
        assert server.adj.max_request_body_size == 2 * 3 * MB
    finally:
        server.close()
    with pytest.raises(ValueError, match="upload_slots must be at least 1"):
        create_app(SquareDetector(), upload_slots=0)


def test_huge_images_are_refused_from_their_header() -> None:
    app = create_app(SquareDetector(), max_upload_mb=1)
    with waitress_serving(app, threads=2) as base:
        small = post(base, blank_png(1000, 1000), "ok.png")
        assert small.status_code == 200, small.text
        # 64 MP, over the 40 MP default and under PIL's own bomb limit (179 MP)
        big = post(base, blank_png(8000, 8000), "big.png")
        assert big.status_code == 413, big.text
        assert big.json()["error"] == (
            "upload big.png: 8000x8000 is 64.0 megapixels, over the limit of 40 megapixels"
        )
        # the same header with half its pixel data: had it been decoded, this would be a 400
        cut = post(base, blank_png(8000, 8000, truncated=True), "cut.png")
        assert cut.status_code == 413 and "8000x8000" in cut.json()["error"], cut.text
        # 400 MP in 50 kB: PIL's decompression-bomb check fires while reading the header
        bomb_png = blank_png(20000, 20000)
        assert len(bomb_png) < MB
        bomb = post(base, bomb_png, "bomb.png")
        assert bomb.status_code == 413, bomb.text
        assert "bomb.png: refused as a possible decompression bomb" in bomb.json()["error"]
        page = post(base, blank_png(8000, 8000), "big.png", path="/predict")
        assert page.status_code == 413 and "over the limit of 40 megapixels" in page.text
        assert requests.get(f"{base}/health", timeout=10).json()["status"] == "ok"
    # the option: a lower limit refuses what the default takes
    strict = create_app(SquareDetector(), max_upload_mb=1, max_pixels=500_000)
    with waitress_serving(strict, threads=1) as base:
        refused = post(base, blank_png(1000, 1000), "ok.png")
        assert refused.status_code == 413 and "limit of 0.5 megapixels" in refused.text


def request_head(base: str, body_length: int) -> tuple[socket.socket, bytes]:
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    head = (
        f"POST /api/predict HTTP/1.1\r\nHost: {host}\r\n"
        "Content-Type: multipart/form-data; boundary=xx\r\n"
        f"Content-Length: {body_length}\r\n\r\n"
    ).encode()
    return sock, head


def multipart_body(data: bytes, name: str) -> bytes:
    return (
        b'--xx\r\nContent-Disposition: form-data; name="image"; filename="'
        + name.encode()
        + b'"\r\nContent-Type: image/png\r\n\r\n'
        + data
        + b"\r\n--xx--\r\n"
    )


def read_reply(sock: socket.socket) -> bytes:
    """One whole HTTP reply with a Content-Length (headers and body may come apart)."""
    reply = b""
    while b"\r\n\r\n" not in reply or len(reply) < _reply_length(reply):
        chunk = sock.recv(65536)
        if not chunk:
            break
        reply += chunk
    return reply


def _reply_length(reply: bytes) -> int:
    head, _, _ = reply.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-length":
            return len(head) + 4 + int(value)
    return len(head) + 4


def test_a_slow_sender_holds_no_worker() -> None:
    """One worker thread; a client sends its upload a byte a second. The worker stays free
    (waitress buffers the body first): another upload is answered meanwhile, and the slow one
    is answered once its last byte is in."""
    app = create_app(SquareDetector(), max_upload_mb=1)
    body = multipart_body(png_bytes(square_frame(3)), "slow.png")
    with waitress_serving(app, threads=1) as base:
        sock, head = request_head(base, len(body))
        with sock:
            sock.sendall(head)
            for byte in body[:3]:
                sock.sendall(bytes([byte]))
                time.sleep(1.0)
            started = time.monotonic()
            other = post(base, png_bytes(square_frame(5)), "quick.png")
            answered_in = time.monotonic() - started
            assert other.status_code == 200 and other.json()["image"] == "quick.png"
            assert answered_in < 10, answered_in
            sock.settimeout(0.5)
            with pytest.raises(TimeoutError):  # nothing for the slow one yet: body unfinished
                sock.recv(1)
            sock.settimeout(30)
            sock.sendall(body[3:])
            reply = read_reply(sock)
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    assert b'"image":"slow.png"' in reply.replace(b" ", b"")


def test_stalled_and_oversized_senders_are_cut_off() -> None:
    app = create_app(SquareDetector(), max_upload_mb=1)
    body = multipart_body(png_bytes(square_frame(3)), "stalled.png")
    with waitress_serving(app, threads=1, channel_timeout=2) as base:
        sock, head = request_head(base, len(body))
        with sock:
            sock.sendall(head + body[:100])  # and then nothing
            started = time.monotonic()
            sock.settimeout(20)
            closed = sock.recv(65536)
            waited = time.monotonic() - started
        assert closed == b"", closed[:200]  # closed without an answer
        assert 1.5 < waited < 8, waited  # channel_timeout 2 s, checked every second
        # a declared body of 1 GiB is refused at once, before any of it is sent
        sock, head = request_head(base, 1 << 30)
        with sock:
            sock.sendall(head)
            reply = sock.recv(65536)
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        assert post(base, png_bytes(square_frame(5))).status_code == 200


def test_a_burst_of_large_uploads_is_answered(monkeypatch: pytest.MonkeyPatch) -> None:
    """16 uploads near the byte limit at once on 8 threads, 2 upload slots and a slow model:
    each is answered 200, or 503 with Retry-After when it waited too long for a slot."""
    monkeypatch.setattr(serve_module, "UPLOAD_WAIT_S", 1.0)
    app = create_app(SquareDetector(delay_s=0.3), max_upload_mb=2)
    noise = np.random.default_rng(0).integers(0, 256, (800, 800, 3), dtype=np.uint8)
    data = png_bytes(noise)
    assert 1.8 * MB < len(data) < 2 * MB
    results: list[tuple[int, str | None, str]] = []
    failures: list[BaseException] = []

    def upload(k: int, base: str) -> None:
        try:
            r = post(base, data, f"large{k}.png")
            results.append((r.status_code, r.headers.get("Retry-After"), r.text))
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    with waitress_serving(app, threads=8) as base:
        threads = [threading.Thread(target=upload, args=(k, base)) for k in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        over = post(base, data + bytes(MB))
        assert over.status_code == 413
        assert over.json()["error"] == "upload too large: the limit is 2 MB"
    assert not failures, failures
    assert len(results) == 16
    statuses = sorted(code for code, _, _ in results)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= UPLOAD_SLOTS, statuses
    assert 503 in statuses, statuses  # 16 x 0.3 s on 2 slots cannot all fit in 1 s of waiting
    for code, retry_after, text in results:
        if code == 503:
            assert retry_after == "5" and "try again shortly" in text


#: names a browser may send, as shown back
NAMES = {"strip.png": "strip.png", " x.PNG ": "x.PNG", "": "upload", "Дефект 1.PNG": "Дефект 1.PNG"}
#: names no browser sends (they name the file only): refused whatever the server does with them
TRICKS = [
    "../../x.png",
    "..\\..\\x.png",
    "C:\\Users\\me\\x.png",
    "/etc/passwd",
    "a\x00b\x1f.png",
    "..",
    ".",
    "./",
]


def test_upload_name() -> None:
    for given, shown in NAMES.items():
        assert upload_name(given) == shown, given
    for trick in TRICKS:
        with pytest.raises(ValueError, match="path|control|not a file name"):
            upload_name(trick)
    long = upload_name("y" * 5000 + ".png")
    assert len(long) == MAX_NAME_CHARS and long.endswith("....png")
    assert upload_name(None) == "upload"


def test_path_tricks_in_file_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Names that point elsewhere are refused (400 naming them); nothing is written, in the
    server's folder or where the names point. A long name is shortened, not refused."""
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "outside" / "evil.png"
    tricks = [
        "../../x.png",
        "..\\..\\x.png",
        "C:\\Windows\\x.png",
        str(target),
        "../" * 10 + str(target).lstrip("/"),
        "a\x00b.png",
        "..",
    ]
    data = png_bytes(square_frame(5))
    app = create_app(SquareDetector(), max_upload_mb=1)
    with waitress_serving(app, threads=2) as base:
        for name in tricks:
            # a quoted header value drops a lone backslash (`\.` reads as `.`): escaped, the
            # server sees the name as written
            wire = name.replace("\\", "\\\\")
            answer = post(base, data, wire)
            assert answer.status_code == 400, (name[:50], answer.text[:300])
            error = answer.json()["error"]
            assert error.startswith(f"upload name {name!r}"[:60]), error
            assert error.endswith("send the file's own name"), error
            page = post(base, data, wire, path="/predict")
            assert page.status_code == 400 and "send the file&#39;s own name" in page.text
        long = post(base, data, "n" * 5000 + ".png")
        assert long.status_code == 200 and len(long.json()["image"]) == MAX_NAME_CHARS
    assert not any(tmp_path.rglob("*")), sorted(os.listdir(tmp_path))
