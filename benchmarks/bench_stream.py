"""Live stream throughput: model alone vs the served stream with 1 and 4 viewers, and RSS.

    python benchmarks/bench_stream.py                                  # toy model, 60 s
    python benchmarks/bench_stream.py --seconds 20
    python benchmarks/bench_stream.py --model models/weld/bundle.pt --source line3.mp4

One run, the same frames throughout (`--source`, or a synthetic 640x480 video of a moving
bright square written to a temporary folder):

1. model only: `predictor.predict` over the source's frames (decoded into memory first) in
   a loop, for a tenth of `--seconds` before the stream starts and again after it stops (a
   load change on a shared machine shows as the two disagreeing; the ratio uses their mean);
2. the stream: `create_app(predictor, stream=...)` on 127.0.0.1 with the source played as
   fast as the model allows (`realtime=False`: every frame inferred, none dropped) and
   viewers in separate processes reading /video_feed, alternating rounds of 1 and 4 viewers
   over the rest of the time. Per round: published fps (end to end: read -> model ->
   overlay -> JPEG -> broadcaster), inferences/s, latency p50/p95 (capture -> published,
   over the round's frames) and what each viewer received.

Latency here is that of a file played flat out: while one frame is inferred the next one,
already decoded, waits in the slot, so it is about 2 x the model's time plus overlay and
JPEG. A camera slower than the model waits less (0 to 1 model time in the slot).

The server process's RSS is sampled every half second from the start; "flat after warm-up"
compares the first sample after the first stream round with the last one.
Without `--model` the toy detector of tests/test_stream.py stands in, given `--toy_ms` of
sleep per frame (a forward pass that releases the GIL, as torch does).
Targets: stream fps >= 0.9 x model-only; 4-viewer fps >= 0.9 x 1-viewer; RSS flat.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


# ---------------------------------------------------------------------------- viewer process
def viewer_main(url: str, seconds: float, results: Any) -> None:
    """One viewer: read /video_feed for `seconds`, report parts and bytes received."""
    import re

    import requests

    parts = received = 0
    start = time.monotonic()
    try:
        with requests.get(url, stream=True, timeout=30) as response:
            buffer = b""
            for chunk in response.iter_content(chunk_size=None):
                buffer += chunk
                received += len(chunk)
                while True:
                    head_end = buffer.find(b"\r\n\r\n")
                    if head_end < 0:
                        break
                    match = re.search(rb"Content-Length: (\d+)", buffer[:head_end])
                    if not match:
                        break
                    end = head_end + 4 + int(match.group(1)) + 2
                    if len(buffer) < end:
                        break
                    buffer = buffer[end:]
                    parts += 1
                if time.monotonic() - start >= seconds:
                    break
    finally:
        results.put({"parts": parts, "bytes": received, "seconds": time.monotonic() - start})


# ---------------------------------------------------------------------------- helpers
class RssSampler:
    """This process's resident memory every `period` s, in a background thread."""

    def __init__(self, period: float = 0.5):
        import psutil

        self.process = psutil.Process()
        self.period = period
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.t0 = time.monotonic()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic() - self.t0, self.process.memory_info().rss))
            self._stop.wait(self.period)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def first_after(self, t: float) -> tuple[float, int]:
        return next((s for s in self.samples if s[0] >= t), self.samples[-1])


def load_frames(source: str, limit: int) -> list[Any]:
    from defects.video.frames import iter_frames

    frames = []
    for _, frame in iter_frames(source):
        frames.append(frame)
        if len(frames) >= limit:
            break
    return frames


def model_only(predictor: Any, frames: list[Any], seconds: float) -> float:
    """Frames per second of predictor.predict alone, cycling over `frames` (one warm-up)."""
    predictor.predict(frames[0])
    count, start = 0, time.monotonic()
    while time.monotonic() - start < seconds or count == 0:
        predictor.predict(frames[count % len(frames)])
        count += 1
    return count / (time.monotonic() - start)


