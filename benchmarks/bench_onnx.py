"""Eager PyTorch vs ONNX Runtime, per task, through the product's predictor, on the same images.

    python benchmarks/bench_onnx.py --bundle models/weld/bundle.pt --bundle models/steel/bundle.pt

Each bundle is loaded twice with `defects.load` (eager, and `backend="onnx"`, which exports
to a temporary folder), both predictors run the same in-memory synthetic images of the
bundle's task (weld radiographs 384x256, steel strips 1600x256) at batch 1, and the figures
are printed side by side: images/s and the ONNX/eager ratio (target >= 1.5), plus the
largest disagreement between the two on those images. Without `--bundle` an untrained
bundle of each task's default network is built from the configs (speed does not depend on
the weights; the steel gate threshold is set to 0 so every strip is segmented).
Timing covers array -> tensor -> network -> thresholds -> results, not PNG decoding.

Fairness: both backends get `--threads` threads, a warm-up pass and the same images; eager
runs under `torch.inference_mode` (the predictor's own). Eager and ONNX passes alternate and
the ratio is the median of per-pair ratios, so a load change on a shared machine hits both
alike. ONNX Runtime's workers sleep when idle (`OnnxDetector` turns spinning off), so torch's
OpenMP workers are told to as well (OMP_WAIT_POLICY=PASSIVE unless set): spinning workers on
a busy 2-core machine made eager at 2 threads ~10x slower, a figure about the load, not the
backend.

`--isolated`: a service runs one backend per process, so in-process figures understate
whichever backend loses the cores to the other's idle workers. With this flag each backend
runs in a worker process of its own with the libraries' own defaults (torch's OpenMP wait
policy, unless OMP_WAIT_POLICY is set by the caller; the predictor's ONNX Runtime session
options), and the parent still alternates their passes in pairs, one process busy at a time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# Read once, when torch loads its OpenMP runtime: must precede `import torch`. An isolated
# worker keeps what its parent was started with (see --isolated).
CALLER_WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY")
if not os.environ.get("BENCH_ONNX_WORKER"):
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import defects  # noqa: E402
from defects.bundle import load_bundle, save_bundle  # noqa: E402
from defects.data.synthetic import render_steel_strip, render_weld_radiograph  # noqa: E402
from defects.parity import max_differences  # noqa: E402


def images_for(task: str, count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    if task == "steel":
        return [render_steel_strip(rng, 1600, 256, [3] if k % 2 else [])[0] for k in range(count)]
    return [render_weld_radiograph(rng, 384, 256, ["crack"])[0] for _ in range(count)]


def untrained_bundle(task: str, folder: Path) -> Path:
    """A bundle of the task's default network, built from the shipped configs."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from defects.kinds import kind_of

    with initialize_config_dir(str(REPO / "defects" / "configs"), version_base="1.3"):
        cfg = compose("config", [f"task={task}", "logger=none"])
    torch.manual_seed(0)
    module = instantiate(cfg.model, _convert_="all")
    bundle = kind_of(module).bundle(module, cfg)
    if task == "steel":
        bundle["thresholds"] = {"gate": 0.0, "pixel": 0.5, "min_area": 0}
    return save_bundle(folder / f"{task}.pt", task=task, **bundle)


def time_pair(eager, onnx, images: list[np.ndarray], repeats: int) -> tuple[float, float, float]:
    """Median images/s of each backend and median ONNX/eager ratio over `repeats` pairs of
    passes, after one warm-up pass of each (see `interleaved`)."""
    for predictor in (eager, onnx):
        for image in images:
            predictor.predict(image)
    backends = {"eager": eager, "onnx": onnx}
    return interleaved(
        {name: (lambda p=p: time_pass(p, images)) for name, p in backends.items()}, repeats
    )


def interleaved(passes: dict[str, Callable[[], float]], repeats: int) -> tuple[float, ...]:
    """Run `repeats` pairs of timed passes (each returns images/s): median rate of eager and
    ONNX and median per-pair ratio. The order within a pair alternates so that neither
    backend is always the one timed second (a load that builds up or fades across a pair
    would otherwise favour one side every time)."""
    rates: dict[str, list[float]] = {"eager": [], "onnx": []}
    for repeat in range(repeats):
        order = ["eager", "onnx"] if repeat % 2 == 0 else ["onnx", "eager"]
        for name in order:
            rates[name].append(passes[name]())
    ratios = [o / e for o, e in zip(rates["onnx"], rates["eager"], strict=True)]
    median = statistics.median
    return median(rates["eager"]), median(rates["onnx"]), median(ratios)


