"""Run the app: on waitress (a production WSGI server, pure Python) or Flask's dev server.

waitress answers requests from a fixed pool of `threads`. A /video_feed viewer holds one of
them for as long as it watches (its MJPEG body is a generator the thread keeps iterating), so
the pool must hold the viewers *and* leave threads for everything else: uploads, the
once-a-second /api/stats poll of every open page, /health and /metrics. The app therefore
admits at most `threads - RESERVED_THREADS` viewers and answers the next one 503 (the page
retries its video) rather than letting viewers take every thread and hang the API.
The default, 16 threads, serves 12 viewers with 4 threads to spare; `--threads` raises it
(each idle thread costs a few hundred kB).

Hostile clients: waitress reads each request whole (headers and body, spooled to a temporary
file above 512 kB) in its one I/O thread before a worker thread sees it, so a client that
sends one byte a second holds a connection, never a worker. A connection on which nothing
arrives for CHANNEL_TIMEOUT_S while no request of it runs (a sender that stalls mid-body, an
idle keep-alive) is closed; a viewer's stream is a running request and stays. A body larger
than twice the app's MAX_CONTENT_LENGTH is refused by waitress (413) from its Content-Length,
before it is read; up to that the app answers its own 413. Still open to a client that keeps
many connections trickling (waitress accepts 100 connections, then stops accepting until
some close): on a network you do not trust, put a reverse proxy with a body timeout in front.

Ctrl-C or SIGTERM stops it cleanly: the live stream is closed first (its reader and
inference threads stop, every viewer's response ends), then the server, which waits for the
requests in progress.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from flask import Flask

__all__ = [
    "CHANNEL_TIMEOUT_S",
    "DEFAULT_THREADS",
    "RESERVED_THREADS",
    "make_waitress",
    "run_server",
    "viewer_limit",
]

log = logging.getLogger(__name__)

#: waitress' worker threads by default: 12 stream viewers + 4 for uploads and checks
DEFAULT_THREADS = 16
#: threads kept from /video_feed viewers for uploads, /api/stats, /health and /metrics
RESERVED_THREADS = 4
#: seconds a connection may stay silent with no request running before waitress closes it
#: (waitress' default is 120): long enough for a phone's upload to ride out a stall, short
#: enough that stalled senders do not pile up towards waitress' 100 connections
CHANNEL_TIMEOUT_S = 30


def viewer_limit(threads: int) -> int:
    """How many /video_feed viewers `threads` waitress threads admit; ValueError if none."""
    threads = int(threads)
    if threads <= RESERVED_THREADS:
        raise ValueError(
            f"--threads {threads} leaves no thread for /video_feed viewers: each viewer holds "
            f"one and {RESERVED_THREADS} are kept for uploads and checks; "
            f"use --threads {RESERVED_THREADS + 1} or more (default {DEFAULT_THREADS})"
        )
    return threads - RESERVED_THREADS


@contextmanager
def _stop_on_signals(on_stop: Callable[[], None]) -> Iterator[None]:
    """SIGINT and SIGTERM run `on_stop` then raise KeyboardInterrupt in the main thread (where
    waitress and werkzeug both stop serving on it); the old handlers come back after. Outside
    the main thread (a test) signals are left alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        signal.signal(signum, previous[signum])  # a second signal is not caught again
        on_stop()  # first: waitress waits for its threads, and each viewer holds one
        raise KeyboardInterrupt

    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def run_server(
    app: Flask,
    host: str = "127.0.0.1",
    port: int = 8000,
    threads: int = DEFAULT_THREADS,
    dev: bool = False,
    on_stop: Callable[[], None] = lambda: None,
) -> None:
    """Serve `app` until Ctrl-C / SIGTERM; `on_stop` (closing the live stream) runs first.

    `dev`: Flask's development server (werkzeug, a thread per request, no limit), for
    debugging only. Otherwise waitress with `threads` workers.
    """
    if int(threads) < 1:
        raise ValueError(f"--threads must be at least 1, got {threads}")
    with _stop_on_signals(on_stop):
        try:
            if dev:
                _run_werkzeug(app, host, int(port))
            else:
                _run_waitress(app, host, int(port), int(threads))
        except KeyboardInterrupt:
            pass
        finally:
            on_stop()
    log.info("stopped")


def make_waitress(
    app: Flask,
    host: str = "127.0.0.1",
    port: int = 8000,
    threads: int = DEFAULT_THREADS,
    channel_timeout: int = CHANNEL_TIMEOUT_S,
) -> Any:
    """The waitress server `run_server` runs (not yet serving: call its `run()`)."""
    from waitress import create_server

    max_body = app.config.get("MAX_CONTENT_LENGTH")
    return create_server(
        app,
        host=host,
        port=port,
        threads=threads,
        asyncore_use_poll=True,  # select() cannot watch more than 1024 sockets
        # keep reading a connection while its request runs, so a viewer that hangs up is
        # noticed at once (and its thread freed at the next frame), not after two writes
        channel_request_lookahead=1,
        channel_timeout=int(channel_timeout),
        cleanup_interval=max(1, int(channel_timeout) // 3),  # a stalled sender goes within 4/3
        max_request_body_size=2 * int(max_body) if max_body else 1 << 30,
        ident="defects",
    )


def _run_waitress(app: Flask, host: str, port: int, threads: int) -> None:
    server = make_waitress(app, host, port, threads)
    server.print_listen(f"waitress ({threads} threads) serving on http://{{}}:{{}}")
    try:
        server.run()  # returns after KeyboardInterrupt, having waited for the worker threads
    finally:
        server.close()


def _run_werkzeug(app: Flask, host: str, port: int) -> None:
    from werkzeug.serving import make_server

    server = make_server(host, port, app, threaded=True)
    log.warning(
        "Flask's development server (--dev) on http://%s:%d: not for production",
        host,
        server.server_port,
    )
    server.serve_forever()  # werkzeug's returns on KeyboardInterrupt and closes the socket