def stream_round(live: Any, url: str, viewers: int, seconds: float) -> dict[str, Any]:
    """`viewers` processes on /video_feed for `seconds`; the stream's figures meanwhile."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [
        ctx.Process(target=viewer_main, args=(url, seconds + 2.0, results)) for _ in range(viewers)
    ]
    for proc in procs:
        proc.start()
    deadline = time.monotonic() + 60
    while live.stats.viewers < viewers and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # every viewer past its first frame
    published0, inferred0, t0 = live.stats.published, live.stats.inferred, time.monotonic()
    time.sleep(seconds)
    published1, inferred1, t1 = live.stats.published, live.stats.inferred, time.monotonic()
    latency = live.snapshot()["latency_ms"]
    received = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(30)
    while live.stats.viewers > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    return {
        "viewers": viewers,
        "fps": (published1 - published0) / (t1 - t0),
        "inferences_per_s": (inferred1 - inferred0) / (t1 - t0),
        "latency_p50_ms": latency["p50"],
        "latency_p95_ms": latency["p95"],
        "viewer_fps": [r["parts"] / r["seconds"] for r in received],
    }


def synthetic_source(folder: Path, width: int, height: int, count: int) -> str:
    from tests.test_stream import write_square_video

    return str(write_square_video(folder / "synthetic.mp4", count, 25.0, width, height))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="bundle or ONNX export; default: the toy detector")
    parser.add_argument("--backend", default="eager")
    parser.add_argument("--source", help="video file; default: a synthetic one")
    parser.add_argument("--seconds", type=float, default=60.0, help="whole run (default 60)")
    parser.add_argument("--toy_ms", type=float, default=40.0, help="toy model cost per frame")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--frames", type=int, default=200, help="synthetic video length")
    parser.add_argument("--rounds", type=int, default=2, help="pairs of 1- and 4-viewer rounds")
    parser.add_argument("--json", help="write every figure to this file")
    args = parser.parse_args(argv)

    from werkzeug.serving import make_server

    from defects.serve import STREAM_EXTENSION, create_app
    from defects.stream import StreamConfig

    with tempfile.TemporaryDirectory() as tmp, RssSampler() as rss:
        if args.model:
            from defects.predict import load

            predictor = load(args.model, backend=args.backend)
            name = f"{args.model} ({args.backend})"
        else:
            from tests.test_stream import SquareDetector

            predictor = SquareDetector(delay_s=args.toy_ms / 1000.0)
            name = f"toy detector, {args.toy_ms:g} ms per frame"
        source = args.source or synthetic_source(Path(tmp), args.width, args.height, args.frames)
        frames = load_frames(source, 300)
        height, width = frames[0].shape[:2]
        model_s = max(2.0, args.seconds / 10)
        round_s = max(2.0, (args.seconds - 2 * model_s - 4.0) / (2 * args.rounds) - 1.5)
        print(f"model: {name}; source: {source} ({width}x{height}, {len(frames)} frames)")
        model_before = model_only(predictor, frames, model_s)
        print(f"model only (before the stream): {model_before:.1f} fps over {model_s:.0f} s")
        model_fps = model_before

        window = int(min(5000, max(30, model_fps * round_s * 0.8)))
        config = StreamConfig(source=source, loop=True, realtime=False, latency_window=window)
        app = create_app(predictor, stream=config)
        live = app.extensions[STREAM_EXTENSION]
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{server.server_port}/video_feed"
        rounds: list[dict[str, Any]] = []
        try:
            time.sleep(2.0)  # warm-up: the first frames, JIT of the model
            warm = time.monotonic() - rss.t0
            for _ in range(args.rounds):
                for viewers in (1, 4):
                    rounds.append(stream_round(live, url, viewers, round_s))
                    r = rounds[-1]
                    print(
                        f"  {viewers} viewer(s): {r['fps']:.1f} fps published, "
                        f"{r['inferences_per_s']:.1f} inferences/s, latency p50 "
                        f"{r['latency_p50_ms']} / p95 {r['latency_p95_ms']} ms, viewers got "
                        + ", ".join(f"{v:.1f}" for v in r["viewer_fps"])
                        + " fps"
                    )
            final = live.snapshot()
        finally:
            live.close()
            server.shutdown()
            server.server_close()
        model_after = model_only(predictor, frames, model_s)
        print(f"model only (after the stream): {model_after:.1f} fps over {model_s:.0f} s")
        model_fps = (model_before + model_after) / 2
    one = [r for r in rounds if r["viewers"] == 1]
    four = [r for r in rounds if r["viewers"] == 4]
    fps1 = statistics.median(r["fps"] for r in one)
    fps4 = statistics.median(r["fps"] for r in four)
    first_rss = rss.first_after(warm + round_s)  # after the first stream round
    last_rss = rss.samples[-1]
    peak = max(s[1] for s in rss.samples)
    mb = 1 / 2**20
    rows = [
        ("", "fps", "latency p50 ms", "latency p95 ms"),
        ("model only, before", f"{model_before:.1f}", "-", "-"),
        ("model only, after", f"{model_after:.1f}", "-", "-"),
        *(
            (
                f"stream, {v} viewer(s)",
                f"{statistics.median(r['fps'] for r in rs):.1f}",
                f"{statistics.median(r['latency_p50_ms'] for r in rs):.1f}",
                f"{statistics.median(r['latency_p95_ms'] for r in rs):.1f}",
            )
            for v, rs in ((1, one), (4, four))
        ),
    ]
    print()
    for row in rows:
        print(f"{row[0]:<22}{row[1]:>8}{row[2]:>17}{row[3]:>17}")
    print()
    print(
        f"stream 1 viewer / model only (mean of before and after): {fps1 / model_fps:.3f} "
        f"(target >= 0.9); model after / before: {model_after / model_before:.3f}"
    )
    print(f"stream 4 viewers / 1 viewer:  {fps4 / fps1:.3f} (target >= 0.9)")
    print(
        f"RSS: {first_rss[1] * mb:.1f} MB at {first_rss[0]:.0f} s (after warm-up) -> "
        f"{last_rss[1] * mb:.1f} MB at {last_rss[0]:.0f} s (peak {peak * mb:.1f} MB, "
        f"{len(rss.samples)} samples); change {(last_rss[1] - first_rss[1]) * mb:+.1f} MB"
    )
    print(f"frames: {final['frames']}; latency over the last {window} frames of a round")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "model": name,
                    "source": source,
                    "size": [width, height],
                    "model_fps": {"before": model_before, "after": model_after},
                    "rounds": rounds,
                    "rss": rss.samples,
                    "final": final,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