def time_pass(predictor, images: list[np.ndarray]) -> float:
    start = time.perf_counter()
    for image in images:
        predictor.predict(image)
    return len(images) / (time.perf_counter() - start)


def load_backend(path: str, backend: str, threads: int):
    if backend == "onnx":
        return defects.load(path, backend="onnx", threads=threads)
    return defects.load(path)


def serve_worker(path: str, backend: str, threads: int, count: int) -> None:
    """--worker: load one backend, then time one pass per line read from stdin."""
    torch.set_num_threads(threads)
    predictor = load_backend(path, backend, threads)
    images = images_for(load_bundle(path)["task"], count, seed=11)
    time_pass(predictor, images)  # warm-up
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "pass":
            break
        print(f"{time_pass(predictor, images):.6f}", flush=True)


class Worker:
    """A benchmark worker process holding one backend (see --isolated)."""

    def __init__(self, path: str, backend: str, threads: int, count: int):
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        if CALLER_WAIT_POLICY is not None:
            env["OMP_WAIT_POLICY"] = CALLER_WAIT_POLICY
        env["BENCH_ONNX_WORKER"] = "1"
        command = [sys.executable, __file__, "--worker", backend, "--bundle", path]
        command += ["--threads", str(threads), "--count", str(count)]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"benchmark worker for {backend} on {path} did not start")

    def predict_pass(self) -> float:
        self.process.stdin.write("pass\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def time_isolated(path: str, threads: int, count: int, repeats: int) -> tuple[float, ...]:
    """Like `time_pair`, each backend in its own process (both warm before the first pair)."""
    workers = {b: Worker(path, b, threads, count) for b in ("eager", "onnx")}
    try:
        return interleaved({name: w.predict_pass for name, w in workers.items()}, repeats)
    finally:
        for worker in workers.values():
            worker.close()


def disagreement(task: str, eager, onnx, images: list[np.ndarray]) -> str:
    if task == "steel":
        differing = sum(
            int((a.masks != b.masks).sum())
            for a, b in zip(eager.predict_batch(images), onnx.predict_batch(images), strict=True)
        )
        return f"{differing} mask pixels differ"
    box = score = 0.0
    for image in images:
        a, b = eager.detect_all([image])[0], onnx.detect_all([image])[0]
        if len(a) != len(b):
            return f"detection counts differ ({len(a)} vs {len(b)})"
        pair_box, pair_score = max_differences(a, b)  # paired one to one: NMS order is free
        box, score = max(box, pair_box), max(score, pair_score)
    return f"max |box| {box:.2e} px, |score| {score:.2e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", action="append", default=[], help="trained bundle(s)")
    parser.add_argument("--count", type=int, default=20, help="images per task")
    parser.add_argument("--repeats", type=int, default=5, help="pairs of timed passes")
    parser.add_argument(
        "--task", action="append", choices=("weld", "steel"), help="untrained bundle(s) to time"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--isolated", action="store_true", help="each backend in its own process, own defaults"
    )
    parser.add_argument("--worker", choices=("eager", "onnx"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        serve_worker(args.bundle[0], args.worker, args.threads, args.count)
        return
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tasks = args.task or ["weld", "steel"]
        bundles = args.bundle or [str(untrained_bundle(t, Path(tmp))) for t in tasks]
        policy = (
            f"one process per backend, OMP_WAIT_POLICY={CALLER_WAIT_POLICY or 'unset'}"
            if args.isolated
            else f"one process, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}"
        )
        print(
            f"{args.count} images per task, batch 1, {args.threads} threads, "
            f"torch {torch.__version__}, {policy}, "
            f"medians of {args.repeats} interleaved pairs of passes"
        )
        print("| task | kind | eager img/s | ONNX img/s | ONNX / eager | agreement |")
        print("|---|---|---|---|---|---|")
        for path in bundles:
            task = load_bundle(path)["task"]
            eager = defects.load(path)
            onnx = defects.load(path, backend="onnx", threads=args.threads)
            images = images_for(task, args.count, seed=11)
            if args.isolated:
                timed = time_isolated(path, args.threads, args.count, args.repeats)
            else:
                timed = time_pair(eager, onnx, images, args.repeats)
            rate_eager, rate_onnx, ratio = timed
            print(
                f"| {task} | {eager.kind} | {rate_eager:.1f} | {rate_onnx:.1f} | "
                f"{ratio:.2f} | {disagreement(task, eager, onnx, images)} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
